"""SegmentationDataModule: paired image/mask folders, Kaggle RLE CSVs, or synthetic shapes.

Batches are `{"image": float CHW, "mask": uint8 HW class ids (CHW 0/1 planes for multilabel),
"path": str, "size": original (height, width)}`. Image and mask are augmented together by
albumentations (masks resampled nearest-neighbour). Every sample is checked before training: a mask
whose size differs from its image, an image without a mask, mask values beyond the classes and RLE
runs past the end of the image are each reported by file name, all of them at once.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import albumentations as A

from vision_lightning.data.base import Split, VisionDataModule
from vision_lightning.data.classification import SPLIT_FOLDERS
from vision_lightning.data.datasets import FileSource, SampleSource, SegmentationDataset
from vision_lightning.data.segmentation_sources import (
    PairedFileSource,
    RleSource,
    SyntheticMaskSource,
    group_keys,
    pair_images_and_masks,
)
from vision_lightning.data.splits import group_split
from vision_lightning.data.synthetic import SHAPE_NAMES, SyntheticShapes
from vision_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform
from vision_lightning.utils.errors import InputError, MissingInputError
from vision_lightning.utils.images import MASK_FORMATS, drop_bad_images, list_images

SegmentationMode = Literal["binary", "multiclass", "multilabel"]
Source = Literal["synthetic", "folder", "csv"]


def _split_folder(root: Path, split: str) -> Path | None:
    return next((root / name for name in SPLIT_FOLDERS[split] if (root / name).is_dir()), None)


class SegmentationDataModule(VisionDataModule):
    """Segmentation data from one of three sources.

    Args:
        source: `synthetic` shapes with their masks, a `folder` of images and masks, or a `csv` of
            RLE-encoded masks (Kaggle style).
        root: the data folder. With `train/`, `val/` and `test/` inside, those are the splits (a
            split without masks, like ISBI's `test/`, is predicted, not tested); otherwise `root`
            itself is the training split. For `csv`, the folder image paths are relative to.
        image_dir / mask_dir / mask_suffix / mask_extension: how images find their masks (see
            `pair_images_and_masks`): ISBI's `train/image` + `train/label`, `images/` + `masks/`,
            or `<id>_mask.png` beside `<id>.png`.
        mask_format: `index` (class ids; palette PNGs), `nonzero` (>= 1 is foreground), `scale255`
            (0/255 masks), `colors` (RGB colours listed in `mask_colors`, one per class).
        csv_path / path_column / path_format / rle_column / class_column: the CSV has one row per
            mask (several rows per image are united; SIIM lists one per instance); `class_column`
            gives each row's class for multiclass / multilabel masks.
        rle_format / rle_order: `carvana` (1-based absolute starts) or `siim` (relative offsets);
            pixel order `F` (column-major, as Kaggle states) or `C` (row-major).
        mode: binary (one foreground class), multiclass or multilabel.
        num_classes / class_names: binary has 2 (background, foreground).
        ignore_index: a mask value that is not a class and is left out of the loss and metrics.
        val_split / split_seed: seeded validation split when there is no `val/` folder.
        group_pattern / group_column: split by group so no group is in both sets: a regex on the
            file name (Carvana: `^([^_]+)_` for the car id) or a CSV column.
        image_size: training size. Images are resized to it, or with `crop` randomly cropped to it in
            training and used whole for validation, test and predict (the model pads them).
        augmentations: albumentations transforms applied jointly to image and mask in training.
        check_masks: read every mask before training to check its values (sizes are always checked).
        predict_root: folder of images to predict (default: the test split, else validation).
        predict_splits: predict these splits instead (`[train, val]`), one loader each with
            evaluation transforms (FeatureExtractModule on a segmentation encoder, say).
    """

    def __init__(
        self,
        source: Source = "synthetic",
        root: str | None = None,
        image_dir: str | None = None,
        mask_dir: str | None = None,
        mask_suffix: str = "",
        mask_extension: str | None = None,
        mask_format: Literal["index", "nonzero", "scale255", "colors"] = "index",
        mask_colors: list[list[int]] | None = None,
        csv_path: str | None = None,
        path_column: str = "id",
        path_format: str = "{}",
        rle_column: str = "rle",
        class_column: str | None = None,
        rle_format: Literal["carvana", "siim"] = "carvana",
        rle_order: Literal["F", "C"] = "F",
        mode: SegmentationMode = "binary",
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        ignore_index: int | None = None,
        val_split: float = 0.2,
        split_seed: int = 42,
        group_pattern: str | None = None,
        group_column: str | None = None,
        predict_root: str | None = None,
        bad_images: Literal["skip", "error", "off"] = "skip",
        check_masks: bool = True,
        cache_images: bool = False,
        synthetic_samples: int = 200,
        channels: int = 3,
        image_size: int = 256,
        crop: bool = False,
        augmentations: list[A.BasicTransform | A.BaseCompose] | None = None,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        predict_splits: list[str] | None = None,
    ) -> None:
        super().__init__(
            image_size, batch_size, num_workers, pin_memory, persistent_workers, mean, std, predict_splits
        )
        if source not in ("synthetic", "folder", "csv"):
            raise InputError(f"source must be synthetic, folder or csv, got {source!r}")
        if mode not in ("binary", "multiclass", "multilabel"):
            raise InputError(f"mode must be binary, multiclass or multilabel, got {mode!r}")
        if channels not in (1, 3):
            raise InputError(f"channels must be 1 or 3, got {channels}")
        if mask_format not in MASK_FORMATS:
            raise InputError(f"mask_format must be one of {', '.join(MASK_FORMATS)}, got {mask_format!r}")
        if mask_format == "colors" and not mask_colors:
            raise InputError("mask_format colors needs mask_colors: one [r, g, b] per class")
        self.source, self.mode = source, mode
        self.root = Path(root) if root else None
        self.image_dir, self.mask_dir = image_dir, mask_dir
        self.mask_suffix, self.mask_extension = mask_suffix, mask_extension
        self.mask_format, self.mask_colors = mask_format, mask_colors
        self.csv_path = Path(csv_path) if csv_path else None
        self.path_column, self.path_format = path_column, path_format
        self.rle_column, self.class_column = rle_column, class_column
        self.rle_format, self.rle_order = rle_format, rle_order
        self.ignore_index = ignore_index
        self.val_split, self.split_seed = val_split, split_seed
        self.group_pattern, self.group_column = group_pattern, group_column
        self.predict_root = Path(predict_root) if predict_root else None
        self.bad_images, self.check_masks, self.cache_images = bad_images, check_masks, cache_images
        self.synthetic_samples, self.channels = synthetic_samples, channels
        self.crop, self.augmentations = crop, augmentations
        self.class_names = self._classes(num_classes, class_names)
        self._sources: dict[str, Split] = {}
        self._predict_images: list[Path] | None = None

    # ----------------------------------------------------------------- classes
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _classes(self, num_classes: int | None, class_names: list[str] | None) -> list[str]:
        if class_names is not None and num_classes is not None and len(class_names) != num_classes:
            raise InputError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
        if self.mask_format == "colors":
            count = len(self.mask_colors)
            if (num_classes or count) != count or (class_names and len(class_names) != count):
                raise InputError(
                    f"mask_colors lists {count} colours, one per class, but there are more or fewer classes"
                )
        else:
            count = num_classes or (len(class_names) if class_names else None)
        if self.mode == "binary":
            if count not in (None, 2):
                raise InputError(f"mode binary has 2 classes (background, foreground), got {count}")
            return list(class_names or ["background", "foreground"])
        if self.source == "synthetic":
            shapes = (count - 1 if self.mode == "multiclass" else count) if count else 4
            names = list(SHAPE_NAMES[:shapes])
            default = ["background", *names] if self.mode == "multiclass" else names
            SyntheticShapes(1, 8, shapes)  # checks the number of kinds
            return list(class_names or default)
        if count is None:
            raise InputError(f"mode {self.mode} needs num_classes or class_names (or mask_colors)")
        if count < 2 and self.mode == "multiclass":
            raise InputError(f"mode multiclass needs at least 2 classes, got {count}")
        return list(class_names or [str(i) for i in range(count)])

    # ----------------------------------------------------------------- sources
    def _folder_source(self, folder: Path, unlabelled_ok: bool = False) -> PairedFileSource | list[Path]:
        """A split folder's image/mask pairs, or its images alone when it has no masks."""
        if self.mode == "multilabel":
            raise InputError("multilabel masks come from an RLE csv with class_column (or synthetic data)")
        images, masks = pair_images_and_masks(
            folder, self.image_dir, self.mask_dir, self.mask_suffix, self.mask_extension, unlabelled_ok
        )
        if masks is None:
            return images
        return PairedFileSource(
            images,
            masks,
            self.channels,
            self.mask_format,
            self.mask_colors,
            self.num_classes,
            self.ignore_index,
        )

    def _csv_source(self) -> tuple[RleSource, list[str]]:
        """The RLE source of the CSV and each image's group."""
        path = self.csv_path
        if path is None:
            raise InputError("source csv needs csv_path: <file.csv>")
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
        if self.mode != "binary" and not self.class_column:
            raise InputError(f"mode {self.mode} from an RLE csv needs class_column")
        index = {name: i for i, name in enumerate(self.class_names)}
        runs: dict[str, list[tuple[int, str, str]]] = {}
        groups: dict[str, str] = {}
        for line, row in enumerate(rows, start=2):
            key = row[self.path_column]
            where = f"{path} line {line} ({self.path_column} {key})"
            class_id = 1
            if self.class_column:
                value = row[self.class_column]
                class_id = index.get(value, int(value) if value.strip().isdigit() else -1)
                if not 0 <= class_id < self.num_classes:
                    raise InputError(f"{where}: class {value!r} is not one of {self.class_names}")
            runs.setdefault(key, []).append((class_id, row[self.rle_column], where))
            if self.group_column:
                groups[key] = row[self.group_column]
        image_root = self.root or path.parent
        images = [image_root / self.path_format.format(key) for key in runs]
        source = RleSource(
            images,
            list(runs.values()),
            self.channels,
            self.mode,
            self.num_classes,
            self.rle_format,
            self.rle_order,
        )
        return source, [groups.get(key, key) for key in runs]

    def _groups(self, source: SampleSource, csv_groups: list[str] | None = None) -> list[str]:
        names = getattr(source, "paths", None) or [str(i) for i in range(len(source))]
        if self.group_pattern:
            return group_keys(names, self.group_pattern)
        if csv_groups is not None and self.group_column:
            return csv_groups
        return list(names)  # every sample its own group: a plain seeded random split

    def _split(self, source: SampleSource, groups: list[str]) -> dict[str, Split]:
        train, val = group_split(groups, self.val_split, self.split_seed)
        return {"train": (source, train), "val": (source, val)}

    def _build_sources(self) -> dict[str, Split]:
        if self.source == "synthetic":
            shapes_count = len(SHAPE_NAMES[: self.num_classes - (self.mode == "multiclass")])
            shapes = SyntheticShapes(
                self.synthetic_samples, self.image_size, max(shapes_count, 2), self.channels, self.split_seed
            )
            source = SyntheticMaskSource(shapes, self.mode)
            sources = self._split(source, self._groups(source))
            test = SyntheticShapes(
                max(self.synthetic_samples // 4, 1), self.image_size, shapes.num_classes, self.channels,
                self.split_seed + 1,
            )  # fmt: skip
            sources["test"] = (SyntheticMaskSource(test, self.mode, "synthetic_test"), list(range(len(test))))
            return sources
        if self.source == "csv":
            source, groups = self._csv_source()
            return self._split(source, self._groups(source, groups))
        if self.root is None:
            raise InputError("source folder needs root: <data folder>")
        if not self.root.is_dir():
            raise MissingInputError(f"data folder {self.root} does not exist")
        train = self._folder_source(_split_folder(self.root, "train") or self.root)
        if isinstance(train, list):
            if self.mask_dir:
                raise MissingInputError(
                    f"mask_dir {self.mask_dir!r} is not a folder in the training split of {self.root}"
                )
            raise InputError(
                f"found no masks for the training images of {self.root}: expected a masks/ or label/ folder "
                "beside the images (or set mask_dir, or mask_suffix for masks beside the images)"
            )
        val_dir = _split_folder(self.root, "val")
        if val_dir is not None:
            val = self._folder_source(val_dir)
            if isinstance(val, list):
                raise InputError(f"validation folder {val_dir} has no masks")
            sources = {"train": (train, list(range(len(train)))), "val": (val, list(range(len(val))))}
        else:
            sources = self._split(train, self._groups(train))
        test_dir = _split_folder(self.root, "test")
        if test_dir is not None:
            test = self._folder_source(test_dir, unlabelled_ok=True)
            if isinstance(test, list):
                self._predict_images = test  # unlabelled (ISBI): predicted, not tested
            else:
                sources["test"] = (test, list(range(len(test))))
        return sources

    # ----------------------------------------------------------------- checks
    def _checked(self, sources: dict[str, Split]) -> dict[str, Split]:
        """Drop unreadable files (or stop, per `bad_images`), then check every pair; one report."""
        for split, (source, indices) in sources.items():
            if isinstance(source, PairedFileSource | RleSource):
                files = [source.paths[i] for i in indices]
                if isinstance(source, PairedFileSource):
                    files += [source.mask_paths[i] for i in indices]
                what = f"the {split} set of {self.root or self.csv_path}"
                good = {files[i] for i in drop_bad_images(files, self.bad_images, what)}
                keep = [
                    i for i in indices
                    if source.paths[i] in good
                    and (not isinstance(source, PairedFileSource) or source.mask_paths[i] in good)
                ]  # fmt: skip
                if not keep:
                    raise InputError(f"the {split} set has no readable image/mask pairs left")
                sources[split] = (source, keep)
        checks = [(source, i) for source, indices in sources.values() for i in indices]
        with ThreadPoolExecutor(max_workers=8) as pool:
            problems = [p for p in pool.map(lambda s: s[0].problem(s[1], self.check_masks), checks) if p]
        problems = list(dict.fromkeys(problems))
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise InputError(f"{len(problems)} bad sample(s){more}: " + "; ".join(problems[:5]))
        return sources

    # ----------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        if not self._sources:
            sources = self._checked(self._build_sources())
            if self.cache_images:
                sources = self._cached(sources)
            self._sources = sources
        if stage == "predict" and "predict" not in self._sources:
            images = list_images(self.predict_root) if self.predict_root else self._predict_images
            if images is not None:
                if not images:
                    raise InputError(f"predict_root {self.predict_root} has no images")
                keep = drop_bad_images(images, self.bad_images, f"predict images {self.predict_root or ''}")
                self._sources["predict"] = (FileSource(images, None, self.channels), keep)

    def _transform(self, train: bool) -> A.Compose:
        size = self.image_size
        if not self.crop:
            geometry = [A.Resize(height=size, width=size)]
        elif train:
            geometry = [A.PadIfNeeded(min_height=size, min_width=size), A.RandomCrop(height=size, width=size)]
        else:
            geometry = []  # whole images; the model pads them to what it needs
        return build_transform(
            size, None, self.augmentations if train else None, self.mean, self.std, self.channels, geometry
        )

    def _dataset(self, split: str, train: bool = False) -> SegmentationDataset:
        if not self._sources:
            self.setup()
        if split == "predict" and "predict" not in self._sources:
            self.setup("predict")
        source, indices = self._sources[self._available_split(self._sources, split)]
        return SegmentationDataset(source, indices, self._transform(train))
