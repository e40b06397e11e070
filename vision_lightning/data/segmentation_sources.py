"""Where segmentation data comes from: one typed source per kind of data, chosen by `class_path`.

- `MaskFolders`: images and their class-id mask files (ISBI, VOC, the drone data set, SIIM PNGs);
- `PaletteMasks`: the same with RGB colour masks, one colour per class (CamVid-style files);
- `RleCsv`: a Kaggle CSV of run-length encoded masks (Carvana, SIIM, Severstal, clouds);
- `SyntheticShapes`: generated shapes and their masks (no download: the quickstart and the tests).

A source holds and validates its own arguments, says which masks it can give (`modes`) and which
classes its data defines, and loads its samples (`load`). `SegmentationDataModule` does the rest,
the same for every source: the validation split, the checks of every sample, caching, transforms
and loaders. What the module decides for all sources (mode, classes, channels, image size, seed)
reaches the source as a `MaskSpec`. In YAML, by full class path (`vision_lightning.data.MaskFolders`,
`.PaletteMasks` and `.RleCsv` are exported there; `SyntheticShapes` only here, as classification
has a source of that name too):

    source:
      class_path: vision_lightning.data.MaskFolders
      init_args: {root: data/isbi2012, mask_format: scale255}

Sources keep their constructor arguments in `init_args`, so checkpoints describe them as plain
`{class_path, init_args}` (utils.hparams.plain).
"""

from __future__ import annotations

import csv
import numbers
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vision_lightning.data.datasets import SampleSource
from vision_lightning.data.segmentation_samples import (
    PairedFileSource,
    RleSource,
    SyntheticMaskSource,
    group_keys,
    pair_images_and_masks,
)
from vision_lightning.data.splits import find_split_folder
from vision_lightning.data.synthetic import SHAPE_NAMES
from vision_lightning.data.synthetic import ShapeImages as ShapeGenerator
from vision_lightning.utils.errors import InputError, MissingInputError
from vision_lightning.utils.hparams import from_plain

MaskFormat = Literal["index", "nonzero", "scale255"]
MASK_FILE_FORMATS = ("index", "nonzero", "scale255")
RLE_FORMATS = ("carvana", "siim")
RLE_ORDERS = ("F", "C")


@dataclass(frozen=True)
class MaskSpec:
    """What the data module asks of every source: masks of `mode` over `class_names`, images of
    `channels` channels; synthetic data is rendered at `image_size` from `seed`."""

    mode: str
    class_names: tuple[str, ...]
    channels: int = 3
    image_size: int = 256
    seed: int = 42

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class SourceData:
    """What a source found. `train` is split into training and validation by the data module
    unless the data has its own `val`; `test` is a labelled test set; `predict` lists unlabelled
    images found with the data (ISBI's `test/`), predicted rather than tested; `groups` is the
    data's own group of each `train` sample (a CSV column), kept on one side of the split."""

    train: SampleSource
    val: SampleSource | None = None
    test: SampleSource | None = None
    predict: list[Path] | None = None
    groups: list[str] | None = None


class SegmentationSource(ABC):
    """Base of the segmentation sources (see the module docstring)."""

    #: the masks this data can give
    modes: tuple[str, ...] = ("binary", "multiclass", "multilabel")
    #: a mask value that is not a class (VOC's 255 border): only mask files have one
    ignore_index: int | None = None
    init_args: dict[str, Any]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.init_args.items())
        return f"{type(self).__name__}({args})"

    @property
    def location(self) -> str:
        """Where the data is, for messages (`the train set of <location>`)."""
        return type(self).__name__

    def check_mode(self, mode: str) -> None:
        """Raise `InputError` when this data cannot give masks of `mode`."""
        if mode not in self.modes:
            raise InputError(f"{type(self).__name__} gives {' or '.join(self.modes)} masks, not {mode}")

    def class_count(self, asked: int | None) -> int | None:
        """The number of classes: `asked` (from num_classes / class_names, None when neither is
        given), checked against what the data itself fixes (PaletteMasks: one class per colour)."""
        return asked

    def default_class_names(self, mode: str, count: int | None) -> list[str] | None:
        """The names this data gives its classes for a `mode` (not binary) with `count` classes
        (None: as many as the data has), or None when the data does not name them."""
        return None

    @abstractmethod
    def load(self, spec: MaskSpec) -> SourceData:
        """The samples, as `spec` asks (reads folders and files; called by the data module's setup)."""


def as_source(value: SegmentationSource | Mapping[str, Any]) -> SegmentationSource:
    """`value`, or the source that a `{class_path, init_args}` mapping describes (a checkpoint's
    hyperparameters, as `plain` wrote them)."""
    if isinstance(value, Mapping) and isinstance(value.get("class_path"), str):
        return from_plain(value, SegmentationSource, "segmentation source")
    if not isinstance(value, SegmentationSource):
        raise InputError(
            f"source must be a segmentation source (MaskFolders, PaletteMasks, RleCsv, SyntheticShapes), got {value!r}"
        )
    return value


def check_group_pattern(pattern: str | None) -> str | None:
    """`pattern` if it is a regular expression, else one sentence."""
    if pattern is None:
        return None
    try:
        re.compile(pattern)
    except re.error as error:
        raise InputError(f"group_pattern {pattern!r} is not a regular expression: {error}") from None
    return pattern


class MaskFolders(SegmentationSource):
    """Images and their mask files, in split folders or in one folder.

    Args:
        root: the data folder. With `train/`, `val/` (or `valid/`) and `test/` inside, those are the
            splits (a split without masks, like ISBI's `test/`, is predicted, not tested); otherwise
            `root` itself is the training set and validation is split off it.
        image_dir / mask_dir: the images' and the masks' folder inside each split. By default
            images/, image/, imgs/ or img/ (else the split folder itself) and masks/, mask/,
            labels/, label/, annotations/ or gt/ (ISBI's `train/image` + `train/label`).
        mask_suffix: the mask of `a.jpg` is `a<mask_suffix>.<ext>`; without a mask folder, masks lie
            beside their images (`<id>_mask.png` next to `<id>.png`).
        mask_extension: only masks with this extension (`.png` when JPEG previews lie beside them);
            by default any image extension.
        mask_format: `index` (class ids, palette PNGs included), `nonzero` (>= 1 is foreground) or
            `scale255` (0/255 masks, JPEG noise tolerated). Colour masks: `PaletteMasks`.
        ignore_index: a mask value that is not a class (VOC's 255 border), left out of the loss and
            the metrics; the CLI links it into the model.
        check_masks: read every mask before training to check its values (sizes are always checked).
        group_pattern: a regex on the file name whose first group names a sample's group (Carvana:
            `^([^_]+)_`, the car; else the whole match): the validation split keeps each group on one side.
    """

    modes = ("binary", "multiclass")

    def __init__(
        self,
        root: str,
        image_dir: str | None = None,
        mask_dir: str | None = None,
        mask_suffix: str = "",
        mask_extension: str | None = None,
        mask_format: MaskFormat = "index",
        ignore_index: int | None = None,
        check_masks: bool = True,
        group_pattern: str | None = None,
    ) -> None:
        if not root:
            raise InputError(f"{type(self).__name__} needs root: the data folder")
        if mask_format not in MASK_FILE_FORMATS:
            hint = " (colour masks: a PaletteMasks source with colors)" if mask_format == "colors" else ""
            raise InputError(
                f"mask_format must be one of {', '.join(MASK_FILE_FORMATS)}, got {mask_format!r}{hint}"
            )
        self.root = Path(root)
        self.image_dir, self.mask_dir = image_dir, mask_dir
        self.mask_suffix, self.mask_extension = mask_suffix, mask_extension
        self.mask_format, self.ignore_index, self.check_masks = mask_format, ignore_index, check_masks
        self.group_pattern = check_group_pattern(group_pattern)
        self.init_args = {
            "root": str(root),
            "image_dir": image_dir,
            "mask_dir": mask_dir,
            "mask_suffix": mask_suffix,
            "mask_extension": mask_extension,
            "mask_format": mask_format,
            "ignore_index": ignore_index,
            "check_masks": check_masks,
            "group_pattern": group_pattern,
        }

    @property
    def location(self) -> str:
        return str(self.root)

    def check_mode(self, mode: str) -> None:
        if mode == "multilabel":
            raise InputError(
                "multilabel masks come from an RLE csv with class_column (RleCsv) or synthetic data, "
                f"not from the one-class-per-pixel mask files of {type(self).__name__}"
            )
        super().check_mode(mode)

    def _colors(self) -> list[list[int]] | None:
        return None

    def _split(
        self, folder: Path, spec: MaskSpec, unlabelled_ok: bool = False
    ) -> PairedFileSource | list[Path]:
        """A split folder's image/mask pairs, or its images alone when it has no masks."""
        images, masks = pair_images_and_masks(
            folder, self.image_dir, self.mask_dir, self.mask_suffix, self.mask_extension, unlabelled_ok
        )
        if masks is None:
            return images
        return PairedFileSource(
            images,
            masks,
            spec.channels,
            self.mask_format,
            self._colors(),
            spec.num_classes,
            self.ignore_index,
            self.check_masks,
        )

    def load(self, spec: MaskSpec) -> SourceData:
        self.check_mode(spec.mode)
        if not self.root.is_dir():
            raise MissingInputError(f"data folder {self.root} does not exist")
        train = self._split(find_split_folder(self.root, "train") or self.root, spec)
        if isinstance(train, list):
            if self.mask_dir:
                raise MissingInputError(
                    f"mask_dir {self.mask_dir!r} is not a folder in the training split of {self.root}"
                )
            raise InputError(
                f"found no masks for the training images of {self.root}: expected a masks/ or label/ folder "
                "beside the images (or set mask_dir, or mask_suffix for masks beside the images)"
            )
        data = SourceData(
            train, groups=group_keys(train.paths, self.group_pattern) if self.group_pattern else None
        )
        val_dir = find_split_folder(self.root, "val")
        if val_dir is not None:
            val = self._split(val_dir, spec)
            if isinstance(val, list):
                raise InputError(f"validation folder {val_dir} has no masks")
            data.val = val
        test_dir = find_split_folder(self.root, "test")
        if test_dir is not None:
            test = self._split(test_dir, spec, unlabelled_ok=True)
            if isinstance(test, list):
                data.predict = test  # unlabelled (ISBI): predicted, not tested
            else:
                data.test = test
        return data


class PaletteMasks(MaskFolders):
    """Colour masks: each pixel's RGB colour is its class, one colour per class (CamVid-style
    files). Images and masks pair up as in `MaskFolders`; a colour not listed is an error naming
    the file. (Palette PNGs store class ids: `MaskFolders` with `mask_format: index` reads them.)

    Args:
        root / image_dir / mask_dir / mask_suffix / mask_extension / check_masks: as `MaskFolders`.
        colors: `[r, g, b]` of every class, in class order: as many classes as colours.
    """

    def __init__(
        self,
        root: str,
        colors: list[list[int]],
        image_dir: str | None = None,
        mask_dir: str | None = None,
        mask_suffix: str = "",
        mask_extension: str | None = None,
        check_masks: bool = True,
        group_pattern: str | None = None,
    ) -> None:
        super().__init__(
            root,
            image_dir,
            mask_dir,
            mask_suffix,
            mask_extension,
            check_masks=check_masks,
            group_pattern=group_pattern,
        )
        if not colors:
            raise InputError("PaletteMasks needs colors: one [r, g, b] per class")
        for i, colour in enumerate(colors):
            if len(colour) != 3 or not all(isinstance(v, numbers.Integral) and 0 <= v <= 255 for v in colour):
                raise InputError(f"colors[{i}] must be [r, g, b] with values 0 to 255, got {colour}")
        repeated = [list(c) for i, c in enumerate(colors) if list(c) in [list(o) for o in colors[:i]]]
        if repeated:
            raise InputError(f"colors lists {repeated[0]} more than once: each class needs its own colour")
        self.mask_format = "colors"
        self.colors = [[int(v) for v in colour] for colour in colors]
        self.init_args = {
            "root": str(root),
            "colors": self.colors,
            "image_dir": image_dir,
            "mask_dir": mask_dir,
            "mask_suffix": mask_suffix,
            "mask_extension": mask_extension,
            "check_masks": check_masks,
            "group_pattern": group_pattern,
        }

    def _colors(self) -> list[list[int]] | None:
        return self.colors

    def class_count(self, asked: int | None) -> int | None:
        if asked is not None and asked != len(self.colors):
            raise InputError(
                f"colors lists {len(self.colors)} colours, one per class, but num_classes / class_names "
                f"give {asked} classes"
            )
        return len(self.colors)


class RleCsv(SegmentationSource):
    """Masks run-length encoded in a CSV (Kaggle style), one row per mask: several rows of an image
    are united (SIIM lists one per instance), and `class_column` makes multiclass / multilabel masks.

    Args:
        csv_path: the CSV file.
        root: the folder image paths are relative to (default: the CSV's folder).
        path_column / path_format: the column naming each image, and how its value becomes a path
            (`{}.png` for SIIM's ids).
        rle_column: the column of RLE strings (an empty string, or SIIM's `-1`, is an empty mask).
        class_column: each row's class: a name of `class_names`, or a class id.
        rle_format: `carvana` (1-based absolute starts) or `siim` (relative offsets).
        rle_order: pixel order `F` (column-major, as Kaggle states) or `C` (row-major: Carvana's
            file in practice).
        group_column: a column of groups (a patient) that the validation split keeps together.
        group_pattern: instead, a regex on the image name whose first group is its group.
    """

    def __init__(
        self,
        csv_path: str,
        root: str | None = None,
        path_column: str = "id",
        path_format: str = "{}",
        rle_column: str = "rle",
        class_column: str | None = None,
        rle_format: Literal["carvana", "siim"] = "carvana",
        rle_order: Literal["F", "C"] = "F",
        group_column: str | None = None,
        group_pattern: str | None = None,
    ) -> None:
        if not csv_path:
            raise InputError("RleCsv needs csv_path: the CSV file of RLE masks")
        if rle_format not in RLE_FORMATS:
            raise InputError(f"rle_format must be carvana or siim, got {rle_format!r}")
        if rle_order not in RLE_ORDERS:
            raise InputError(f"rle_order must be 'F' (column-major) or 'C' (row-major), got {rle_order!r}")
        self.csv_path = Path(csv_path)
        self.root = Path(root) if root else None
        self.path_column, self.path_format = path_column, path_format
        self.rle_column, self.class_column, self.group_column = rle_column, class_column, group_column
        if group_column and group_pattern:
            raise InputError("give RleCsv group_column or group_pattern, not both")
        self.group_pattern = check_group_pattern(group_pattern)
        self.rle_format, self.rle_order = rle_format, rle_order
        self.init_args = {
            "csv_path": str(csv_path),
            "root": None if root is None else str(root),
            "path_column": path_column,
            "path_format": path_format,
            "rle_column": rle_column,
            "class_column": class_column,
            "rle_format": rle_format,
            "rle_order": rle_order,
            "group_column": group_column,
            "group_pattern": group_pattern,
        }

    @property
    def location(self) -> str:
        return str(self.csv_path)

    def check_mode(self, mode: str) -> None:
        super().check_mode(mode)
        if mode != "binary" and not self.class_column:
            raise InputError(f"mode {mode} from an RLE csv needs class_column (each row's class)")

    def load(self, spec: MaskSpec) -> SourceData:
        self.check_mode(spec.mode)
        path = self.csv_path
        if not path.is_file():
            raise MissingInputError(f"CSV file {path} does not exist")
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            rows, columns = list(reader), reader.fieldnames or []
        needed = [self.path_column, self.rle_column, *filter(None, [self.class_column, self.group_column])]
        for column in needed:
            if column not in columns:
                raise InputError(f"{path} has no column {column!r} (columns: {', '.join(columns)})")
        if not rows:
            raise InputError(f"CSV file {path} has no rows")
        index = {name: i for i, name in enumerate(spec.class_names)}
        runs: dict[str, list[tuple[int, str, str]]] = {}
        groups: dict[str, str] = {}
        for line, row in enumerate(rows, start=2):
            key = row[self.path_column]
            where = f"{path} line {line} ({self.path_column} {key})"
            class_id = 1
            if self.class_column:
                value = row[self.class_column]
                class_id = index.get(value, int(value) if value.strip().isdigit() else -1)
                if not 0 <= class_id < spec.num_classes:
                    raise InputError(f"{where}: class {value!r} is not one of {list(spec.class_names)}")
            runs.setdefault(key, []).append((class_id, row[self.rle_column], where))
            if self.group_column:
                groups[key] = row[self.group_column]
        image_root = self.root or path.parent
        images = [image_root / self.path_format.format(key) for key in runs]
        source = RleSource(
            images,
            list(runs.values()),
            spec.channels,
            spec.mode,
            spec.num_classes,
            self.rle_format,
            self.rle_order,
        )
        if self.group_pattern:
            return SourceData(source, groups=group_keys(source.paths, self.group_pattern))
        return SourceData(source, groups=[groups[key] for key in runs] if self.group_column else None)


class SyntheticShapes(SegmentationSource):
    """Generated shapes with their masks, no download: binary = the shape, multiclass = 1 + its
    kind (0 is background), multilabel = one plane per kind. Rendered at the data module's
    `image_size` from its `split_seed`, which also splits off validation; a test set of a quarter
    as many samples comes from the next seed. Classes are named after the shapes.

    Args:
        samples: how many images to train and validate on.
    """

    def __init__(self, samples: int = 200) -> None:
        if samples < 2:
            raise InputError(
                f"SyntheticShapes samples must be at least 2 (training and validation), got {samples}"
            )
        self.samples = samples
        self.init_args = {"samples": samples}

    def default_class_names(self, mode: str, count: int | None) -> list[str] | None:
        kinds = (count - 1 if mode == "multiclass" else count) if count else 4
        ShapeGenerator(1, 8, kinds)  # checks the number of kinds
        names = list(SHAPE_NAMES[:kinds])
        return ["background", *names] if mode == "multiclass" else names

    def load(self, spec: MaskSpec) -> SourceData:
        kinds = max(len(SHAPE_NAMES[: spec.num_classes - (spec.mode == "multiclass")]), 2)  # binary: 2 kinds
        shapes = ShapeGenerator(self.samples, spec.image_size, kinds, spec.channels, spec.seed)
        test = ShapeGenerator(max(self.samples // 4, 1), spec.image_size, kinds, spec.channels, spec.seed + 1)
        return SourceData(
            SyntheticMaskSource(shapes, spec.mode),
            test=SyntheticMaskSource(test, spec.mode, "synthetic_test"),
        )
