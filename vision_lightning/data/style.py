"""StyleTransferDataModule: one style image and content images from a source (`ContentFolders`, COCO in
Johnson et al., or `SyntheticTextureContent`: see `style_sources.py`).

Batches are `{"image", "path"}`, float [0, 1] RGB (not ImageNet-normalised; the perceptual network
normalises inside itself). Training content is a random square crop of the shorter side, resized to
`image_size` and randomly flipped (the same as resizing the shorter side to `image_size` and cropping,
with less to resize); validation takes the centre square; predict keeps images whole, one per batch.
The style image is read once and handed to the task by `style_tensor()`; predicting needs none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vision_lightning.data.base import Split, VisionDataModule
from vision_lightning.data.datasets import SampleSource, WholeImages
from vision_lightning.data.style_sources import ContentSource, SyntheticTextureContent
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.images import read_style_image, to_float_tensor
from vision_lightning.utils.resize import bicubic_resize


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
        source: where the content comes from: `ContentFolders` (train_root, val_root) or
            `SyntheticTextureContent` (the default: generated textures, no download).
        style_image: path of the style image (a painting); the CLI links it into the model. Needed
            to fit, validate or test (unless the model has its own), not to predict: a model from a
            checkpoint stylises without it.
        style_size: resize the style image so its shorter side is this many pixels (antialiased
            bicubic); None keeps it as it is. The style's brush strokes come out at this scale.
        val_split: without a validation set of the source's own (`val_root`), this fraction of the
            training images (at least one; seeded by `split_seed`) is held out; 0 means no validation.
        image_size: the square training and validation content size.
        batch_size: content images per training and validation batch; predict uses one image per batch
            (full-resolution images differ in size).
        **kwargs: `VisionDataModule`'s: `loader`, `cache_images` (small content sets only),
            `bad_images`, `split_seed`, `predict_root` (images to stylise at full resolution;
            default: the validation images; predicting it reads nothing of the source),
            `predict_splits`.

    Images are not normalised: `preprocessing()` says mean 0 and std 1 (pixels in [0, 1]).
    """

    def __init__(
        self,
        source: ContentSource = SyntheticTextureContent(),
        style_image: str | None = None,
        style_size: int | None = None,
        val_split: float = 0.1,
        image_size: int = 256,
        batch_size: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_size, batch_size, val_split=val_split, **kwargs)
        if not isinstance(source, ContentSource):
            raise InputError(
                f"source must be a ContentSource (ContentFolders, SyntheticTextureContent), got {source!r}"
            )
        if style_image is not None and not style_image:
            raise InputError("style_image must be the path of the style image (or null when only predicting)")
        if style_size is not None and style_size < 1:
            raise InputError(
                f"style_size must be positive (or null to keep the style image's size), got {style_size}"
            )
        self.source = source
        self.style_image = str(style_image) if style_image is not None else None
        self.style_size = style_size
        self._style: Tensor | None = None
        self._sources: dict[str, Split] = {}
        self._built = False
        # The style is the model's (the CLI links it; predicting needs none): Lightning refuses to log
        # data and model hyperparameters that disagree, as a model built in Python without it would.
        self.save_hyperparameters(ignore=["style_image", "style_size"])

    def style_tensor(self) -> Tensor:
        """The style image as (1, 3, H, W) float in [0, 1], resized by `style_size`; read once."""
        if self.style_image is None:
            raise InputError(
                "StyleTransferDataModule has no style_image: set it to the style to learn "
                "(needed to fit, validate or test)"
            )
        if self._style is None:
            self._style = read_style_image(self.style_image, self.style_size)
        return self._style.clone()

    def preprocessing(self) -> dict[str, Any]:
        """The base keys (mean 0, std 1: pixels in [0, 1], not normalised) and 3 channels: inference
        stylises whole RGB images."""
        return {**super().preprocessing(), "channels": 3}

    def _normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # content stays in [0, 1]; the loss network normalises

    # ----------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        """Read the style image (failing early when it cannot be read), then find and check content.
        Predicting needs no style, and predicting `predict_root` reads nothing of the source."""
        if stage != "predict" and self.style_image is not None:
            self.style_tensor()
        self._setup_splits(
            stage,
            lambda: self.source.build(self.image_size, self.val_split, self.split_seed, self.bad_images),
        )

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
        return "there are no training images: give the source a train_root (ContentFolders)"
    hint = "predict_root, or give the source val_root" if split == "predict" else "the source's val_root"
    return f"there are no images to {split} on: set {hint}, or train_root with val_split > 0"
