"""DetectionDataModule: images and boxes from a typed source, split, checked, augmented and batched.

Where the data comes from is a source chosen by `class_path` (data/detection_sources.py):
`YoloFolders`, `CocoJson`, `VocXml` or `SyntheticBoxes`. Every annotation is checked before
training (malformed lines and classes out of range are errors naming file and line, all at once;
boxes with no area or outside the image are dropped and boxes partly outside clipped, with one
warning each), unreadable images are skipped or fatal as `bad_images` says, and validation is a
seeded `val_split` of the training images when the data has no validation split of its own.

Batches (the detection contract, shared with DetectionModule):

    image:  float (N, 3, S, S), S = image_size, normalised with mean / std
    boxes:  list of N float (k_i, 4) xyxy tensors in input pixels     (not in predict batches)
    labels: list of N int64 (k_i,) class ids 0..K-1                   (not in predict batches)
    path:   list of N str
    size:   int64 (N, 2), each image's original (height, width)
    scale:  float (N, 4), (sx, sy, pad_x, pad_y): input = original * s + pad;
            `vision_lightning.utils.boxes.to_original` maps boxes back

Images are letterboxed (aspect kept, the long side S, padding centred, 0 after normalisation: the
mean colour) or stretched (`resize`). An image without objects has boxes (0, 4) and labels (0,).
Training items of `augment` (data/detection_transforms.py) carry the scale row of their plain resize.
A labelled split predicted (`predict_splits`, or the test / val fallback) keeps its boxes and labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from vision_lightning.data.base import Split, VisionDataModule
from vision_lightning.data.datasets import SampleSource, source_item_names
from vision_lightning.data.detection_sources import DetectionSource, SyntheticBoxes, as_source
from vision_lightning.data.detection_transforms import BoxAugment, DetectionTransform
from vision_lightning.data.splits import group_split
from vision_lightning.utils.boxes import RESIZE_MODES
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.hparams import from_plain
from vision_lightning.utils.images import drop_bad_images

ResizeMode = Literal["letterbox", "stretch"]


class DetectionDataset(Dataset):
    """Samples of a source as contract items: `{"image", "boxes", "labels", "path", "size", "scale"}`
    (no boxes and labels for unlabelled images)."""

    def __init__(self, source: SampleSource, indices: Sequence[int], transform: DetectionTransform) -> None:
        self.source, self.indices, self.transform = source, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def item_names(self) -> list[str] | None:
        return source_item_names(self.source, self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, target, name = self.source.load(self.indices[index])
        return {**self.transform(image, target), "path": name}


def detection_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images, sizes and scales; boxes and labels stay lists (their counts differ)."""
    batch: dict[str, Any] = {
        "image": torch.stack([item["image"] for item in items]),
        "path": [item["path"] for item in items],
        "size": torch.stack([item["size"] for item in items]),
        "scale": torch.stack([item["scale"] for item in items]),
    }
    if all("boxes" in item for item in items):
        batch["boxes"] = [item["boxes"] for item in items]
        batch["labels"] = [item["labels"] for item in items]
    return batch


class DetectionDataModule(VisionDataModule):
    """Detection data from a typed source (see the module docstring).

    Args:
        source: `YoloFolders`, `CocoJson`, `VocXml` or `SyntheticBoxes` (the default: 200 images of
            3 kinds of shapes), or a `DetectionSource` of one's own; also its `{class_path, init_args}`.
        class_names: names for the data's classes in id order: required (or num_classes) for YOLO
            data without classes.txt or YAML names; otherwise it renames them (same count).
        num_classes: the number of classes when the data does not name them (named "0", "1", ...).
        image_size: the square input side S (ProgressiveResizing changes it between epochs).
        resize: `letterbox` (keep the aspect ratio, pad) or `stretch`.
        augment: box-aware training augmentation (`BoxAugment`: flips, zoom, crop, colour jitter);
            None: none.
        batch_size: the training batch size.
        **kwargs: `VisionDataModule`'s: `loader`, `mean` / `std` (None: the model's, else ImageNet's),
            `cache_images`, `bad_images`, `val_split` / `split_seed`, `predict_root`, `predict_splits`.
            `in_memory` and `batch_augment` do not apply to detection.
    """

    def __init__(
        self,
        source: DetectionSource = SyntheticBoxes(),
        class_names: list[str] | None = None,
        num_classes: int | None = None,
        image_size: int = 320,
        resize: ResizeMode = "letterbox",
        augment: BoxAugment | None = None,
        batch_size: int = 8,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("batch_augment"):
            raise InputError(
                "batch_augment does not apply to detection: its flips and crops would not move the boxes; "
                "use augment (BoxAugment) instead"
            )
        if kwargs.get("in_memory"):
            raise InputError(
                "in_memory does not apply to detection: boxes stay with each sample; use cache_images to "
                "decode the images once"
            )
        super().__init__(image_size, batch_size, **kwargs)
        source = as_source(source)
        if resize not in RESIZE_MODES:
            raise InputError(f"resize must be letterbox or stretch, got {resize!r}")
        augment = from_plain(augment, BoxAugment)
        if augment is not None and not isinstance(augment, BoxAugment):
            raise InputError(f"augment must be a BoxAugment (or its fields as a mapping), got {augment!r}")
        self.source, self.resize, self.augment = source, resize, augment
        self.class_names = self._classes(class_names, num_classes)
        self.save_hyperparameters()
        for hparams in (self._hparams, self._hparams_initial):  # the checkpoint keeps the classes as resolved
            hparams.update(num_classes=self.num_classes, class_names=list(self.class_names))
        self._sources: dict[str, Split] = {}
        self._built = False

    # ----------------------------------------------------------------- classes
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _classes(self, class_names: list[str] | None, num_classes: int | None) -> list[str]:
        if class_names is not None:
            class_names = [str(n) for n in class_names]
            if not class_names or len(set(class_names)) != len(class_names):
                raise InputError(f"class_names must list distinct names, got {class_names}")
            if num_classes is not None and num_classes != len(class_names):
                raise InputError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
        if num_classes is not None and num_classes < 1:
            raise InputError(f"num_classes must be at least 1, got {num_classes}")
        found = self.source.classes()
        if found is None:
            if class_names is None and num_classes is None:
                raise InputError(
                    f"{self.source.location} does not name its classes (no classes.txt, no names in a data.yaml): "
                    "give class_names or num_classes"
                )
            return class_names or [str(i) for i in range(num_classes)]
        given = len(class_names) if class_names is not None else num_classes
        if given is not None and given != len(found):
            raise InputError(
                f"the data has {len(found)} classes ({', '.join(found)}) but class_names / num_classes give {given}"
            )
        return class_names or list(found)

    def preprocessing(self) -> dict[str, Any]:
        """The base keys (image size, mean, std) plus what inference needs: `resize` (letterbox or
        stretch, the padding centred), 3 channels and the class names (utils/letterbox.predict_batch)."""
        return {
            **super().preprocessing(),
            "resize": self.resize,
            "channels": 3,
            "class_names": list(self.class_names),
            "num_classes": self.num_classes,
        }

    # ----------------------------------------------------------------- splits
    def _build(self) -> dict[str, Split]:
        sources = self.source.splits(self.class_names, self.image_size)
        if "val" not in sources:
            train, indices = sources["train"]
            paths = getattr(train, "paths", None)
            keys = [paths[i] if paths else str(i) for i in indices]
            keep, val = group_split(keys, self.val_split, self.split_seed)
            sources["train"] = (train, [indices[i] for i in keep])
            sources["val"] = (train, [indices[i] for i in val])
        return self._checked(sources)

    def _checked(self, sources: dict[str, Split]) -> dict[str, Split]:
        """Drop unreadable images (or stop, as `bad_images` says), then compare every image's declared
        size with its file; every problem in one report."""
        for split, (source, indices) in sources.items():
            files = {i: source.files(i) for i in indices}  # type: ignore[attr-defined]
            listed = [path for i in indices for path in files[i]]
            if not listed:
                continue  # generated samples
            good = {
                listed[k]
                for k in drop_bad_images(
                    listed, self.bad_images, f"the {split} set of {self.source.location}"
                )
            }
            keep = [i for i in indices if all(path in good for path in files[i])]
            if not keep:
                raise InputError(f"the {split} set of {self.source.location} has no readable images left")
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
        self._setup_splits(stage, self._build)

    def _transform(self, train: bool) -> DetectionTransform:
        """Built when a loader is built, so a new loader follows `image_size` (ProgressiveResizing)."""
        return DetectionTransform(
            self.image_size, self.resize, self.mean, self.std, self.augment if train else None
        )

    def _dataset(self, split: str, train: bool = False) -> DetectionDataset:
        self.setup("predict" if split == "predict" else None)
        name = self._available_split(self._sources, split)
        source, indices = self._sources[name]
        return DetectionDataset(source, indices, self._transform(train))

    collate_fn = staticmethod(detection_collate)
