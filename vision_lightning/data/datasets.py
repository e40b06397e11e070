"""Indexable sources of (image, target, name) and the Dataset that transforms them into batches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from vision_lightning.data.synthetic import ShapeImages
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.images import read_image, to_float_tensor


class SampleSource(Protocol):
    def __len__(self) -> int: ...

    def load(self, index: int) -> tuple[np.ndarray, Any, str]:
        """(uint8 HxWxC image, target, name) of sample `index`."""
        ...


class FileSource:
    """Images on disk, with one target per file (None when unknown, as in predict folders)."""

    def __init__(self, paths: Sequence[str | Path], targets: Sequence[Any] | None, channels: int = 3) -> None:
        self.paths = [str(p) for p in paths]
        self.targets = list(targets) if targets is not None else [None] * len(self.paths)
        self.channels = channels

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> tuple[np.ndarray, Any, str]:
        return read_image(self.paths[index], self.channels), self.targets[index], self.paths[index]


class SyntheticSource:
    """Synthetic shapes, the shape being the class."""

    def __init__(self, shapes: ShapeImages, name: str = "synthetic") -> None:
        self.shapes, self.name = shapes, name

    def __len__(self) -> int:
        return len(self.shapes)

    @property
    def targets(self) -> list[int]:
        return self.shapes.labels

    def load(self, index: int) -> tuple[np.ndarray, Any, str]:
        image, label, _ = self.shapes.sample(index)
        return image, label, f"{self.name}/{index:06d}"


def source_item_names(source: Any, indices: Sequence[int]) -> list[str] | None:
    """The `"path"` of each item (a data set of `indices` of `source`) when the source lists its
    files, without reading them (prediction writers name outputs from the whole list), else None."""
    while isinstance(source, CachedSource):
        source = source.source
    paths = getattr(source, "paths", None)
    return [str(paths[i]) for i in indices] if isinstance(paths, list) else None


def skipped_paths(paths: Sequence[str | Path], keep: Sequence[int]) -> list[str]:
    """The paths not kept (the unreadable files a predict folder's checks dropped): prediction
    writers list them in their run record."""
    kept = set(keep)
    return [str(path) for i, path in enumerate(paths) if i not in kept]


class TransformedDataset(Dataset):
    """A subset of a source, transformed into a dict batch item `{"image", <target_key>, "path"}`."""

    def __init__(
        self,
        source: SampleSource,
        indices: Sequence[int] | None = None,
        transform: Callable | None = None,
        target_key: str = "label",
    ) -> None:
        self.source = source
        # A range stays one (a streamed split's millions of samples), anything else is copied.
        indices = range(len(source)) if indices is None else indices
        self.indices = indices if isinstance(indices, range) else list(indices)
        self.transform = transform
        self.target_key = target_key

    def __len__(self) -> int:
        return len(self.indices)

    def item_names(self) -> list[str] | None:
        return source_item_names(self.source, self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.item(*self.source.load(self.indices[index]))

    def item(self, image: np.ndarray, target: Any, name: str) -> dict[str, Any]:
        """The batch item of one loaded sample (also of a streamed one: data/streaming.py)."""
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        item: dict[str, Any] = {"image": image, "path": name}
        if target is not None:
            item[self.target_key] = torch.as_tensor(target)
        return item


class SegmentationDataset(TransformedDataset):
    """Image and mask transformed together: `{"image", "mask", "path", "size"}`, where `size` is the
    original (height, width) that predictions are resized back to; no "mask" when unknown."""

    def __init__(self, source: SampleSource, indices: Sequence[int] | None, transform: Callable) -> None:
        super().__init__(source, indices, transform, target_key="mask")

    def item(self, image: np.ndarray, mask: np.ndarray | None, name: str) -> dict[str, Any]:
        size = torch.tensor(image.shape[:2])
        if mask is None:
            return {"image": self.transform(image=image)["image"], "path": name, "size": size}
        out = self.transform(image=image, mask=mask)
        return {"image": out["image"], "mask": out["mask"], "path": name, "size": size}


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """`default_collate`, with a clear error when images of different sizes meet in one batch."""
    try:
        return default_collate(batch)
    except RuntimeError as error:
        if "equal size" not in str(error):
            raise
        sizes = ", ".join(f"{item['path']} {tuple(item['image'].shape[1:])}" for item in batch[:4])
        raise InputError(
            f"images of different sizes cannot share a batch ({sizes}): resize them (image_size, "
            "crop: false) or set batch_size 1 for whole-image evaluation"
        ) from None


class CachedSource:
    """Another source's samples decoded once, up front, and kept in memory.

    For small image sets (CIFAR-sized JPEG folders, ISBI's 30 images) decoding dominates an
    epoch; filled before the loaders fork their workers, the cache is shared with them.
    """

    def __init__(self, source: SampleSource, indices: Sequence[int], workers: int = 8) -> None:
        self.source = source
        unique = sorted(set(indices))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            self._samples = dict(zip(unique, pool.map(source.load, unique)))

    def __len__(self) -> int:
        return len(self.source)

    def load(self, index: int) -> tuple[np.ndarray, Any, str]:
        sample = self._samples.get(index)
        return sample if sample is not None else self.source.load(index)

    @property
    def nbytes(self) -> int:
        return sum(image.nbytes for image, _, _ in self._samples.values())


class WholeImages(Dataset):
    """Images of a source at full resolution as float tensors in [0, 1]: `{key: image, "path": name}`
    (photos to stylise, LR images to upscale); their sizes differ, so they go one per batch."""

    def __init__(self, source: SampleSource, indices: Sequence[int], key: str = "image") -> None:
        self.source, self.indices, self.key = source, list(indices), key

    def __len__(self) -> int:
        return len(self.indices)

    def item_names(self) -> list[str] | None:
        return source_item_names(self.source, self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, _, name = self.source.load(self.indices[index])
        return {self.key: to_float_tensor(image), "path": name}
