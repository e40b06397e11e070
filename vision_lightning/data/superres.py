"""SuperResDataModule: HR images from a source (`SuperResFolders`, optionally with paired LR folders,
or `SyntheticTextureImages`: see `superres_sources.py`), cut into training crops and whole images.

Batches are float [0, 1] RGB tensors (not ImageNet-normalised): `{"lr", "hr", "path"}` for train,
validation and test, `{"lr", "path"}` for predict. Training items are random aligned crops, `image_size`
HR pixels square and `image_size // scale` LR, under a random one of the 8 symmetries of the square;
validation, test and predict use whole images one at a time (sizes differ), HR cropped to a multiple
of `scale` (BasicSR's `mod_crop`). LR images are made as the literature makes them: antialiased
bicubic (the PIL / MATLAB kernel) rounded to 8-bit levels, as if saved as PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vision_lightning.data.base import Split, VisionDataModule
from vision_lightning.data.datasets import SampleSource, WholeImages
from vision_lightning.data.superres_sources import SuperResSource, SyntheticTextureImages
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.images import to_float_tensor
from vision_lightning.utils.resize import bicubic_resize, mod_crop

SCALES = (2, 3, 4)


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


# ----------------------------------------------------------------------------- data module
class SuperResDataModule(VisionDataModule):
    """Super-resolution data: HR images from `source`, LR images from paired files or bicubic downscaling.

    Args:
        source: where the images come from: `SuperResFolders` (HR folders per split, optionally with
            LR folders) or `SyntheticTextureImages` (the default: generated textures, no download).
        scale: the upscaling factor, 2, 3 or 4 (the CLI links it into the model).
        val_split: without a validation set of the source's own (`val_root`), this fraction of the
            training images (at least one; seeded by `split_seed`) is held out as whole-image
            validation; 0 means no validation.
        image_size: the HR training crop, a multiple of `scale` (LR crops are `image_size // scale`);
            every training image must be at least this large.
        batch_size: training crops per batch; validation, test and predict use whole images, one per
            batch.
        patches_per_image: random crops per training image per epoch, so that a small set (BSDS200's
            200 images) still makes epochs long enough to learn from.
        augment: a random one of the 8 flips and 90-degree rotations per training crop.
        cache_images: decode every image once into memory (SR sets are small; turn off for DIV2K-sized
            sets, 800 2K images are about 5 GiB decoded).
        **kwargs: `VisionDataModule`'s: `loader`, `bad_images`, `split_seed`, `predict_root` (LR
            images to upscale; default: the LR images of the test set, else of validation;
            predicting it reads nothing of the source), `predict_splits`.

    Images are not normalised: `preprocessing()` says mean 0 and std 1 (pixels in [0, 1]).
    """

    def __init__(
        self,
        source: SuperResSource = SyntheticTextureImages(),
        scale: int = 4,
        val_split: float = 0.1,
        image_size: int = 96,
        batch_size: int = 16,
        patches_per_image: int = 1,
        augment: bool = True,
        cache_images: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_size, batch_size, val_split=val_split, cache_images=cache_images, **kwargs)
        if not isinstance(source, SuperResSource):
            raise InputError(
                f"source must be a SuperResSource (SuperResFolders, SyntheticTextureImages), got {source!r}"
            )
        if scale not in SCALES:
            raise InputError(f"scale must be 2, 3 or 4, got {scale}")
        self.source, self.scale = source, scale
        self._check_image_size()
        source.check(scale, image_size)
        if patches_per_image < 1:
            raise InputError(f"patches_per_image must be at least 1, got {patches_per_image}")
        self.patches_per_image, self.augment = patches_per_image, augment
        self._sources: dict[str, Split] = {}
        self._built = False
        self._train_sizes: dict[str, tuple[int, int]] = {}  # (height, width) of every training image
        self.save_hyperparameters()

    @property
    def lr_size(self) -> int:
        """The LR training crop size."""
        return self.image_size // self.scale

    def preprocessing(self) -> dict[str, Any]:
        """The base keys (mean 0, std 1: pixels in [0, 1], not normalised), `scale`, and 3 channels:
        inference upscales whole RGB images."""
        return {**super().preprocessing(), "scale": self.scale, "channels": 3}

    def _normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # SR images stay in [0, 1]

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

    # ----------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        """Find, check and (with `cache_images`) decode the images once; predict images on demand.
        Predicting `predict_root` reads nothing of the source (its folders may be elsewhere)."""

        def build() -> dict[str, Split]:
            built = self.source.build(self.scale, self.val_split, self.split_seed, self.bad_images)
            self._train_sizes = built.train_sizes if "train" in built.splits else {}
            if "train" in built.splits:
                self._check_crop_fits()
            return built.splits

        self._setup_splits(stage, build)

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


def _missing_split_message(split: str) -> str:
    if split == "train":
        return "there are no training images: give the source a train_root (SuperResFolders)"
    if split == "predict":
        return "there is nothing to predict: set predict_root (LR images), or give the source test_root or val_root"
    return f"there are no {split} images: give the source {split}_root (or train_root with val_split > 0)"
