"""SuperResDataModule: folders of HR images (LR made by bicubic downscaling, or paired LR folders) or
synthetic textures.

Batches are float [0, 1] RGB tensors (not ImageNet-normalised): `{"lr", "hr", "path"}` for train,
validation and test, `{"lr", "path"}` for predict. Training items are random aligned crops, `image_size`
HR pixels square and `image_size // scale` LR, under a random one of the 8 symmetries of the square;
validation, test and predict use whole images one at a time (sizes differ), HR cropped to a multiple
of `scale` (BasicSR's `mod_crop`). LR images are made as the literature makes them: antialiased
bicubic (the PIL / MATLAB kernel) rounded to 8-bit levels, as if saved as PNG.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vision_lightning.data.base import Split, VisionDataModule
from vision_lightning.data.datasets import FileSource, SampleSource, WholeImages
from vision_lightning.data.splits import group_split
from vision_lightning.data.textures import SyntheticTextures, TextureSource
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.images import (
    drop_bad_images,
    image_size_of,
    list_images,
    read_image,
    readable_images,
    to_float_tensor,
)
from vision_lightning.utils.resize import bicubic_resize, mod_crop

SCALES = (2, 3, 4)
BAD_IMAGES = ("skip", "error", "off")


# ----------------------------------------------------------------------------- image operations
def dihedral(image: Tensor, transform: int) -> Tensor:
    """Symmetry `transform` (0..7) of the square applied to (..., H, W): rotate by 90 degrees
    `transform % 4` times, then flip left-right when `transform >= 4`. 0 is the identity."""
    out = torch.rot90(image, transform % 4, dims=(-2, -1))
    return out.flip(-1) if transform >= 4 else out


def downscale(hr: Tensor, scale: int) -> Tensor:
    """The LR image of an HR image (C, H, W), H and W multiples of `scale`: antialiased bicubic,
    quantised to 8-bit levels as an LR file would be."""
    h, w = hr.shape[-2:]
    return bicubic_resize(hr[None], (h // scale, w // scale), quantize=True)[0]


def _random_int(high: int) -> int:
    """Uniform in [0, high) from torch's generator: seeded per worker and epoch by the DataLoader (and
    reproducibly by `seed_everything(workers=True)`), so crops differ between epochs and workers."""
    return int(torch.randint(high, ()).item())


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


# ----------------------------------------------------------------------------- datasets
class SuperResCrops(Dataset):
    """Training items: `patches_per_image` random crops of every image per epoch, `{"lr", "hr", "path"}`.

    Without an LR file the HR crop (any position) is transformed, then downscaled; with one, the LR
    crop at (y, x) and the HR crop at (y * scale, x * scale) get the same transform.
    """

    def __init__(
        self,
        source: SampleSource,
        indices: Sequence[int],
        hr_size: int,
        scale: int,
        patches_per_image: int = 1,
        augment: bool = True,
    ) -> None:
        self.source, self.indices = source, list(indices)
        self.hr_size, self.scale = hr_size, scale
        self.patches_per_image, self.augment = patches_per_image, augment

    def __len__(self) -> int:
        return len(self.indices) * self.patches_per_image

    def __getitem__(self, index: int) -> dict[str, Any]:
        hr, lr, name = self.source.load(self.indices[index % len(self.indices)])
        size, scale = self.hr_size, self.scale
        reference, crop = (hr, size) if lr is None else (lr, size // scale)
        h, w = reference.shape[:2]
        if h < crop or w < crop:  # setup checks sizes; this guards images changed since
            raise InputError(
                f"image {name} is {w}x{h} pixels, smaller than the {crop}x{crop} training crop: lower image_size"
            )
        y, x = _random_int(h - crop + 1), _random_int(w - crop + 1)
        transform = _random_int(8) if self.augment else 0
        if lr is None:
            hr_crop = dihedral(to_float_tensor(hr[y : y + size, x : x + size]), transform)
            lr_crop = downscale(hr_crop, scale)
        else:
            lr_crop = dihedral(to_float_tensor(lr[y : y + crop, x : x + crop]), transform)
            top, left = y * scale, x * scale
            hr_crop = dihedral(to_float_tensor(hr[top : top + size, left : left + size]), transform)
        return {"lr": lr_crop.contiguous(), "hr": hr_crop.contiguous(), "path": name}


class SuperResImages(Dataset):
    """Whole images for validation and test, `{"lr", "hr", "path"}`: HR cropped to a multiple of `scale`
    and its LR file or bicubic downscale. `with_hr=False` leaves HR out (predicting a test set)."""

    def __init__(
        self, source: SampleSource, indices: Sequence[int], scale: int, with_hr: bool = True
    ) -> None:
        self.source, self.indices, self.scale, self.with_hr = source, list(indices), scale, with_hr

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        hr, lr, name = self.source.load(self.indices[index])
        hr_tensor = mod_crop(to_float_tensor(hr), self.scale)
        lr_tensor = to_float_tensor(lr) if lr is not None else downscale(hr_tensor, self.scale)
        item: dict[str, Any] = {"lr": lr_tensor, "path": name}
        if self.with_hr:
            item["hr"] = hr_tensor.contiguous()
        return item


def _whole(source: SampleSource) -> Split:
    return source, list(range(len(source)))


# ----------------------------------------------------------------------------- data module
class SuperResDataModule(VisionDataModule):
    """Super-resolution data: HR image folders, optionally with paired LR folders, or synthetic textures.

    Args:
        scale: the upscaling factor, 2, 3 or 4.
        train_root / val_root / test_root: folders of HR images (searched recursively), e.g. DIV2K's
            `DIV2K_train_HR`, BSDS200 + T91, Set5 / Set14 for testing.
        train_lr_root / val_lr_root / test_lr_root: folders of the matching LR images, when the LR
            images are given (DIV2K's `DIV2K_train_LR_bicubic/X4`); otherwise LR images are made by
            antialiased bicubic downscaling. LR files are matched to HR files by name: `baby.png`,
            `babyx4.png` or `baby_x4.png` for HR `baby.png`; each HR image must be exactly `scale`
            times its LR image.
        predict_root: folder of LR images to upscale (default: the LR images of the test set, else
            of validation).
        predict_splits: predict these splits instead (`[val, test]`), one loader each.
        val_split / split_seed: without `val_root`, this fraction of the training images (at least
            one; seeded) is held out as whole-image validation; 0 means no validation.
        synthetic_samples: > 0 trains on that many synthetic textures of `synthetic_size` pixels
            (no folders then, but for `predict_root`), validating and testing on a separate seeded set
            of max(4, synthetic_samples // 8).
        image_size: the HR training crop, a multiple of `scale` (LR crops are `image_size // scale`);
            every training image must be at least this large.
        batch_size: training crops per batch; validation, test and predict use whole images, one per
            batch.
        patches_per_image: random crops per training image per epoch, so that a small set (BSDS200's
            200 images) still makes epochs long enough to learn from.
        augment: a random one of the 8 flips and 90-degree rotations per training crop.
        bad_images: unreadable files are skipped with a warning naming them (`skip`), stop the run
            (`error`), or are not looked for (`off`).
        cache_images: decode every image once into memory (SR sets are small; turn off for DIV2K-sized
            sets, 800 2K images are about 5 GiB decoded).
    """

    def __init__(
        self,
        scale: int = 4,
        train_root: str | None = None,
        val_root: str | None = None,
        test_root: str | None = None,
        predict_root: str | None = None,
        train_lr_root: str | None = None,
        val_lr_root: str | None = None,
        test_lr_root: str | None = None,
        val_split: float = 0.1,
        split_seed: int = 42,
        synthetic_samples: int = 0,
        synthetic_size: int = 128,
        image_size: int = 96,
        batch_size: int = 16,
        patches_per_image: int = 1,
        augment: bool = True,
        bad_images: Literal["skip", "error", "off"] = "skip",
        cache_images: bool = True,
        num_workers: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        predict_splits: list[str] | None = None,
    ) -> None:
        super().__init__(
            image_size, batch_size, num_workers, pin_memory, persistent_workers, None, None, predict_splits
        )
        if scale not in SCALES:
            raise InputError(f"scale must be 2, 3 or 4, got {scale}")
        self.scale = scale
        self._check_image_size()
        roots = {
            "train_root": train_root, "val_root": val_root, "test_root": test_root,
            "predict_root": predict_root, "train_lr_root": train_lr_root, "val_lr_root": val_lr_root,
            "test_lr_root": test_lr_root,
        }  # fmt: skip
        given = [name for name, value in roots.items() if value]
        if synthetic_samples < 0:
            raise InputError(f"synthetic_samples must not be negative, got {synthetic_samples}")
        folders = [name for name in given if name != "predict_root"]  # predicting a folder is fine
        if synthetic_samples and folders:
            raise InputError(
                f"synthetic_samples {synthetic_samples} trains on synthetic textures, so {folders[0]} must "
                "not be set: set synthetic_samples 0 to use folders"
            )
        if synthetic_samples and synthetic_size < image_size:
            raise InputError(
                f"synthetic_size {synthetic_size} is smaller than the training crop image_size {image_size}"
            )
        if not synthetic_samples and not given:
            raise InputError(
                "SuperResDataModule needs train_root (a folder of HR images), or synthetic_samples > 0"
            )
        for split in ("train", "val", "test"):
            if roots[f"{split}_lr_root"] and not roots[f"{split}_root"]:
                raise InputError(f"{split}_lr_root is set but {split}_root (its HR images) is not")
        if not 0.0 <= val_split < 1.0:
            raise InputError(f"val_split must be at least 0 and below 1, got {val_split}")
        if patches_per_image < 1:
            raise InputError(f"patches_per_image must be at least 1, got {patches_per_image}")
        if bad_images not in BAD_IMAGES:
            raise InputError(f"bad_images must be 'skip', 'error' or 'off', got {bad_images!r}")
        self.train_root, self.val_root, self.test_root = _path(train_root), _path(val_root), _path(test_root)
        self.predict_root = _path(predict_root)
        self.train_lr_root, self.val_lr_root = _path(train_lr_root), _path(val_lr_root)
        self.test_lr_root = _path(test_lr_root)
        self.val_split, self.split_seed = val_split, split_seed
        self.synthetic_samples, self.synthetic_size = synthetic_samples, synthetic_size
        self.patches_per_image, self.augment = patches_per_image, augment
        self.bad_images, self.cache_images = bad_images, cache_images
        self._sources: dict[str, Split] = {}
        self._built = False
        self._train_sizes: dict[str, tuple[int, int]] = {}  # (height, width) of every training image

    @property
    def lr_size(self) -> int:
        """The LR training crop size."""
        return self.image_size // self.scale

    def _check_image_size(self) -> None:
        if self.image_size % self.scale:
            raise InputError(
                f"image_size {self.image_size} must be a multiple of scale {self.scale} "
                f"(e.g. {max(self.image_size // self.scale, 1) * self.scale})"
            )

    def _check_crop_fits(self) -> None:
        """Every training image must hold an `image_size` crop; names the ones that do not."""
        size = self.image_size
        small = {name: hw for name, hw in self._train_sizes.items() if min(hw) < size}
        if not small:
            return
        shown = "; ".join(f"{name} is {w}x{h}" for name, (h, w) in list(small.items())[:5])
        more = f" (and {len(small) - 5} more)" if len(small) > 5 else ""
        fits = min(min(hw) for hw in self._train_sizes.values()) // self.scale * self.scale
        hint = f"lower image_size to {fits} or less" if fits >= self.scale else "lower image_size"
        raise InputError(
            f"{len(small)} training image(s) are smaller than the {size}x{size} HR crop (image_size {size}): "
            f"{shown}{more}; {hint}, or remove the small images"
        )

    # ----------------------------------------------------------------- sources
    def _folder(self, split: str, root: Path, lr_root: Path | None) -> Split:
        """The readable HR images of `root` (with their LR files from `lr_root`), sizes checked."""
        if lr_root is None:
            paths, keep = readable_images(root, self.bad_images, f"{split}_root {root}")
            source: FileSource | PairedSuperResSource = FileSource(paths, None)
            sizes = _sizes([paths[i] for i in keep])
        else:
            paths = list_images(root)
            if not paths:
                raise InputError(f"{split}_root {root} has no images")
            lr_paths = pair_lr_files(paths, lr_root, self.scale)
            files = paths + lr_paths
            good = {
                files[i] for i in drop_bad_images(files, self.bad_images, f"{split}_root {root} / {lr_root}")
            }
            keep = [i for i in range(len(paths)) if paths[i] in good and lr_paths[i] in good]
            source = PairedSuperResSource(paths, lr_paths)
            sizes = _sizes([paths[i] for i in keep])
            self._check_pairs([(paths[i], lr_paths[i]) for i in keep], sizes)
        if not keep:
            raise InputError(
                f"{split}_root {root} has no readable images left after skipping unreadable ones"
            )
        if split == "train":
            self._train_sizes = {str(paths[i]): hw for i, hw in zip(keep, sizes)}
        return source, keep

    def _check_pairs(self, pairs: list[tuple[Path, Path]], hr_sizes: list[tuple[int, int]]) -> None:
        """Each HR image must be `scale` times its LR image; names every pair that is not."""
        lr_sizes = _sizes([lr for _, lr in pairs])
        s = self.scale
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

    def _build_sources(self) -> dict[str, Split]:
        if self.synthetic_samples:
            count, size = self.synthetic_samples, self.synthetic_size
            train = TextureSource(SyntheticTextures(count, size, self.split_seed), "synthetic")
            held_out = SyntheticTextures(max(4, count // 8), size, self.split_seed + 1)
            self._train_sizes = {"synthetic textures": (size, size)}
            return {"train": _whole(train), "val": _whole(TextureSource(held_out, "synthetic_val"))}
        sources: dict[str, Split] = {}
        if self.train_root is not None:
            source, keep = self._folder("train", self.train_root, self.train_lr_root)
            if self.val_root is None and self.val_split > 0:
                train, val = group_split([source.paths[i] for i in keep], self.val_split, self.split_seed)
                sources["train"] = (source, [keep[i] for i in train])
                sources["val"] = (source, [keep[i] for i in val])
                held_out = {source.paths[keep[i]] for i in val}
                self._train_sizes = {k: v for k, v in self._train_sizes.items() if k not in held_out}
            else:
                sources["train"] = (source, keep)
        if self.val_root is not None:
            sources["val"] = self._folder("val", self.val_root, self.val_lr_root)
        if self.test_root is not None:
            sources["test"] = self._folder("test", self.test_root, self.test_lr_root)
        return sources

    # ----------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        """Find, check and (with `cache_images`) decode the images once; predict images on demand."""
        if not self._built:
            sources = self._build_sources()
            if "train" in sources:
                self._check_crop_fits()
            self._sources = self._cached(sources) if self.cache_images and sources else sources
            self._built = True
        if stage == "predict" and self.predict_root is not None and "predict" not in self._sources:
            paths, keep = readable_images(
                self.predict_root, self.bad_images, f"predict_root {self.predict_root}"
            )
            self._sources["predict"] = (FileSource(paths, None), keep)

    def _dataset(self, split: str, train: bool = False) -> Dataset:
        self.setup("predict" if split == "predict" else None)
        if split == "predict" and "predict" in self._sources:
            return WholeImages(*self._sources["predict"], key="lr")
        key = self._available_split(self._sources, split)
        if key not in self._sources:
            raise InputError(_missing_split_message(split))
        source, indices = self._sources[key]
        if split == "train":
            self._check_image_size()  # image_size may have changed since (progressive resizing)
            self._check_crop_fits()
            return SuperResCrops(
                source, indices, self.image_size, self.scale, self.patches_per_image, self.augment and train
            )
        return SuperResImages(source, indices, self.scale, with_hr=split != "predict")

    def _loader(self, dataset: Dataset, train: bool = False, batch_size: int | None = None) -> DataLoader:
        """Training batches of `batch_size` crops; whole images, whose sizes differ, one at a time."""
        return super()._loader(dataset, train, batch_size if train else 1)

    def val_dataloader(self) -> DataLoader | list:
        """Whole validation images; `[]` (Lightning: no validation) with val_split 0 and no val_root."""
        self.setup()
        if "val" not in self._sources:
            return []
        return self._loader(self._dataset("val"))


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _sizes(paths: Sequence[str | Path]) -> list[tuple[int, int]]:
    """(height, width) of every file from its header, read in parallel threads."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(image_size_of, paths))


def _missing_split_message(split: str) -> str:
    if split == "train":
        return "there are no training images: set train_root (a folder of HR images) or synthetic_samples"
    if split == "predict":
        return "there is nothing to predict: set predict_root (LR images), test_root or val_root"
    return f"there are no {split} images: set {split}_root (or train_root with val_split > 0)"
