"""Where classification samples come from: an ImageFolder tree, a CSV of paths and labels, a
torchvision data set, or synthetic shapes.

A source is chosen in YAML by `class_path` (`source: {class_path: vision_lightning.data.ImageFolder,
init_args: {root: data/cats_dogs}}`) and checks its own arguments when built. It knows its class
names right after construction (`classes`), so the CLI can link them into the model, and it builds
the splits (`splits`): `{"train": (samples, indices), "val": ..., "test": ...}`. A source without
its own validation set leaves "val" out and the data module splits "train" (`val_split`,
`split_seed`); every "train" sample source has `targets` for that stratified split.

What the data module decides for every source (label mode, channels, image size, class list) is
passed to these methods, never stored in the source.
"""

from __future__ import annotations

import csv
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from vision_lightning.data import labels
from vision_lightning.data.base import Split
from vision_lightning.data.datasets import FileSource, SampleSource, SyntheticSource
from vision_lightning.data.synthetic import ShapeImages
from vision_lightning.data.torchvision_datasets import (
    TorchvisionSource,
    open_torchvision_dataset,
    torchvision_spec,
)
from vision_lightning.utils.errors import InputError, MissingInputError
from vision_lightning.utils.images import image_files

log = logging.getLogger(__name__)

LabelMode = Literal["multiclass", "binary", "multilabel", "soft"]
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


class ClassificationSource(ABC):
    """Base of the classification data sources (see the module docstring).

    Subclasses keep their constructor arguments in `self.init_args` (how checkpoints and
    `repr` describe them) and implement `classes` and `splits`.
    """

    #: the label modes the source can give targets for (one class per sample unless it says more)
    label_modes: ClassVar[tuple[str, ...]] = ("multiclass", "binary")
    init_args: dict[str, Any]

    @abstractmethod
    def classes(self, label_mode: LabelMode) -> list[str]:
        """The class names, in class-id order (cheap: called when the data module is built)."""

    @abstractmethod
    def splits(
        self, class_names: list[str], label_mode: LabelMode, channels: int, image_size: int
    ) -> dict[str, Split]:
        """`{"train": (samples, indices), "val"?: ..., "test"?: ...}` for these classes, label mode and
        channels (`image_size`: the size generated samples are drawn at)."""

    def prepare(self) -> None:
        """Download what `splits` will read (called once per machine, before `splits`); most
        sources read what is already there."""
        return None

    def __repr__(self) -> str:
        arguments = ", ".join(f"{key}={value!r}" for key, value in self.init_args.items())
        return f"{type(self).__name__}({arguments})"


def whole(source: SampleSource) -> Split:
    """A split made of every sample of `source`."""
    return source, list(range(len(source)))


def _class_list(class_names: Sequence[str] | None) -> list[str] | None:
    if class_names is None:
        return None
    names = [str(name) for name in class_names]
    if not names or len(set(names)) != len(names):
        raise InputError(f"class_names must list distinct names, got {names}")
    return names


# ----------------------------------------------------------------------------- synthetic shapes
class SyntheticShapes(ClassificationSource):
    """Coloured shapes on noise, the class being the shape: no download, any machine.

    Args:
        samples: training + validation images; the test set has a quarter as many.
        num_classes: kinds of shapes, 2 to 10 (default: 4, or 2 for `label_mode: binary`).
        seed: the images drawn (the test set uses `seed + 1`).
    """

    def __init__(self, samples: int = 1000, num_classes: int | None = None, seed: int = 42) -> None:
        if samples < 2:
            raise InputError(f"SyntheticShapes needs samples >= 2 (to split off validation), got {samples}")
        if num_classes is not None:
            ShapeImages(1, 8, num_classes)  # 2 to 10 kinds of shapes, said in one sentence
        self.samples, self.num_classes, self.seed = samples, num_classes, seed
        self.init_args = {"samples": samples, "num_classes": num_classes, "seed": seed}

    def classes(self, label_mode: LabelMode) -> list[str]:
        count = self.num_classes if self.num_classes is not None else 2 if label_mode == "binary" else 4
        return ShapeImages(1, 8, count).class_names

    def splits(
        self, class_names: list[str], label_mode: LabelMode, channels: int, image_size: int
    ) -> dict[str, Split]:
        count = len(class_names)
        train = ShapeImages(self.samples, image_size, count, channels, seed=self.seed)
        test = ShapeImages(max(self.samples // 4, 1), image_size, count, channels, seed=self.seed + 1)
        return {
            "train": whole(SyntheticSource(train)),
            "test": whole(SyntheticSource(test, "synthetic_test")),
        }


# ----------------------------------------------------------------------------- ImageFolder
def _find_split_folder(root: Path, split: str) -> Path | None:
    return next((root / name for name in SPLIT_FOLDERS[split] if (root / name).is_dir()), None)


def _scan_image_folder(
    folder: Path, class_names: list[str] | None
) -> tuple[list[Path], list[int], list[str]]:
    """Paths and class ids of `folder/<class>/*`; the class list comes from the folder when not given.

    Links are followed, each real file is read once (`list_images`), and a file reached from two
    class folders (`root/b` linking to `root/a`, or a link inside `a` to `b` or to the root) is an
    error naming both paths: it would be a class holding another class's images.
    """
    if not folder.is_dir():
        raise MissingInputError(f"image folder {folder} does not exist")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if class_names is None:
        class_names = found
    unknown = sorted(set(found) - set(class_names))
    if unknown:
        raise InputError(
            f"{folder} has class folder(s) {unknown} that the training classes {class_names} lack"
        )
    if not class_names:
        raise InputError(
            f"image folder {folder} has no class sub-folders (expected {folder}/<class>/<image>)"
        )
    paths, labels, owner = [], [], {}  # owner: real file -> (class, the path it was listed under)
    for label, name in enumerate(class_names):
        images = image_files(folder / name) if (folder / name).is_dir() else []
        if not images:
            log.warning("Class folder %s has no images", folder / name)
        for shown, real in images:
            other, other_path = owner.setdefault(real, (name, shown))
            if other != name:
                raise InputError(
                    f"{other_path} (class {other}) and {shown} (class {name}) are the same file, reached "
                    "through a link: an image belongs to one class; remove the link or the copy"
                )
            paths.append(shown)
            labels.append(label)
    if not paths:
        raise InputError(f"image folder {folder} has no images in its class folders")
    return paths, labels, class_names


class ImageFolder(ClassificationSource):
    """An ImageFolder tree: `root/<class>/<image>`, or `root/train/<class>/<image>` with optional
    `val/` (or `valid/`, `validation/`) and `test/` beside it.

    Args:
        root: the tree's root folder.
        class_names: fix the classes and their ids (default: the training folder's sub-folders,
            sorted); a class without a folder is allowed, a folder without a class is an error.
        test_root: a `<class>/<image>` folder elsewhere for the test split, in place of `root/test`
            (the full CIFAR-10 training set tested on `cifar10-small/test`).
    """

    def __init__(self, root: str, class_names: list[str] | None = None, test_root: str | None = None) -> None:
        if not root:
            raise InputError(
                "ImageFolder needs root: the folder of <class>/<image> (or train/<class>/<image>)"
            )
        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingInputError(f"image folder {self.root} does not exist")
        self.test_root = Path(test_root) if test_root else None
        if self.test_root is not None and not self.test_root.is_dir():
            raise MissingInputError(f"ImageFolder test_root {self.test_root} does not exist")
        self.class_names = _class_list(class_names)
        self.init_args = {"root": str(root), "class_names": self.class_names}
        if test_root:
            self.init_args["test_root"] = str(test_root)
        self._classes: list[str] | None = None

    def classes(self, label_mode: LabelMode) -> list[str]:
        if self._classes is None:
            self._classes = _scan_image_folder(self._folder("train"), self.class_names)[2]
        return self._classes

    def _folder(self, split: str) -> Path | None:
        if split == "test" and self.test_root is not None:
            return self.test_root
        found = _find_split_folder(self.root, split)
        return found if found is not None or split != "train" else self.root

    def splits(
        self, class_names: list[str], label_mode: LabelMode, channels: int, image_size: int
    ) -> dict[str, Split]:
        owners: dict[str, tuple[str, Path]] = {}  # real file -> (split, path) where first seen
        shared: dict[tuple[str, str], list[str]] = {}

        def folder(split: str, directory: Path) -> FileSource:
            paths, labels, _ = _scan_image_folder(directory, class_names)
            for path in paths:
                first, first_path = owners.setdefault(os.path.realpath(path), (split, path))
                if first != split:
                    shared.setdefault((first, split), []).append(f"{first_path} = {path}")
            return FileSource(paths, labels, channels)

        splits = {"train": whole(folder("train", self._folder("train")))}
        for split in ("val", "test"):
            directory = self._folder(split)
            if directory is not None:
                splits[split] = whole(folder(split, directory))
        for (first, second), pairs in shared.items():
            log.warning(
                "%d image(s) of the %s set are in the %s set too (through a link or a copy of the folder): %s",
                len(pairs), first, second, "; ".join(pairs[:5]),
            )  # fmt: skip
        return splits


# ----------------------------------------------------------------------------- CSV
class CsvLabels(ClassificationSource):
    """A CSV of image paths and labels: one label column (class names or ids), or one column per
    class holding 0/1 (`label_mode: multilabel`) or probabilities (`label_mode: soft`).

    Args:
        csv_path: the training CSV.
        test_csv: an optional test CSV with the same columns (but no fold column).
        path_column / path_format: the image is `root / path_format.format(row[path_column])`
            (`"{}.jpg"` when the CSV holds bare ids).
        label_columns: one column, or several (one per class: multilabel or soft labels).
        fold_column / fold: rows whose fold equals `fold` validate, the rest train (seed 000's
            k-fold CSVs; see `vision_lightning.data.splits.write_folds`); without a fold column the
            data module splits off `val_split` of the rows.
        root: the folder image paths are relative to (default: the CSV's folder).
        class_names: the names of ids 0, 1, ... or the order of named labels (default: the ids
            found, or the sorted names; for one column per class, the column names).
        num_classes: how many classes integer ids have (default: the largest id + 1, or 2 for
            `label_mode: binary`).
    """

    label_modes = ("multiclass", "binary", "multilabel", "soft")

    def __init__(
        self,
        csv_path: str,
        test_csv: str | None = None,
        path_column: str = "image",
        path_format: str = "{}",
        label_columns: str | list[str] = "label",
        fold_column: str | None = None,
        fold: int = 0,
        root: str | None = None,
        class_names: list[str] | None = None,
        num_classes: int | None = None,
    ) -> None:
        if not csv_path:
            raise InputError("CsvLabels needs csv_path: a CSV file of image paths and labels")
        columns = [label_columns] if isinstance(label_columns, str) else list(label_columns)
        if not columns:
            raise InputError("CsvLabels needs at least one label column in label_columns")
        if "{}" not in path_format:
            raise InputError(
                f"path_format must hold {{}} where the {path_column!r} value goes, got {path_format!r}"
            )
        if fold_column is None and fold != 0:
            raise InputError(f"fold {fold} needs fold_column: the CSV column that numbers each row's fold")
        self.class_names = _class_list(class_names)
        if self.class_names is not None and num_classes is not None and len(self.class_names) != num_classes:
            raise InputError(
                f"class_names has {len(self.class_names)} names but num_classes is {num_classes}"
            )
        self.csv_path, self.test_csv = Path(csv_path), Path(test_csv) if test_csv else None
        self.path_column, self.path_format, self.label_columns = path_column, path_format, columns
        self.fold_column, self.fold = fold_column, fold
        self.root = Path(root) if root else None
        self.num_classes = num_classes
        self.init_args = {
            "csv_path": str(csv_path), "test_csv": test_csv, "path_column": path_column,
            "path_format": path_format, "label_columns": label_columns, "fold_column": fold_column,
            "fold": fold, "root": root, "class_names": self.class_names, "num_classes": num_classes,
        }  # fmt: skip
        self._lines: dict[Path, list[int]] = {}
        self._rows = {self.csv_path: self._read(self.csv_path, training=True)}
        if self.test_csv is not None:
            self._rows[self.test_csv] = self._read(self.test_csv, training=False)

    def _read(self, path: Path, training: bool) -> list[dict[str, str]]:
        if not path.is_file():
            raise MissingInputError(f"CSV file {path} does not exist")
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            rows, lines = [], []
            for row in reader:
                rows.append(row)
                lines.append(reader.line_num)  # as an editor counts, the header being line 1
            columns = reader.fieldnames or []
        # Only the training CSV carries folds; a test CSV has no fold column.
        fold = [self.fold_column] if self.fold_column and training else []
        for column in [self.path_column, *self.label_columns, *fold]:
            if column not in columns:
                raise InputError(f"{path} has no column {column!r} (columns: {', '.join(columns)})")
        if not rows:
            raise InputError(f"CSV file {path} has no rows")
        self._lines[path] = lines
        return rows

    def _cells(self, path: Path, column: str) -> list[labels.Cell]:
        """The cells of `column` in CSV `path`, each with its line (a short row's missing cell is empty)."""
        return [
            labels.Cell(path, line, column, row.get(column) or "")
            for line, row in zip(self._lines[path], self._rows[path])
        ]

    def classes(self, label_mode: LabelMode) -> list[str]:
        if label_mode in ("multilabel", "soft"):
            if len(self.label_columns) < 2:
                raise InputError(f"label_mode {label_mode} needs several label_columns (one per class)")
            return self.class_names or list(self.label_columns)
        if len(self.label_columns) != 1:
            raise InputError(
                f"label_mode {label_mode} reads one label column, got {self.label_columns}: "
                "use label_mode soft or multilabel for one column per class"
            )
        cells = self._cells(self.csv_path, self.label_columns[0])
        labels.require_present(cells)
        if self.class_names is not None:
            return self.class_names
        ids = labels.id_column(cells)
        if ids is not None:
            if self.num_classes is not None and max(ids) >= self.num_classes:
                cell = cells[ids.index(max(ids))]
                raise InputError(
                    f"{cell.where} holds class id {cell.value}, but num_classes is {self.num_classes} "
                    f"(ids 0..{self.num_classes - 1}): raise num_classes or fix the label"
                )
            default = 2 if label_mode == "binary" else max(ids) + 1
            return [str(i) for i in range(self.num_classes if self.num_classes is not None else default)]
        names = sorted({cell.value for cell in cells})
        if self.num_classes is not None and len(names) != self.num_classes:
            raise InputError(
                f"{self.csv_path} column {self.label_columns[0]!r} has {len(names)} distinct labels but "
                f"num_classes is {self.num_classes}: list the classes in class_names"
            )
        return names

    def splits(
        self, class_names: list[str], label_mode: LabelMode, channels: int, image_size: int
    ) -> dict[str, Split]:
        train = self._samples(self.csv_path, class_names, label_mode, channels)
        if self.fold_column:
            folds = [self._fold(cell) for cell in self._cells(self.csv_path, self.fold_column)]
            val = [i for i, f in enumerate(folds) if f == self.fold]
            if not val:
                found = sorted({f for f in folds if f is not None})
                raise InputError(
                    f"{self.csv_path} column {self.fold_column!r} has no fold {self.fold} (folds: {found})"
                )
            splits = {
                "train": (train, [i for i, f in enumerate(folds) if f != self.fold]),
                "val": (train, val),
            }
        else:
            splits = {"train": whole(train)}
        if self.test_csv is not None:
            splits["test"] = whole(self._samples(self.test_csv, class_names, label_mode, channels))
        return splits

    @staticmethod
    def _fold(cell: labels.Cell) -> int:
        fold = labels.class_id(cell.value)  # a whole number of 0 or more, as fold numbers are
        if fold is None:
            raise InputError(f"{cell.where} holds {cell.value!r}: folds are whole numbers of 0 or more")
        return fold

    def _samples(
        self, path: Path, class_names: list[str], label_mode: LabelMode, channels: int
    ) -> FileSource:
        rows = self._rows[path]
        image_root = self.root or path.parent
        paths = [image_root / self.path_format.format(row[self.path_column]) for row in rows]
        targets = self._targets(path, class_names, label_mode)
        self._check_once(path, paths, targets)
        return FileSource(paths, targets, channels)

    def _check_once(self, path: Path, paths: list[Path], targets: list[Any]) -> None:
        """Each image is listed once: on two lines with different labels it is an error naming both
        lines; the same row twice is named in a warning (it is read, and weighs, twice)."""
        first: dict[Path, int] = {}
        repeated = []
        for position, image in enumerate(paths):
            seen = first.setdefault(image, position)
            if seen == position:
                continue
            line, earlier = self._lines[path][position], self._lines[path][seen]
            if not np.array_equal(targets[seen], targets[position]):
                raise InputError(
                    f"{path} lists {image} on line {earlier} and again on line {line} with another label: "
                    "an image belongs to one class"
                )
            repeated.append(f"{image} (lines {earlier} and {line})")
        if repeated:
            log.warning(
                "%s lists %d image(s) more than once: %s", path, len(repeated), "; ".join(repeated[:10])
            )

    def _targets(self, path: Path, class_names: list[str], label_mode: LabelMode) -> list[Any]:
        """The target of each row of CSV `path`, every cell checked (see vision_lightning.data.labels)."""
        if label_mode in ("multilabel", "soft"):
            columns = [self._cells(path, column) for column in self.label_columns]
            targets = []
            for row in zip(*columns):
                vector = np.array([labels.target_value(cell, label_mode) for cell in row], dtype=np.float32)
                if label_mode == "soft" and not vector.any():
                    raise InputError(
                        f"{path} line {row[0].line}: every soft label is 0; a row needs a probability above 0"
                    )
                targets.append(vector)
            return targets
        cells = self._cells(path, self.label_columns[0])
        labels.require_present(cells)
        count, index = len(class_names), {name: i for i, name in enumerate(class_names)}
        targets = []
        for cell in cells:
            label = index.get(cell.value, labels.class_id(cell.value))
            if label is None or label >= count:
                given = "given" if self.class_names is not None or self.num_classes is not None else "found"
                raise InputError(
                    f"{cell.where} holds {cell.value!r}, which is not one of the {count} classes {given} "
                    f"(ids 0..{count - 1} or names {class_names[:5]}{'...' if count > 5 else ''})"
                )
            targets.append(label)
        return targets


# ----------------------------------------------------------------------------- torchvision
class TorchvisionDataset(ClassificationSource):
    """A torchvision classification data set by name: MNIST, FashionMNIST, CIFAR10, CIFAR100,
    OxfordIIITPet or Flowers102, with its own train / (val) / test splits.

    Args:
        name: the data set's torchvision class name.
        root: where it lives or is downloaded to (default: `data/<name>`).
        download: download it (once, in `prepare_data`) when it is not there.
    """

    def __init__(self, name: str, root: str | None = None, download: bool = False) -> None:
        self.spec = torchvision_spec(name)  # an unknown name lists the known ones
        self.name, self.download = name, download
        self.root = Path(root) if root else Path("data") / name
        self.init_args = {"name": name, "root": root, "download": download}

    def classes(self, label_mode: LabelMode) -> list[str]:
        return list(self.spec.classes)

    def prepare(self) -> None:
        if self.download:
            for split in self.spec.splits:
                open_torchvision_dataset(self.name, self.root, split, download=True)

    def splits(
        self, class_names: list[str], label_mode: LabelMode, channels: int, image_size: int
    ) -> dict[str, Split]:
        def split(name: str) -> Split:
            dataset = open_torchvision_dataset(self.name, self.root, name, download=False)
            return whole(TorchvisionSource(dataset, self.name, name, channels))

        splits = {"train": split(self.spec.splits[0])}
        if "val" in self.spec.splits:
            splits["val"] = split("val")
        splits["test"] = split(self.spec.splits[-1])
        return splits
