"""Where super-resolution images come from, chosen in YAML by `class_path`:

- `SuperResFolders`: folders of HR images per split, each optionally with a folder of its LR images
  (otherwise LR images are made by bicubic downscaling);
- `SyntheticTextureImages`: generated textures with fine detail (no download: quickstart, tests).

```yaml
source:
  class_path: vision_lightning.data.SuperResFolders
  init_args: {train_root: data/DIV2K_train_HR, train_lr_root: data/DIV2K_train_LR_bicubic/X4}
```

Each source checks its own arguments when it is made and builds the splits when the data module sets
up (`build`): `{"train" | "val" | "test": (sample source, indices)}`, sample sources loading
`(HR image, LR image or None, name)`, and the (height, width) of every training image, which the data
module compares with its crop. Reading files waits for `build`, so a data module whose folders are
elsewhere can still predict a folder of its own.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vision_lightning.data.base import BadImages, Split
from vision_lightning.data.image_sets import folder_split, hold_out, texture_splits
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.images import drop_bad_images, image_size_of, list_images, read_image


@dataclass(frozen=True)
class SuperResSplits:
    """What a source builds: the splits, and (height, width) of every training image by name."""

    splits: dict[str, Split]
    train_sizes: dict[str, tuple[int, int]]


class SuperResSource(ABC):
    """Base of the super-resolution data sources (see the module docstring)."""

    def check(self, scale: int, image_size: int) -> None:  # noqa: B027 (optional hook, no-op by default)
        """Refuse data-module settings this source cannot serve, before any file is read."""

    @abstractmethod
    def build(self, scale: int, val_split: float, split_seed: int, bad_images: BadImages) -> SuperResSplits:
        """The splits at `scale`; without a validation set of its own, `val_split` of the training
        images (seeded by `split_seed`) are held out; unreadable images handled as `bad_images` says."""


# ----------------------------------------------------------------------------- pairing LR files
def lr_stem_key(stem: str, scale: int) -> str:
    """The HR file stem an LR file stem stands for: `babyx4`, `baby_x4`, `baby-x4` and `baby` all stand
    for `baby` at scale 4 (BasicSR's Set5/Set14 and DIV2K names); `babyx2` does not."""
    match = re.fullmatch(rf"(.+?)[_-]?[xX]{scale}", stem)
    return match.group(1) if match else stem


def pair_lr_files(hr_paths: Sequence[Path], lr_root: Path, scale: int) -> list[Path]:
    """The LR file of every HR file, matched by file stem (see `lr_stem_key`); LR files without an
    HR image are ignored."""
    lr_paths = list_images(lr_root)
    if not lr_paths:
        raise InputError(f"LR folder {lr_root} has no images")
    by_key: dict[str, Path] = {}
    for path in lr_paths:
        key = lr_stem_key(path.stem, scale)
        if key in by_key:
            raise InputError(
                f"LR files {by_key[key]} and {path} both match HR images named {key!r}: keep one per HR image"
            )
        by_key[key] = path
    stems: dict[str, Path] = {}
    for path in hr_paths:
        if path.stem in stems:
            raise InputError(
                f"HR images {stems[path.stem]} and {path} have the same name, so their LR files cannot "
                "be told apart: rename one"
            )
        stems[path.stem] = path
    missing = [str(p) for p in hr_paths if p.stem not in by_key]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        raise InputError(
            f"{len(missing)} HR image(s) have no LR file in {lr_root}: {shown}; an LR file is matched by "
            f"name (for HR baby.png: baby.png, babyx{scale}.png or baby_x{scale}.png)"
        )
    return [by_key[p.stem] for p in hr_paths]


class PairedSuperResSource:
    """HR files and their LR files: `(hr image, lr image, hr path)`."""

    def __init__(self, hr_paths: Sequence[str | Path], lr_paths: Sequence[str | Path]) -> None:
        self.paths = [str(p) for p in hr_paths]
        self.lr_paths = [str(p) for p in lr_paths]

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> tuple[np.ndarray, Any, str]:
        return read_image(self.paths[index]), read_image(self.lr_paths[index]), self.paths[index]


# ----------------------------------------------------------------------------- folders
@dataclass(frozen=True)
class SuperResFolders(SuperResSource):
    """Folders of HR images (searched recursively), e.g. DIV2K's `DIV2K_train_HR`, BSDS200 + T91 to
    train, Set5 / Set14 to test.

    Args:
        train_root / val_root / test_root: the HR images of each split; without `val_root`, the data
            module's `val_split` of the training images is held out as whole-image validation.
        train_lr_root / val_lr_root / test_lr_root: the matching LR images, when they are given
            (DIV2K's `DIV2K_train_LR_bicubic/X4`); otherwise LR images are made by antialiased bicubic
            downscaling. LR files are matched to HR files by name: `baby.png`, `babyx4.png` or
            `baby_x4.png` for HR `baby.png`; each HR image must be exactly `scale` times its LR image.
    """

    train_root: str | None = None
    val_root: str | None = None
    test_root: str | None = None
    train_lr_root: str | None = None
    val_lr_root: str | None = None
    test_lr_root: str | None = None

    def __post_init__(self) -> None:
        if not (self.train_root or self.val_root or self.test_root):
            raise InputError(
                "SuperResFolders needs train_root (a folder of HR images), val_root or test_root"
            )
        for split in ("train", "val", "test"):
            if getattr(self, f"{split}_lr_root") and not getattr(self, f"{split}_root"):
                raise InputError(f"{split}_lr_root is set but {split}_root (its HR images) is not")

    def build(self, scale: int, val_split: float, split_seed: int, bad_images: BadImages) -> SuperResSplits:
        splits: dict[str, Split] = {}
        train_sizes: dict[str, tuple[int, int]] = {}
        if self.train_root:
            source, keep, sizes = self._folder("train", scale, bad_images)
            splits.update(hold_out(source, keep, 0 if self.val_root else val_split, split_seed))
            train_sizes = {source.paths[i]: sizes[source.paths[i]] for i in splits["train"][1]}
        for split in ("val", "test"):
            if getattr(self, f"{split}_root"):
                source, keep, _ = self._folder(split, scale, bad_images)
                splits[split] = (source, keep)
        return SuperResSplits(splits, train_sizes)

    def _folder(
        self, split: str, scale: int, bad_images: BadImages
    ) -> tuple[Any, list[int], dict[str, tuple[int, int]]]:
        """The HR images of `split` (with their LR files), the readable ones, their (height, width)."""
        root, lr_root = Path(getattr(self, f"{split}_root")), getattr(self, f"{split}_lr_root")
        what = f"{split}_root {root}"
        if lr_root is None:
            source, keep = folder_split(root, what, bad_images)
            paths = [source.paths[i] for i in keep]
            return source, keep, dict(zip(paths, _sizes(paths)))
        paths = list_images(root)
        if not paths:
            raise InputError(f"{what} has no images")
        lr_paths = pair_lr_files(paths, Path(lr_root), scale)
        files = paths + lr_paths
        good = {files[i] for i in drop_bad_images(files, bad_images, f"{what} / {lr_root}")}
        keep = [i for i in range(len(paths)) if paths[i] in good and lr_paths[i] in good]
        if not keep:
            raise InputError(f"{what} has no readable images left after skipping unreadable ones")
        sizes = _sizes([paths[i] for i in keep])
        _check_pairs([(paths[i], lr_paths[i]) for i in keep], sizes, scale)
        paired = PairedSuperResSource(paths, lr_paths)
        return paired, keep, {paired.paths[i]: hw for i, hw in zip(keep, sizes)}


def _check_pairs(pairs: list[tuple[Path, Path]], hr_sizes: list[tuple[int, int]], scale: int) -> None:
    """Each HR image must be `scale` times its LR image; names every pair that is not."""
    lr_sizes = _sizes([lr for _, lr in pairs])
    s = scale
    wrong = [
        f"{hr} is {hw[1]}x{hw[0]} but {lr} is {lw[1]}x{lw[0]} (x{s}: {lw[1] * s}x{lw[0] * s})"
        for (hr, lr), hw, lw in zip(pairs, hr_sizes, lr_sizes)
        if hw != (lw[0] * s, lw[1] * s)
    ]
    if wrong:
        more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
        raise InputError(
            f"{len(wrong)} HR image(s) are not {s} times the size of their LR image (scale {s}): "
            f"{'; '.join(wrong[:3])}{more}"
        )


def _sizes(paths: Sequence[str | Path]) -> list[tuple[int, int]]:
    """(height, width) of every file from its header, read in parallel threads."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(image_size_of, paths))


# ----------------------------------------------------------------------------- synthetic
@dataclass(frozen=True)
class SyntheticTextureImages(SuperResSource):
    """Generated textures as HR images (`vision_lightning.data.SyntheticTextures`: gratings, sharp
    shapes, thin lines), the same on every machine; LR images are made by bicubic downscaling.

    Args:
        samples: textures to train on; a separate set of max(4, samples // 8) validates (and tests),
            so the data module's `val_split` does not apply.
        size: their size in pixels (square), at least the training crop `image_size`.
        seed: which textures (the validation set uses `seed + 1`).
    """

    samples: int = 64
    size: int = 128
    seed: int = 42

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise InputError(f"SyntheticTextureImages samples must be at least 1, got {self.samples}")
        if self.size < 8:
            raise InputError(f"SyntheticTextureImages size must be at least 8 pixels, got {self.size}")

    def check(self, scale: int, image_size: int) -> None:
        if self.size < image_size:
            raise InputError(
                f"SyntheticTextureImages size {self.size} is smaller than the training crop image_size "
                f"{image_size}"
            )

    def build(self, scale: int, val_split: float, split_seed: int, bad_images: BadImages) -> SuperResSplits:
        sizes = {"synthetic textures": (self.size, self.size)}
        return SuperResSplits(texture_splits(self.samples, self.size, self.seed), sizes)
