"""StyleTransferDataModule: one style image and a folder of content images (COCO in Johnson et al.), or
synthetic textures as content.

Batches are `{"image", "path"}`, float [0, 1] RGB (not ImageNet-normalised; the perceptual network
normalises inside itself). Training content is a random square crop of the shorter side, resized to
`image_size` and randomly flipped (the same as resizing the shorter side to `image_size` and cropping,
with less to resize); validation takes the centre square; predict keeps images whole, one per batch.
The style image is read once and handed to the task by `style_tensor()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vision_lightning.data.base import Split, VisionDataModule
from vision_lightning.data.datasets import FileSource, SampleSource, WholeImages
from vision_lightning.data.splits import group_split
from vision_lightning.data.textures import SyntheticTextures, TextureSource
from vision_lightning.utils.errors import InputError, MissingInputError
from vision_lightning.utils.images import (
    read_image,
    readable_images,
    to_float_tensor,
)
from vision_lightning.utils.resize import bicubic_resize


def resize_shorter_side(image: Tensor, size: int) -> Tensor:
    """(..., H, W) float image resized (antialiased bicubic) so that its shorter side is `size`."""
    h, w = image.shape[-2:]
    factor = size / min(h, w)
    target = (max(round(h * factor), 1), max(round(w * factor), 1))
    if target == (h, w):
        return image
    batched = image if image.dim() == 4 else image[None]
    out = bicubic_resize(batched, target)
    return out if image.dim() == 4 else out[0]


def read_style_image(path: str | Path, style_size: int | None = None) -> Tensor:
    """The style image at `path` as (1, 3, H, W) float in [0, 1], its shorter side resized to `style_size`."""
    style = to_float_tensor(read_image(path))[None]
    return resize_shorter_side(style, style_size) if style_size else style


class ContentCrops(Dataset):
    """Square content images of `image_size`, `{"image", "path"}`: a random square of the shorter side
    plus a random left-right flip in training, the centre square otherwise, resized to `image_size`."""

    def __init__(self, source: SampleSource, indices: Sequence[int], image_size: int, train: bool) -> None:
        self.source, self.indices, self.image_size, self.train = source, list(indices), image_size, train

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, _, name = self.source.load(self.indices[index])
        h, w = image.shape[:2]
        side = min(h, w)
        if self.train:  # torch's generator: seeded per worker and epoch by the DataLoader
            top, left = (int(torch.randint(extent - side + 1, ()).item()) for extent in (h, w))
        else:
            top, left = (h - side) // 2, (w - side) // 2
        square = to_float_tensor(image[top : top + side, left : left + side])
        if side != self.image_size:
            square = bicubic_resize(square[None], (self.image_size, self.image_size))[0]
        if self.train and torch.rand(()) < 0.5:
            square = square.flip(-1)
        return {"image": square.contiguous(), "path": name}


class StyleTransferDataModule(VisionDataModule):
    """Content images for fast style transfer, and the style image.

    Args:
        style_image: path of the style image (a painting).
        style_size: resize the style image so its shorter side is this many pixels (antialiased
            bicubic); None keeps it as it is. The style's brush strokes come out at this scale.
        train_root: folder of content images, searched recursively (COCO train2014 in the paper).
        val_root: folder of validation content images; without it `val_split` of the training images
            (at least one, seeded by `split_seed`) are held out; val_split 0 means no validation.
        predict_root: folder of images to stylise at full resolution (default: the validation images).
        predict_splits: predict these splits instead (`[train, val]`), one loader each.
        synthetic_samples: > 0 uses that many synthetic textures as content instead of folders, with
            a separate seeded set of max(4, synthetic_samples // 8) for validation.
        image_size: the square training and validation content size.
        batch_size: content images per training and validation batch; predict uses one image per batch
            (full-resolution images differ in size).
        bad_images: unreadable files are skipped with a warning naming them (`skip`), stop the run
            (`error`), or are not looked for (`off`).
        cache_images: decode every content image once into memory (for small content sets only).
    """

    def __init__(
        self,
        style_image: str,
        style_size: int | None = None,
        train_root: str | None = None,
        val_root: str | None = None,
        predict_root: str | None = None,
        val_split: float = 0.1,
        split_seed: int = 42,
        synthetic_samples: int = 0,
        image_size: int = 256,
        batch_size: int = 4,
        bad_images: Literal["skip", "error", "off"] = "skip",
        cache_images: bool = False,
        num_workers: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        predict_splits: list[str] | None = None,
    ) -> None:
        super().__init__(
            image_size, batch_size, num_workers, pin_memory, persistent_workers, None, None, predict_splits
        )
        if not style_image:
            raise InputError("style_image must be the path of the style image")
        if not Path(style_image).is_file():
            raise MissingInputError(f"style image {style_image} does not exist")
        if style_size is not None and style_size < 1:
            raise InputError(
                f"style_size must be positive (or null to keep the style image's size), got {style_size}"
            )
        roots = {"train_root": train_root, "val_root": val_root, "predict_root": predict_root}
        given = [name for name, value in roots.items() if value]
        if synthetic_samples < 0:
            raise InputError(f"synthetic_samples must not be negative, got {synthetic_samples}")
        if synthetic_samples and (train_root or val_root):
            raise InputError(
                f"synthetic_samples {synthetic_samples} uses synthetic content, so train_root and val_root "
                "must not be set: set synthetic_samples 0 to use folders"
            )
        if not synthetic_samples and not given:
            raise InputError(
                "StyleTransferDataModule needs train_root (a folder of content images), or synthetic_samples > 0"
            )
        if not 0.0 <= val_split < 1.0:
            raise InputError(f"val_split must be at least 0 and below 1, got {val_split}")
        if bad_images not in ("skip", "error", "off"):
            raise InputError(f"bad_images must be 'skip', 'error' or 'off', got {bad_images!r}")
        self.style_image, self.style_size = str(style_image), style_size
        self.train_root = Path(train_root) if train_root else None
        self.val_root = Path(val_root) if val_root else None
        self.predict_root = Path(predict_root) if predict_root else None
        self.val_split, self.split_seed = val_split, split_seed
        self.synthetic_samples = synthetic_samples
        self.bad_images, self.cache_images = bad_images, cache_images
        self._style: Tensor | None = None
        self._sources: dict[str, Split] = {}
        self._built = False

    def style_tensor(self) -> Tensor:
        """The style image as (1, 3, H, W) float in [0, 1], resized by `style_size`; read once."""
        if self._style is None:
            self._style = read_style_image(self.style_image, self.style_size)
        return self._style.clone()

    # ----------------------------------------------------------------- sources
    def _folder(self, split: str, root: Path) -> Split:
        paths, keep = readable_images(root, self.bad_images, f"{split}_root {root}")
        return FileSource(paths, None), keep

    def _build_sources(self) -> dict[str, Split]:
        if self.synthetic_samples:
            count, size = self.synthetic_samples, self.image_size
            train = TextureSource(SyntheticTextures(count, size, self.split_seed), "synthetic")
            val = TextureSource(
                SyntheticTextures(max(4, count // 8), size, self.split_seed + 1), "synthetic_val"
            )
            return {"train": (train, list(range(count))), "val": (val, list(range(len(val))))}
        sources: dict[str, Split] = {}
        if self.train_root is not None:
            source, keep = self._folder("train", self.train_root)
            if self.val_root is None and self.val_split > 0:
                train, val = group_split([source.paths[i] for i in keep], self.val_split, self.split_seed)
                sources["train"] = (source, [keep[i] for i in train])
                sources["val"] = (source, [keep[i] for i in val])
            else:
                sources["train"] = (source, keep)
        if self.val_root is not None:
            sources["val"] = self._folder("val", self.val_root)
        return sources

    # ----------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        """Read the style image (failing early when it cannot be read), then find and check content."""
        self.style_tensor()
        if not self._built:
            sources = self._build_sources()
            self._sources = self._cached(sources) if self.cache_images and sources else sources
            self._built = True
        if stage == "predict" and self.predict_root is not None and "predict" not in self._sources:
            self._sources["predict"] = self._folder("predict", self.predict_root)

    def _dataset(self, split: str, train: bool = False) -> Dataset:
        self.setup("predict" if split == "predict" else None)
        # Test and (without predict_root) predict use the validation images.
        key = split if split == "train" or split in self._sources else "val"
        if key not in self._sources:
            raise InputError(_missing_split_message(split))
        source, indices = self._sources[key]
        if split == "predict":
            return WholeImages(source, indices)
        return ContentCrops(source, indices, self.image_size, train=train)

    def val_dataloader(self) -> DataLoader | list:
        """Validation content at `image_size`; `[]` (Lightning: no validation) when there is none."""
        self.setup()
        if "val" not in self._sources:
            return []
        return self._loader(self._dataset("val"))

    def predict_dataloader(self) -> DataLoader | list[DataLoader]:
        """Whole images at full resolution, one per batch (their sizes differ); with
        `predict_splits`, each named split at `image_size`."""
        if self.predict_splits is not None:
            return super().predict_dataloader()
        return self._loader(self._dataset("predict"), batch_size=1)


def _missing_split_message(split: str) -> str:
    if split == "train":
        return "there are no training images: set train_root (content images) or synthetic_samples"
    hint = "predict_root, val_root" if split == "predict" else "val_root"
    return f"there are no images to {split} on: set {hint}, or train_root with val_split > 0"
