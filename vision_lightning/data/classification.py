"""ImageClassificationDataModule: ImageFolder trees, CSV files, torchvision data sets or synthetic shapes.

Batches are `{"image": float CHW tensor, "label": target, "path": str}`. Targets depend on
`label_mode`: a class id for `multiclass` and `binary`, a float vector for `multilabel` (0/1 per
class) and `soft` (a probability or one-hot row per sample, seed 000's plant pathology).
Class names are known right after construction, so the CLI links them into the model.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import numpy as np

from vision_lightning.data.base import VisionDataModule
from vision_lightning.data.datasets import (
    FileSource,
    SampleSource,
    SyntheticSource,
    TransformedDataset,
)
from vision_lightning.data.splits import stratified_split
from vision_lightning.data.synthetic import SyntheticShapes
from vision_lightning.data.torchvision_datasets import (
    TorchvisionSource,
    open_torchvision_dataset,
    torchvision_spec,
)
from vision_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform
from vision_lightning.utils.errors import InputError, MissingInputError
from vision_lightning.utils.images import drop_bad_images, list_images, readable_images

log = logging.getLogger(__name__)

LabelMode = Literal["multiclass", "binary", "multilabel", "soft"]
Source = Literal["synthetic", "folder", "csv", "torchvision"]
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


def _find_split_folder(root: Path, split: str) -> Path | None:
    return next((root / name for name in SPLIT_FOLDERS[split] if (root / name).is_dir()), None)


def _scan_image_folder(
    folder: Path, class_names: list[str] | None
) -> tuple[list[Path], list[int], list[str]]:
    """Paths and class ids of `folder/<class>/*`; the class list comes from the folder when not given."""
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
    paths, labels = [], []
    for label, name in enumerate(class_names):
        images = list_images(folder / name) if (folder / name).is_dir() else []
        if not images:
            log.warning("Class folder %s has no images", folder / name)
        paths += images
        labels += [label] * len(images)
    if not paths:
        raise InputError(f"image folder {folder} has no images in its class folders")
    return paths, labels, class_names


def _whole(source: SampleSource) -> tuple[SampleSource, list[int]]:
    """A split made of every sample of `source`."""
    return source, list(range(len(source)))


def _int_or_none(value: str) -> int | None:
    try:
        return int(float(value)) if float(value).is_integer() else None
    except ValueError:
        return None


class ImageClassificationDataModule(VisionDataModule):
    """Classification data from one of four sources.

    Args:
        source: `synthetic` shapes, an ImageFolder tree (`folder`), a `csv` of paths and labels, or
            a `torchvision` data set by name.
        root: the ImageFolder root (with `train/`, optional `val/` and `test/`, or class folders
            directly); for `csv` the folder that image paths are relative to (default: the CSV's
            folder); for `torchvision` where the data set lives or is downloaded to.
        csv_path / test_csv: CSV with a path column and one or several label columns.
        path_column / path_format: the image path is `root / path_format.format(row[path_column])`
            (`"{}.jpg"` when the CSV holds bare ids).
        label_columns: one column (class names or ids) or several (multilabel / soft labels).
        fold_column / fold: rows whose fold equals `fold` validate, the rest train (seed 000's
            k-fold CSVs; see `vision_lightning.data.splits.write_folds`).
        dataset / download: torchvision data set name (MNIST, FashionMNIST, CIFAR10, CIFAR100,
            OxfordIIITPet, Flowers102) and whether to download it.
        class_names / num_classes: fix the class list (otherwise read from the data).
        val_split / split_seed: seeded stratified validation split when no validation set is given.
        predict_root: folder of images for `predict` (default: the test set, else validation).
        predict_splits: predict these splits instead (`[train, val]`), one loader each with
            evaluation transforms and labels: features for a whole data set (FeatureExtractModule).
        bad_images: corrupt or truncated files are found before training and `skip`ped with a
            warning naming each, or stop the run (`error`); `off` does not check.
        cache_images: decode every image once into memory (small data sets: decoding then
            stops dominating an epoch).
        channels: 3 converts grayscale files to RGB, 1 converts to grayscale.
        resize: eval images are resized so the shorter side is `resize`, then centre-cropped to
            `image_size` (the ImageNet recipe 256 -> 224); without it images are resized to `image_size`.
        augmentations: albumentations transforms for training, after resizing.
    """

    def __init__(
        self,
        source: Source = "synthetic",
        root: str | None = None,
        csv_path: str | None = None,
        test_csv: str | None = None,
        path_column: str = "image",
        path_format: str = "{}",
        label_columns: str | list[str] = "label",
        fold_column: str | None = None,
        fold: int = 0,
        dataset: str | None = None,
        download: bool = False,
        label_mode: LabelMode = "multiclass",
        class_names: list[str] | None = None,
        num_classes: int | None = None,
        val_split: float = 0.2,
        split_seed: int = 42,
        predict_root: str | None = None,
        bad_images: Literal["skip", "error", "off"] = "skip",
        cache_images: bool = False,
        synthetic_samples: int = 1000,
        channels: int = 3,
        image_size: int = 224,
        resize: int | None = None,
        augmentations: list[A.BasicTransform | A.BaseCompose] | None = None,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        predict_splits: list[str] | None = None,
    ) -> None:
        super().__init__(
            image_size, batch_size, num_workers, pin_memory, persistent_workers, mean, std, predict_splits
        )
        if channels not in (1, 3):
            raise InputError(f"channels must be 1 or 3, got {channels}")
        if label_mode not in ("multiclass", "binary", "multilabel", "soft"):
            raise InputError(f"label_mode must be multiclass, binary, multilabel or soft, got {label_mode!r}")
        self.source = source
        self.root = Path(root) if root else None
        self.csv_path = Path(csv_path) if csv_path else None
        self.test_csv = Path(test_csv) if test_csv else None
        self.path_column, self.path_format = path_column, path_format
        self.label_columns = [label_columns] if isinstance(label_columns, str) else list(label_columns)
        self.fold_column, self.fold = fold_column, fold
        self.dataset, self.download = dataset, download
        self.label_mode = label_mode
        self.val_split, self.split_seed = val_split, split_seed
        self.predict_root = Path(predict_root) if predict_root else None
        self.bad_images = bad_images
        self.cache_images = cache_images
        self.synthetic_samples = synthetic_samples
        self.channels = channels
        self.resize = resize
        self.augmentations = augmentations
        self._sources: dict[str, tuple[SampleSource, list[int]]] = {}
        self._csv_rows: dict[Path, list[dict[str, str]]] = {}
        self.class_names = self._discover_classes(class_names, num_classes)
        if label_mode == "binary" and len(self.class_names) != 2:
            raise InputError(f"label_mode binary needs 2 classes, the data has {len(self.class_names)}")

    # ----------------------------------------------------------------- classes
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _discover_classes(self, class_names: list[str] | None, num_classes: int | None) -> list[str]:
        if class_names is not None and num_classes is not None and len(class_names) != num_classes:
            raise InputError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
        if self.source == "synthetic":
            default = len(class_names) if class_names else 2 if self.label_mode == "binary" else 4
            n = num_classes if num_classes is not None else default  # 0 is an error, not "unset"
            return class_names or SyntheticShapes(1, 8, n).class_names
        if self.source == "torchvision":
            if not self.dataset:
                raise InputError("source torchvision needs dataset: <name> (e.g. CIFAR10)")
            return class_names or list(torchvision_spec(self.dataset).classes)
        if self.source == "folder":
            if self.root is None:
                raise InputError("source folder needs root: <ImageFolder root>")
            if not self.root.is_dir():
                raise MissingInputError(f"image folder {self.root} does not exist")
            train_dir = _find_split_folder(self.root, "train") or self.root
            return _scan_image_folder(train_dir, class_names)[2]
        if self.source == "csv":
            if self.csv_path is None:
                raise InputError("source csv needs csv_path: <file.csv>")
            return self._classes_from_csv(self.csv_path, class_names, num_classes)
        raise InputError(f"source must be synthetic, folder, csv or torchvision, got {self.source!r}")

    def _read_csv(self, path: Path) -> list[dict[str, str]]:
        if path not in self._csv_rows:
            if not path.is_file():
                raise MissingInputError(f"CSV file {path} does not exist")
            with path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                rows, columns = list(reader), reader.fieldnames or []
            # Only the training CSV carries folds; a test CSV has no fold column.
            fold = [self.fold_column] if self.fold_column and path == self.csv_path else []
            needed = [self.path_column, *self.label_columns, *fold]
            for column in needed:
                if column not in columns:
                    raise InputError(f"{path} has no column {column!r} (columns: {', '.join(columns)})")
            if not rows:
                raise InputError(f"CSV file {path} has no rows")
            self._csv_rows[path] = rows
        return self._csv_rows[path]

    def _classes_from_csv(
        self, path: Path, class_names: list[str] | None, num_classes: int | None
    ) -> list[str]:
        rows = self._read_csv(path)
        if self.label_mode in ("multilabel", "soft"):
            if len(self.label_columns) < 2:
                raise InputError(f"label_mode {self.label_mode} needs several label_columns (one per class)")
            return class_names or list(self.label_columns)
        if len(self.label_columns) != 1:
            raise InputError(
                f"label_mode {self.label_mode} reads one label column, got {self.label_columns}: "
                "use label_mode soft or multilabel for one column per class"
            )
        values = [row[self.label_columns[0]] for row in rows]
        if class_names is not None:
            return class_names
        ids = [_int_or_none(v) for v in values]
        if all(i is not None for i in ids):
            count = (
                num_classes if num_classes is not None else 2 if self.label_mode == "binary" else max(ids) + 1
            )
            return [str(i) for i in range(count)]
        names = sorted(set(values))
        if num_classes is not None and len(names) != num_classes:
            raise InputError(
                f"{path} column {self.label_columns[0]!r} has {len(names)} distinct labels but num_classes is "
                f"{num_classes}: list the classes in class_names"
            )
        return names

    # ----------------------------------------------------------------- sources
    def _csv_source(self, path: Path) -> tuple[FileSource, list[dict[str, str]]]:
        rows = self._read_csv(path)
        image_root = self.root or path.parent
        paths = [image_root / self.path_format.format(row[self.path_column]) for row in rows]
        return FileSource(paths, self._csv_targets(path, rows), self.channels), rows

    def _csv_targets(self, path: Path, rows: list[dict[str, str]]) -> list[Any]:
        if self.label_mode in ("multilabel", "soft"):
            targets = []
            for line, row in enumerate(rows, start=2):
                try:
                    vector = np.array([float(row[c]) for c in self.label_columns], dtype=np.float32)
                except ValueError:
                    raise InputError(f"{path} line {line}: label columns must hold numbers") from None
                if self.label_mode == "multilabel" and not np.isin(vector, (0.0, 1.0)).all():
                    raise InputError(
                        f"{path} line {line}: multilabel columns must hold 0 or 1, got {vector.tolist()}"
                    )
                targets.append(vector)
            return targets
        column = self.label_columns[0]
        index = {name: i for i, name in enumerate(self.class_names)}
        targets, bad = [], []
        for row in rows:
            value = row[column]
            label = index.get(value, _int_or_none(value))
            if label is None or not 0 <= label < self.num_classes:
                bad.append(value)
            targets.append(label)
        if bad:
            shown = ", ".join(sorted(set(bad))[:5])
            raise InputError(
                f"{path} column {column!r} has label(s) {shown} outside the {self.num_classes} classes "
                f"(ids 0..{self.num_classes - 1} or names {self.class_names[:5]})"
            )
        return targets

    def _stratify_keys(self, targets: Sequence[Any]) -> list:
        if self.label_mode == "soft":
            return [int(np.argmax(t)) for t in targets]
        if self.label_mode == "multilabel":
            # Exact label combinations are often unique; stratify on each row's rarest positive
            # label instead (-1: none), which keeps rare labels in both sets.
            counts = np.sum(targets, axis=0)
            return [int(min(np.flatnonzero(t), key=lambda c: counts[c])) if t.any() else -1 for t in targets]
        return list(targets)

    def _split(
        self, source: SampleSource, targets: Sequence[Any]
    ) -> dict[str, tuple[SampleSource, list[int]]]:
        train, val = stratified_split(self._stratify_keys(targets), self.val_split, self.split_seed)
        return {"train": (source, train), "val": (source, val)}

    def _build_sources(self) -> dict[str, tuple[SampleSource, list[int]]]:
        """{split: (source, indices)} for train, val and (when there is one) test."""
        if self.source == "synthetic":
            size = self.image_size
            shapes = SyntheticShapes(
                self.synthetic_samples, size, self.num_classes, self.channels, seed=self.split_seed
            )
            sources = self._split(SyntheticSource(shapes), shapes.labels)
            test = SyntheticShapes(max(self.synthetic_samples // 4, 1), size, self.num_classes, self.channels,
                                   seed=self.split_seed + 1)  # fmt: skip
            sources["test"] = _whole(SyntheticSource(test, "synthetic_test"))
            return sources
        if self.source == "torchvision":
            spec = torchvision_spec(self.dataset)
            root = self.root or Path("data") / self.dataset

            def split(name: str) -> TorchvisionSource:
                dataset = open_torchvision_dataset(self.dataset, root, name, download=False)
                return TorchvisionSource(dataset, self.dataset, name, self.channels)

            train = split(spec.splits[0])
            if "val" in spec.splits:
                sources = {"train": _whole(train), "val": _whole(split("val"))}
            else:
                sources = self._split(train, train.labels)
            sources["test"] = _whole(split(spec.splits[-1]))
            return sources
        if self.source == "folder":

            def folder(directory: Path) -> FileSource:
                paths, labels, _ = _scan_image_folder(directory, self.class_names)
                return FileSource(paths, labels, self.channels)

            train = folder(_find_split_folder(self.root, "train") or self.root)
            val_dir, test_dir = _find_split_folder(self.root, "val"), _find_split_folder(self.root, "test")
            if val_dir is not None:
                sources = {"train": _whole(train), "val": _whole(folder(val_dir))}
            else:
                sources = self._split(train, train.targets)
            if test_dir is not None:
                sources["test"] = _whole(folder(test_dir))
            return sources
        # csv
        train, rows = self._csv_source(self.csv_path)
        if self.fold_column:
            folds = [_int_or_none(row[self.fold_column]) for row in rows]
            val = [i for i, f in enumerate(folds) if f == self.fold]
            if not val:
                found = sorted({f for f in folds if f is not None})
                raise InputError(
                    f"{self.csv_path} column {self.fold_column!r} has no fold {self.fold} (folds: {found})"
                )
            sources = {
                "train": (train, [i for i, f in enumerate(folds) if f != self.fold]),
                "val": (train, val),
            }
        else:
            sources = self._split(train, train.targets)
        if self.test_csv:
            sources["test"] = _whole(self._csv_source(self.test_csv)[0])
        return sources

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        if self.source == "torchvision" and self.download:
            root = self.root or Path("data") / self.dataset
            for split in torchvision_spec(self.dataset).splits:
                open_torchvision_dataset(self.dataset, root, split, download=True)

    def setup(self, stage: str | None = None) -> None:
        if not self._sources:
            self._sources = self._without_bad_images(self._build_sources())
            if self.cache_images:
                self._sources = self._cached(self._sources)
        if stage == "predict" and self.predict_root is not None:
            paths, keep = readable_images(
                self.predict_root, self.bad_images, f"predict_root {self.predict_root}"
            )
            self._sources["predict"] = (FileSource(paths, None, self.channels), keep)

    def _without_bad_images(self, sources: dict[str, tuple[SampleSource, list[int]]]) -> dict:
        """Check every image file of every split at once, so one report names all bad files."""
        paths = list(dict.fromkeys(
            source.paths[i] for source, indices in sources.values() if isinstance(source, FileSource) for i in indices
        ))  # fmt: skip
        if not paths:
            return sources
        good = {paths[i] for i in drop_bad_images(paths, self.bad_images, self.root or self.csv_path)}
        for split, (source, indices) in sources.items():
            if isinstance(source, FileSource):
                kept = [i for i in indices if source.paths[i] in good]
                if not kept:
                    raise InputError(
                        f"the {split} set has no readable images left after skipping unreadable ones"
                    )
                sources[split] = (source, kept)
        return sources

    def _dataset(self, split: str, train: bool = False) -> TransformedDataset:
        if not self._sources:
            self.setup()
        if split == "predict" and self.predict_root is not None and "predict" not in self._sources:
            self.setup("predict")  # predict_dataloader() called without setup("predict")
        source, indices = self._sources[self._available_split(self._sources, split)]
        transform = build_transform(
            self.image_size,
            None if train else self.resize,
            self.augmentations if train else None,
            self.mean,
            self.std,
            self.channels,
        )
        return TransformedDataset(source, indices, transform, target_key="label")
