"""Unlabelled image sets, shared by the super-resolution and style-transfer sources: the readable
images of a folder, a seeded share of them held out for validation, and synthetic textures with a
validation set of their own.

A split is `(sample source, indices)`; sample sources load `(uint8 HxWx3 image, None, name)`.
"""

from __future__ import annotations

from pathlib import Path

from vision_lightning.data.base import BadImages, Split
from vision_lightning.data.datasets import FileSource
from vision_lightning.data.splits import group_split
from vision_lightning.data.textures import SyntheticTextures, TextureSource
from vision_lightning.utils.images import readable_images


def folder_split(root: str | Path, what: str, bad_images: BadImages) -> tuple[FileSource, list[int]]:
    """Every image under `root` (searched recursively) and the indices of the readable ones; `what`
    names the folder in messages (`train_root photos/`)."""
    paths, keep = readable_images(root, bad_images, what)
    return FileSource(paths, None), keep


def hold_out(source: FileSource, keep: list[int], val_split: float, seed: int) -> dict[str, Split]:
    """`{"train": ...}`, and with `val_split` > 0 a seeded `val_split` of the images (at least one)
    held out as `"val"`."""
    if val_split <= 0:
        return {"train": (source, keep)}
    train, val = group_split([source.paths[i] for i in keep], val_split, seed)
    return {"train": (source, [keep[i] for i in train]), "val": (source, [keep[i] for i in val])}


def texture_splits(samples: int, size: int, seed: int) -> dict[str, Split]:
    """`samples` synthetic textures of `size` pixels to train on (`synthetic/<index>`) and a separate
    seeded set of max(4, samples // 8) to validate on (`synthetic_val/<index>`)."""
    train = TextureSource(SyntheticTextures(samples, size, seed), "synthetic")
    val = TextureSource(SyntheticTextures(max(4, samples // 8), size, seed + 1), "synthetic_val")
    return {"train": (train, list(range(len(train)))), "val": (val, list(range(len(val))))}
