"""SegmentationDataModule: images and masks from a typed source, split, checked, augmented and batched.

Where the data comes from is a source chosen by `class_path` (data/segmentation_sources.py):
`MaskFolders` (image/mask folders), `PaletteMasks` (colour masks), `RleCsv` (Kaggle RLE CSVs) or
`SyntheticShapes`. The module does the same for every source: it splits off validation (by group
when asked), checks every sample, caches, transforms and builds the loaders.

Batches are `{"image": float CHW, "mask": uint8 HW class ids (CHW 0/1 planes for multilabel),
"path": str, "size": original (height, width)}`; predict batches have no "mask". Image and mask
are augmented together by albumentations (masks resampled nearest-neighbour). Every sample is
checked before training: a mask whose size differs from its image, an image without a mask, mask
values beyond the classes and RLE runs past the end of the image are each reported by file name,
all of them at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from vision_lightning.data.base import Split, VisionDataModule
from vision_lightning.data.datasets import FileSource, SampleSource, SegmentationDataset, skipped_paths
from vision_lightning.data.in_memory import MemoryDataset, MemorySplit, check_fits, decode_split, load_split
from vision_lightning.data.segmentation_sources import (
    MaskSpec,
    SegmentationSource,
    SourceData,
    SyntheticShapes,
    as_source,
)
from vision_lightning.data.splits import group_split
from vision_lightning.data.streaming import StreamedSplit
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.images import drop_bad_images, list_images
from vision_lightning.utils.transforms import build_transform

if TYPE_CHECKING:  # albumentations is imported where a pipeline is built (slow: not at CLI start-up)
    import albumentations as A

SegmentationMode = Literal["binary", "multiclass", "multilabel"]


class SegmentationDataModule(VisionDataModule):
    """Segmentation data from a typed source (see the module docstring).

    Args:
        source: where images and masks come from: `MaskFolders`, `PaletteMasks`, `RleCsv` or
            `SyntheticShapes` (vision_lightning.data.segmentation_sources), or a subclass of
            `SegmentationSource` of one's own; also its `{class_path, init_args}` description.
        mode: binary (one foreground class), multiclass (one class per pixel) or multilabel (one
            0/1 plane per class: from an RLE csv or synthetic data).
        num_classes / class_names: binary has 2 (background, foreground); synthetic shapes and
            colour masks know their classes.
        channels: 3 (RGB) or 1 (grayscale); linked to the model's `in_channels`.
        image_size: training size. Images are resized to it, or with `crop` randomly cropped to it in
            training and used whole for validation, test and predict (the model pads them).
        crop: random crops of `image_size` to train, whole images to evaluate.
        augmentations: albumentations transforms applied jointly to image and mask in training.
        batch_size: the training batch size (changed by ProgressiveResizing).
        **kwargs: `VisionDataModule`'s: `loader`, `mean` / `std` (None: the model's own, else
            ImageNet's; `[0.0]` / `[1.0]` only scale pixels to [0, 1]), `cache_images` (images
            and masks; small sets like ISBI), `bad_images` (images or masks), `val_split` /
            `split_seed` (when the data has no validation set of its own), `predict_root`
            (default: unlabelled images found with the data, like ISBI's `test/`, else the test
            split, else validation), `predict_splits`.
    """

    def __init__(
        self,
        source: SegmentationSource = SyntheticShapes(),
        mode: SegmentationMode = "binary",
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        channels: int = 3,
        image_size: int = 256,
        crop: bool = False,
        augmentations: list[A.BasicTransform | A.BaseCompose] | None = None,
        batch_size: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_size, batch_size, **kwargs)
        source = as_source(source)
        if mode not in ("binary", "multiclass", "multilabel"):
            raise InputError(f"mode must be binary, multiclass or multilabel, got {mode!r}")
        if channels not in (1, 3):
            raise InputError(f"channels must be 1 or 3, got {channels}")
        source.check_mode(mode)
        self._refuse_for_streamed(source)
        self.source, self.mode, self.channels = source, mode, channels
        self.crop, self.augmentations = crop, augmentations
        self.class_names = self._classes(num_classes, class_names)
        self.save_hyperparameters()
        for hparams in (self._hparams, self._hparams_initial):  # the checkpoint keeps the classes as resolved
            hparams.update(num_classes=self.num_classes, class_names=list(self.class_names))
        self._sources: dict[str, Split] = {}
        self._memory: dict[tuple, MemorySplit] = {}  # (split, image_size): decoded with in_memory
        self._predict_images: list[Path] | None = None

    # ----------------------------------------------------------------- classes
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def ignore_index(self) -> int | None:
        """The mask value that is not a class, as the source says (mask files only); linked into the model."""
        return self.source.ignore_index

    def _classes(self, num_classes: int | None, class_names: list[str] | None) -> list[str]:
        if class_names is not None and num_classes is not None and len(class_names) != num_classes:
            raise InputError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
        count = self.source.class_count(num_classes or (len(class_names) if class_names else None))
        if self.mode == "binary":
            if count not in (None, 2):
                raise InputError(f"mode binary has 2 classes (background, foreground), got {count}")
            return list(class_names or ["background", "foreground"])
        names = self.source.default_class_names(self.mode, count)
        if names is not None:
            return list(class_names or names)
        if count is None:
            raise InputError(f"mode {self.mode} needs num_classes or class_names")
        if count < 2 and self.mode == "multiclass":
            raise InputError(f"mode multiclass needs at least 2 classes, got {count}")
        return list(class_names or [str(i) for i in range(count)])

    def preprocessing(self) -> dict[str, Any]:
        """What inference needs besides size and mean/std: `channels` to read images with;
        `whole_images` (with `crop`): evaluate whole images at their own size, padded by the model,
        instead of resizing them to `image_size`; and `mode`, `class_names`, `ignore_index` to turn
        logits into masks."""
        return {
            **super().preprocessing(),
            "channels": self.channels,
            "crop": self.crop,
            "whole_images": self.crop,
            "mode": self.mode,
            "class_names": list(self.class_names),
            "ignore_index": self.ignore_index,
        }

    # ----------------------------------------------------------------- splits
    def _spec(self) -> MaskSpec:
        return MaskSpec(self.mode, tuple(self.class_names), self.channels, self.image_size, self.split_seed)

    def _groups(self, data: SourceData) -> list[str]:
        """Each training sample's group: the source's (a `group_pattern` or a CSV column),
        else the sample itself (a plain seeded random split)."""
        names = getattr(data.train, "paths", None) or [str(i) for i in range(len(data.train))]
        if data.groups is not None:
            return data.groups
        return list(names)

    def _build_sources(self) -> dict[str, Split]:
        data = self.source.load(self._spec())
        if data.val is not None:
            sources = {"train": _whole(data.train), "val": _whole(data.val)}
        else:
            train, val = group_split(self._groups(data), self.val_split, self.split_seed)
            sources = {"train": (data.train, train), "val": (data.train, val)}
        if data.test is not None:
            sources["test"] = _whole(data.test)
        self._predict_images = data.predict
        return sources

    # ----------------------------------------------------------------- checks
    def _checked(self, sources: dict[str, Split]) -> dict[str, Split]:
        """Drop unreadable files (or stop, per `bad_images`), then check every pair; one report.
        Streamed splits were checked when they were converted."""
        if any(isinstance(source, StreamedSplit) for source, _ in sources.values()):
            return sources
        for split, (source, indices) in sources.items():
            files = {i: source.files(i) for i in indices}
            listed = [path for i in indices for path in files[i]]
            if not listed:
                continue  # generated samples: nothing to read
            what = f"the {split} set of {self.source.location}"
            good = {listed[k] for k in drop_bad_images(listed, self.bad_images, what)}
            keep = [i for i in indices if all(path in good for path in files[i])]
            if not keep:
                raise InputError(f"the {split} set has no readable image/mask pairs left")
            sources[split] = (source, keep)
        checks = [(source, i) for source, indices in sources.values() for i in indices]
        with ThreadPoolExecutor(max_workers=8) as pool:
            problems = [p for p in pool.map(lambda s: s[0].problem(s[1]), checks) if p]
        problems = list(dict.fromkeys(problems))
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise InputError(f"{len(problems)} bad sample(s){more}: " + "; ".join(problems[:5]))
        return sources

    # ----------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        if not self._sources:
            sources = self._build_sources()
            # in_memory checks a split's samples when it decodes them, not when its cache is read
            sources = sources if self.in_memory is not None else self._checked(sources)
            if self.cache_images:
                sources = self._cached(sources)
            self._sources = sources
        if stage == "predict" and "predict" not in self._sources:
            images = list_images(self.predict_root) if self.predict_root else self._predict_images
            if images is not None:
                if not images:
                    raise InputError(f"predict_root {self.predict_root} has no images")
                what = f"predict images {self.predict_root or ''}".rstrip()
                keep = drop_bad_images(images, self.bad_images, what)
                if not keep:
                    raise InputError(
                        f"nothing could be read to predict in {what}: all {len(images)} image(s) are unreadable"
                    )
                self.skipped_predict_images = skipped_paths(images, keep)
                self._sources["predict"] = (FileSource(images, None, self.channels), keep)

    def _transform(self, train: bool) -> A.Compose:
        import albumentations as A

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

    def _dataset(self, split: str, train: bool = False) -> SegmentationDataset | MemoryDataset:
        if not self._sources:
            self.setup()
        if split == "predict" and "predict" not in self._sources:
            self.setup("predict")
        name = self._available_split(self._sources, split)
        if self.in_memory is not None and name != "predict":
            return self._memory_dataset(name)
        source, indices = self._sources[name]
        return SegmentationDataset(source, indices, self._transform(train))

    @property
    def memory_crop(self) -> int | None:
        """With `crop`, the in-memory path keeps whole images and trains on random windows."""
        return self.image_size if self.crop else None

    def _memory_dataset(self, split: str) -> MemoryDataset:
        """Split `split`'s images and masks in memory, from the disk cache when it holds them
        (data/in_memory.py): resized to `image_size` (masks nearest-neighbour), or with `crop` whole,
        at their own size, which must then be the same for all of them."""
        import albumentations as A

        size = None if self.crop else self.image_size
        key = (split, size)
        if key not in self._memory:
            source, indices = self._sources[split]
            place = {
                "module": "segmentation", "split": split, "source": repr(self.source),
                "source_args": self.source.init_args, "spec": repr(self._spec()),
                "image_size": size, "bad_images": self.bad_images,
            }  # fmt: skip
            transform = A.Compose([A.Resize(height=size, width=size)] if size else [])

            def build() -> dict[str, Any]:
                kept = self._checked({split: (source, list(indices))})[split][1]
                side = size or max(_whole_image_size(source, kept))
                check_fits(len(kept), self.channels, side, f"the {split} set")
                return {**decode_split(source, kept, transform, masks=True), "indices": list(kept)}

            shape = (self.channels, size, size) if size else None
            data = load_split(self.in_memory, place, source, indices, build, shape)
            kept = [int(i) for i in data["indices"]]
            self._memory[key] = MemorySplit(
                data["images"], kept, list(data["names"]), masks=data["masks"], sizes=data["sizes"]
            )
            self._sources[split] = (source, kept)
        return MemoryDataset(self._memory[key], target_key="mask")


def _whole_image_size(source: SampleSource, indices: Sequence[int]) -> tuple[int, int]:
    """The (height, width) of the first sample: in_memory with `crop` keeps whole images, of one size."""
    if not indices:
        return (0, 0)
    image, _, _ = source.load(indices[0])
    return tuple(image.shape[:2])


def _whole(source: SampleSource) -> Split:
    """Every sample of `source` (a range: a streamed split may hold millions)."""
    return source, range(len(source))
