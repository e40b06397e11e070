"""The in-memory data path: a split decoded once into one uint8 tensor, batches indexed from it.

With `in_memory: true` a data module decodes each split it loads (train, val, test; also
`predict_splits`) into an (N, C, H, W) uint8 tensor at `image_size` (plus the labels, or masks
resized nearest-neighbour), through the same reader and resize rule as the worker path, and keeps
it in a disk cache (data/memory_cache.py) so that the next run reads one file instead of decoding
every image and checking every file again. A predict folder (`predict_root`) is read as before.

A batch is one indexing of that tensor (`MemoryDataset.__getitems__`: no worker processes, no
per-image transforms); it crosses to the device as uint8, and the data module's
`on_after_batch_transfer` augments training batches there (data/batch_augment.py) and converts
every batch to normalised floats. The training sampler is the seeded `EpochSampler` (this rank's
share under DDP), and each training batch carries the seed of its augmentation, made of the run's
seed, the epoch and the batch's first sample.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from vision_lightning.data.batch_augment import BatchAugmenter
from vision_lightning.data.memory_cache import cached, default_cache_dir, digest, file_stamps
from vision_lightning.data.seeding import _mix
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.transforms import channel_stats

log = logging.getLogger(__name__)

#: the key of a training batch's augmentation seed (removed when the batch is augmented)
SEED_KEY = "augment_seed"


@dataclass(frozen=True)
class InMemory:
    """The in-memory path's cache: `cache` decoded splits on disk, in `cache_dir` (default:
    `$VISION_LIGHTNING_CACHE`, else `~/.cache/vision_lightning`); `in_memory: true` takes both defaults."""

    cache: bool = True
    cache_dir: str | None = None

    @property
    def folder(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()


@dataclass
class MemorySplit:
    """A decoded split: uint8 images (N, C, H, W), their source indices and names; masks (N, H, W) or
    (N, K, H, W) and original sizes (N, 2) for segmentation; targets for classification."""

    images: Tensor
    indices: list[int]
    names: list[str]
    masks: Tensor | None = None
    sizes: Tensor | None = None
    targets: Tensor | None = None


class MemoryDataset(Dataset):
    """Batches of a `MemorySplit` by one indexing (`__getitems__`, which DataLoader calls with a
    batch's keys: indices, or `EpochSampler`'s (index, seed, epoch), which add the batch's seed)."""

    def __init__(self, split: MemorySplit, target_key: str = "label") -> None:
        self.split, self.target_key = split, target_key

    def __len__(self) -> int:
        return len(self.split.indices)

    def item_names(self) -> list[str]:
        return list(self.split.names)

    def __getitem__(self, key: int | tuple[int, int, int]) -> dict[str, Any]:
        return self.__getitems__([key])

    def __getitems__(self, keys: Sequence[int | tuple[int, int, int]]) -> dict[str, Any]:
        seeded = bool(keys) and isinstance(keys[0], tuple)
        positions = [key[0] for key in keys] if seeded else [int(key) for key in keys]  # type: ignore[index]
        index = torch.as_tensor(positions, dtype=torch.long)
        split = self.split
        batch: dict[str, Any] = {"image": split.images[index], "path": [split.names[i] for i in positions]}
        if split.targets is not None:
            batch[self.target_key] = split.targets[index]
        if split.masks is not None:
            batch["mask"] = split.masks[index]
        if split.sizes is not None:
            batch["size"] = split.sizes[index]
        if seeded:
            _, seed, epoch = keys[0]  # type: ignore[misc]
            batch[SEED_KEY] = _mix(seed, epoch, positions[0], 0xA06) & (2**63 - 1)
        return batch


def _whole_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The collate step of a memory loader: `__getitems__` made the batch already."""
    return batch


def memory_loader(
    dataset: MemoryDataset, batch_size: int, sampler: Sampler | None, drop_last: bool, pin_memory: bool
) -> DataLoader:
    """A loader that indexes whole batches of `dataset` in the training process (no workers)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=_whole_batch,
        drop_last=drop_last,
        num_workers=0,
        pin_memory=pin_memory,
    )


# ----------------------------------------------------------------------------- decoding
def decode_split(
    source: Any, indices: Sequence[int], transform: Callable, masks: bool = False, workers: int = 8
) -> dict[str, Any]:
    """Each sample of `source` at `indices` loaded and `transform`ed (albumentations geometry, uint8
    out; image and mask together when `masks`), stacked: {"images", "masks"?, "sizes"?, "names"}."""

    def one(index: int) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int], str]:
        image, target, name = source.load(index)
        out = transform(image=image, mask=target) if masks else transform(image=image)
        resized = out["image"]
        return (
            resized[..., None] if resized.ndim == 2 else resized,
            out.get("mask") if masks else None,
            tuple(image.shape[:2]),
            name,
        )

    with ThreadPoolExecutor(max_workers=workers) as pool:
        samples = list(pool.map(one, indices))
    shapes = {s[0].shape for s in samples}
    if len(shapes) > 1:  # only whole images (no resize) can differ
        first = samples[0]
        odd = next(s for s in samples if s[0].shape != first[0].shape)
        raise InputError(
            f"in_memory keeps whole images for random crops, and they must share one size: {first[3]} is "
            f"{first[2][0]}x{first[2][1]} but {odd[3]} is {odd[2][0]}x{odd[2][1]}; use the worker path "
            "(in_memory: false) for images of mixed sizes"
        )
    images = torch.from_numpy(np.stack([s[0] for s in samples])).permute(0, 3, 1, 2).contiguous()
    data: dict[str, Any] = {"images": images, "names": [s[3] for s in samples]}
    if masks:
        stacked = torch.from_numpy(np.stack([s[1] for s in samples]))
        data["masks"] = stacked.permute(0, 3, 1, 2).contiguous() if stacked.ndim == 4 else stacked
        data["sizes"] = torch.tensor([s[2] for s in samples])
    return data


def check_fits(count: int, channels: int, size: int, what: str) -> None:
    """Refuse a split whose decoded images would take more than half of this machine's memory."""
    needed = count * channels * size * size
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: nothing to compare with
        return
    if needed > total // 2:
        raise InputError(
            f"in_memory: {what} would take {needed / 2**30:.1f} GiB decoded at image_size {size}, more than half "
            f"of this machine's {total / 2**30:.1f} GiB: use the worker path (in_memory: false) or streaming"
        )


def source_stamps(source: Any, indices: Sequence[int]) -> Any:
    """What says a source's samples changed: its files' sizes and times (`files(i)` or `paths`), else
    nothing beyond its description (generated data, a torchvision set by name and split)."""
    if hasattr(source, "files"):
        return file_stamps(path for i in indices for path in source.files(i))
    paths = getattr(source, "paths", None)
    if isinstance(paths, list):
        return file_stamps(paths[i] for i in indices)
    return [type(source).__name__, getattr(source, "name", None), getattr(source, "split", None)]


def described_files(description: Any) -> Any:
    """File stamps of the existing files a source's arguments name (a CSV of labels or RLE masks)."""
    values = description.values() if isinstance(description, dict) else []
    files = [str(v) for v in values if isinstance(v, str | Path) and str(v) and os.path.isfile(v)]
    return file_stamps(files)


def load_split(
    options: InMemory,
    place: dict[str, Any],
    source: Any,
    indices: Sequence[int],
    build: Callable[[], dict[str, Any]],
    shape: tuple[int, int, int] | None,
) -> dict[str, Any]:
    """The decoded split from the cache (`options`) or `build()`; `place` describes it (see
    memory_cache), `shape` is each image's (C, H, W) for checking a cached file (None: any size)."""

    def check(stored: dict[str, Any]) -> str | None:
        images = stored.get("images")
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
            return "does not hold a uint8 tensor of images"
        if shape is not None and tuple(images.shape[1:]) != shape:
            return f"does not hold uint8 images of shape {shape}"
        if len(stored.get("names", [])) != len(images) or len(stored.get("indices", [])) != len(images):
            return "holds fewer names or indices than images"
        return None

    if not options.cache:
        return build()
    content = {"indices": digest(list(indices)), "files": digest(source_stamps(source, indices))}
    content["described"] = digest(described_files(place.get("source_args")))
    return cached(options.folder, place, content, build, check)


# ----------------------------------------------------------------------------- on the device
class DeviceBatches:
    """Turns memory batches into what the tasks expect, on the batch's device: training batches
    augmented (`augmenter`, when their seed says they are training batches), every image to float
    and normalised with `mean` / `std` (None: only scaled to [0, 1])."""

    def __init__(self, augmenter: BatchAugmenter | None) -> None:
        self.augmenter = augmenter
        self._stats: dict[tuple, tuple[Tensor, Tensor] | None] = {}

    def _normalisation(self, mean, std, channels: int, device: torch.device) -> tuple[Tensor, Tensor] | None:
        key = (tuple(mean or ()), tuple(std or ()), channels, device)
        if key not in self._stats:
            mean, std = channel_stats(mean, channels), channel_stats(std, channels)
            self._stats[key] = (
                None
                if mean is None or std is None
                else (
                    torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255.0,
                    torch.tensor(std, device=device).view(1, -1, 1, 1) * 255.0,
                )
            )
        return self._stats[key]

    def __call__(self, batch: dict[str, Any], mean, std) -> dict[str, Any]:
        batch = dict(batch)
        images = batch["image"]
        seed = batch.pop(SEED_KEY, None)
        draws = None
        if seed is not None and self.augmenter is not None:
            draws = self.augmenter.draw(len(images), images.shape[-2], images.shape[-1], int(seed))
            images, mask = self.augmenter.geometry(images, batch.get("mask"), draws)
            if mask is not None:
                batch["mask"] = mask
        stats = self._normalisation(mean, std, images.shape[1], images.device)
        images = images.float()
        images = images.div_(255.0) if stats is None else images.sub_(stats[0]).div_(stats[1])
        if draws is not None:
            images = self.augmenter.cutout(images, draws)
        batch["image"] = images
        return batch
