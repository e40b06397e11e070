"""ImageClassificationDataModule: classification data from a typed source, split, transformed and loaded.

The source (`vision_lightning.data.classification_sources`: `ImageFolder`, `CsvLabels`,
`TorchvisionDataset`, `SyntheticShapes`) says where the images and labels are; this module does
what is the same for every source: the validation split, transforms, caching, the bad-image check,
the predict folder and the loaders.

Batches are `{"image": float CHW tensor, "label": target, "path": str}`. Targets depend on
`label_mode`: a class id for `multiclass` and `binary`, a float vector for `multilabel` (0/1 per
class) and `soft` (a probability or one-hot row per sample, seed 000's plant pathology); the last
two need one CSV column per class (`CsvLabels`).
Class names are known right after construction, so the CLI links them into the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vision_lightning.data.base import Split, VisionDataModule
from vision_lightning.data.classification_sources import (
    SPLIT_FOLDERS,  # noqa: F401  (segmentation's import)
    ClassificationSource,
    LabelMode,
    SyntheticShapes,
)
from vision_lightning.data.datasets import FileSource, TransformedDataset
from vision_lightning.data.in_memory import MemoryDataset, MemorySplit, check_fits, decode_split, load_split
from vision_lightning.data.splits import stratified_split
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.hparams import from_plain
from vision_lightning.utils.images import drop_bad_images
from vision_lightning.utils.transforms import build_transform, resize_steps

if TYPE_CHECKING:  # albumentations is imported where a pipeline is built (slow: not at CLI start-up)
    import albumentations as A

LABEL_MODES = ("multiclass", "binary", "multilabel", "soft")


class ImageClassificationDataModule(VisionDataModule):
    """Classification data from one source (see the module docstring).

    Args:
        source: where the data comes from: `ImageFolder`, `CsvLabels`, `TorchvisionDataset` or
            `SyntheticShapes` (the default: 1,000 shapes of 4 kinds), each with its own arguments
            (the folder, the CSV's columns, the data set's name...) and class names.
        label_mode: `multiclass` (a class id), `binary` (2 classes, one logit), `multilabel` (0/1
            per class) or `soft` (a probability per class); the last two need `CsvLabels` with one
            label column per class.
        channels: 3 converts grayscale files to RGB, 1 converts to grayscale.
        image_size: the training size (square); ProgressiveResizing may change it between epochs.
        resize: eval images are resized so the shorter side is `resize`, then centre-cropped to
            `image_size` (the ImageNet recipe 256 -> 224); without it images are resized to `image_size`.
        augmentations: albumentations transforms for training, after resizing.
        batch_size: the training batch size (ProgressiveResizing may change it too).
        **kwargs: `VisionDataModule`'s: `loader` (`{num_workers: 4}`), `mean` / `std` (None: the
            model's own, else ImageNet's; `[0.0]` / `[1.0]` only scale pixels to [0, 1], the seeds'
            `ToTensor()`), `cache_images`, `bad_images`, `val_split` / `split_seed` (a seeded
            stratified split when the source has no validation set of its own), `predict_root`,
            `predict_splits` (`[train, val]`: features for a whole data set).
    """

    def __init__(
        self,
        source: ClassificationSource = SyntheticShapes(),
        label_mode: LabelMode = "multiclass",
        channels: int = 3,
        image_size: int = 224,
        resize: int | None = None,
        augmentations: list[A.BasicTransform | A.BaseCompose] | None = None,
        batch_size: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_size, batch_size, **kwargs)
        self.save_hyperparameters()
        source = from_plain(source, ClassificationSource)  # {class_path, init_args}: saved hyperparameters
        if not isinstance(source, ClassificationSource):
            raise InputError(
                f"source must be a classification source (ImageFolder, CsvLabels, TorchvisionDataset, "
                f"SyntheticShapes from vision_lightning.data.classification_sources), got {type(source).__name__}"
            )
        if channels not in (1, 3):
            raise InputError(f"channels must be 1 or 3, got {channels}")
        if label_mode not in LABEL_MODES:
            raise InputError(f"label_mode must be multiclass, binary, multilabel or soft, got {label_mode!r}")
        if label_mode not in source.label_modes:
            raise InputError(
                f"label_mode {label_mode} needs one target per class, which {type(source).__name__} does not "
                "give: use CsvLabels with one label column per class"
            )
        self._refuse_for_streamed(source)
        self.source = source
        self.label_mode = label_mode
        self.channels = channels
        self.resize = resize
        self.augmentations = augmentations
        self._sources: dict[str, Split] = {}
        self._memory: dict[tuple, MemorySplit] = {}  # (split, image_size, resize): decoded with in_memory
        self.class_names = source.classes(label_mode)
        if label_mode == "binary" and len(self.class_names) != 2:
            raise InputError(f"label_mode binary needs 2 classes, the data has {len(self.class_names)}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def preprocessing(self) -> dict[str, Any]:
        """The base's (image size, mean, std) plus channels, eval resize, class names and label mode."""
        return {
            **super().preprocessing(),
            "channels": self.channels,
            "resize": self.resize,
            "class_names": list(self.class_names),
            "label_mode": self.label_mode,
        }

    # ----------------------------------------------------------------- splits
    def _stratify_keys(self, targets: Sequence[Any]) -> list:
        if self.label_mode == "soft":
            return [int(np.argmax(t)) for t in targets]
        if self.label_mode == "multilabel":
            # Exact label combinations are often unique; stratify on each row's rarest positive
            # label instead (-1: none), which keeps rare labels in both sets.
            counts = np.sum(targets, axis=0)
            return [int(min(np.flatnonzero(t), key=lambda c: counts[c])) if t.any() else -1 for t in targets]
        return list(targets)

    def _build_sources(self) -> dict[str, Split]:
        """{split: (samples, indices)} for train, val and (when there is one) test: the source's
        splits, with validation split off the training set when the source has none."""
        sources = self.source.splits(self.class_names, self.label_mode, self.channels, self.image_size)
        if "val" not in sources:
            train, indices = sources["train"]
            keys = self._stratify_keys([train.targets[i] for i in indices])  # type: ignore[attr-defined]
            keep, val = stratified_split(keys, self.val_split, self.split_seed)
            sources["train"] = (train, [indices[i] for i in keep])
            sources["val"] = (train, [indices[i] for i in val])
        return sources

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        self.source.prepare()

    def setup(self, stage: str | None = None) -> None:
        if not self._sources:
            sources = self._build_sources()
            # in_memory checks a split's files when it decodes them, not when its cache is read
            self._sources = sources if self.in_memory is not None else self._without_bad_images(sources)
            if self.cache_images:
                self._sources = self._cached(self._sources)
        if stage == "predict" and self.predict_root is not None:
            self._sources["predict"] = self._predict_root_split(self.channels)

    def _without_bad_images(self, sources: dict[str, Split]) -> dict[str, Split]:
        """Check every image file of every split at once, so one report names all bad files."""
        paths = list(dict.fromkeys(
            source.paths[i] for source, indices in sources.values() if isinstance(source, FileSource) for i in indices
        ))  # fmt: skip
        if not paths:
            return sources
        good = {paths[i] for i in drop_bad_images(paths, self.bad_images, repr(self.source))}
        for split, (source, indices) in sources.items():
            if isinstance(source, FileSource):
                kept = [i for i in indices if source.paths[i] in good]
                if not kept:
                    raise InputError(
                        f"the {split} set has no readable images left after skipping unreadable ones"
                    )
                sources[split] = (source, kept)
        return sources

    def _dataset(self, split: str, train: bool = False) -> TransformedDataset | MemoryDataset:
        if not self._sources:
            self.setup()
        if split == "predict" and self.predict_root is not None and "predict" not in self._sources:
            self.setup("predict")  # predict_dataloader() called without setup("predict")
        name = self._available_split(self._sources, split)
        if self.in_memory is not None and not (name == "predict" and self.predict_root is not None):
            return self._memory_dataset(name, train)
        source, indices = self._sources[name]
        transform = build_transform(
            self.image_size,
            None if train else self.resize,
            self.augmentations if train else None,
            self.mean,
            self.std,
            self.channels,
        )
        return TransformedDataset(source, indices, transform, target_key="label")

    def _memory_dataset(self, split: str, train: bool) -> MemoryDataset:
        """Split `split` decoded into memory at the current size (training: resized to `image_size`;
        evaluation: by the `resize` rule), from the disk cache when it holds it (data/in_memory.py)."""
        import albumentations as A

        resize = None if train else self.resize
        key = (split, self.image_size, resize)
        if key not in self._memory:
            source, indices = self._sources[split]
            place = {
                "module": "classification", "split": split, "source": repr(self.source),
                "source_args": self.source.init_args, "image_size": self.image_size, "resize": resize,
                "channels": self.channels, "bad_images": self.bad_images,
            }  # fmt: skip
            transform = A.Compose(resize_steps(self.image_size, resize))

            def build() -> dict[str, Any]:
                kept = self._without_bad_images({split: (source, list(indices))})[split][1]
                check_fits(len(kept), self.channels, self.image_size, f"the {split} set")
                return {**decode_split(source, kept, transform), "indices": list(kept)}

            shape = (self.channels, self.image_size, self.image_size)
            data = load_split(self.in_memory, place, source, indices, build, shape)
            kept = [int(i) for i in data["indices"]]
            targets = source.targets  # type: ignore[attr-defined]  (labels stay current: not cached)
            self._memory[key] = MemorySplit(
                data["images"],
                kept,
                list(data["names"]),
                targets=torch.as_tensor(np.asarray([targets[i] for i in kept])),
            )
            self._sources[split] = (source, kept)
        return MemoryDataset(self._memory[key], target_key="label")
