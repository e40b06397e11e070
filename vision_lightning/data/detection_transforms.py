"""Detection items: an image and its boxes brought to the square input together, augmented in training.

Built on torchvision's `transforms.v2` (images as `tv_tensors.Image`, boxes as `tv_tensors.BoundingBoxes`,
so every resize, pad, flip and crop moves the boxes as it moves the pixels). Every random draw comes
from torch's generator, which `SeededItems` seeds per (run seed, epoch, index): a seed gives the
same items with any number of workers.

Training with `augment` (a `BoxAugment`), in this order: colour jitter on the original image, the
letterbox / stretch to `image_size`, flips, a random zoom (out: the image shrinks onto a padded
canvas; in: a random window of the enlarged image), a random crop resized back; boxes that keep less
than `min_visibility` of their area through a crop are dropped, the others clipped; then
`SanitizeBoundingBoxes` drops boxes under a pixel. Evaluation and predict items are only resized.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from vision_lightning.utils.errors import InputError
from vision_lightning.utils.letterbox import as_boxes, as_image, to_input


@dataclass(frozen=True)
class BoxAugment:
    """Box-aware training augmentation (see the module docstring).

    Args:
        hflip / vflip: probability of a horizontal / vertical flip.
        scale: the random zoom's range of factors: below 1 zooms out, above 1 zooms in ((1, 1): none).
        crop: probability of a random crop (resized back to the input size).
        crop_size: the crop's side as a share of the input's, drawn from this range.
        min_visibility: a box cut by a zoom-in or crop keeps at least this share of its area, else it
            is dropped.
        brightness / contrast / saturation / hue: colour jitter amounts (torchvision's ColorJitter).
    """

    hflip: float = 0.5
    vflip: float = 0.0
    scale: tuple[float, float] = (0.75, 1.25)
    crop: float = 0.0
    crop_size: tuple[float, float] = (0.5, 1.0)
    min_visibility: float = 0.3
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.0

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip", "crop", "min_visibility"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"augment.{name} must be between 0 and 1, got {getattr(self, name)}")
        for name, top in (("scale", None), ("crop_size", 1.0)):
            low, high = getattr(self, name)
            if not 0.0 < low <= high or (top is not None and high > top):
                limit = f" and at most {top}" if top else ""
                raise InputError(
                    f"augment.{name} must be [low, high] with 0 < low <= high{limit}, got {[low, high]}"
                )
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise InputError(f"augment.{name} must be 0 or more, got {getattr(self, name)}")
        if not 0.0 <= self.hue <= 0.5:
            raise InputError(f"augment.hue must be between 0 and 0.5, got {self.hue}")


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _offset(room: int) -> int:
    return int(torch.randint(0, room + 1, ()).item()) if room > 0 else 0


def _area(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


class DetectionTransform:
    """uint8 image + target -> the contract's item tensors (see the module docstring)."""

    def __init__(
        self,
        size: int,
        resize: str,
        mean: Sequence[float],
        std: Sequence[float],
        augment: BoxAugment | None = None,
    ) -> None:
        self.size, self.resize, self.mean, self.std, self.augment = size, resize, mean, std, augment
        jitter = augment and (augment.brightness or augment.contrast or augment.saturation or augment.hue)
        self.jitter = (
            v2.ColorJitter(augment.brightness, augment.contrast, augment.saturation, augment.hue)
            if jitter
            else None
        )
        self.sanitize = v2.SanitizeBoundingBoxes(min_size=1.0)

    def __call__(self, image: np.ndarray, target: dict[str, Any] | None) -> dict[str, Any]:
        height, width = image.shape[:2]
        size = torch.tensor([height, width], dtype=torch.int64)
        picture = as_image(image)
        if self.jitter is not None:
            picture = self.jitter(picture)
        if target is None:
            tensor, _, scale = to_input(picture, self.size, self.resize, self.mean, self.std)
            return {"image": tensor, "size": size, "scale": scale}
        boxes = as_boxes(target["boxes"], height, width)
        labels = torch.as_tensor(np.asarray(target["labels"]), dtype=torch.int64).reshape(-1)
        tensor, boxes, scale = to_input(picture, self.size, self.resize, self.mean, self.std, boxes)
        if self.augment is not None:
            tensor, boxes, labels = self._geometry(tv_tensors.Image(tensor), boxes, labels)
        return {
            "image": tensor.as_subclass(Tensor),
            "boxes": boxes.as_subclass(Tensor).float().reshape(-1, 4),
            "labels": labels,
            "size": size,
            "scale": scale,
        }

    def _geometry(self, image: Tensor, boxes: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        augment, size = self.augment, self.size
        if float(torch.rand(())) < augment.hflip:
            image, boxes = F.horizontal_flip(image), F.horizontal_flip(boxes)
        if float(torch.rand(())) < augment.vflip:
            image, boxes = F.vertical_flip(image), F.vertical_flip(boxes)
        zoom = _uniform(*augment.scale)
        side = max(1, round(size * zoom))
        if side != size:
            image, boxes = F.resize(image, [side, side], antialias=True), F.resize(boxes, [side, side])
            if side < size:  # zoom out: the smaller image somewhere on a canvas of the mean colour
                left, top = _offset(size - side), _offset(size - side)
                padding = [left, top, size - side - left, size - side - top]
                image, boxes = F.pad(image, padding, fill=0.0), F.pad(boxes, padding)
            else:  # zoom in: a window of the enlarged image
                image, boxes, labels = self._crop(
                    image, boxes, labels, _offset(side - size), _offset(side - size), size
                )
        if augment.crop and float(torch.rand(())) < augment.crop:
            side = max(1, round(size * _uniform(*augment.crop_size)))
            image, boxes, labels = self._crop(
                image, boxes, labels, _offset(size - side), _offset(size - side), side
            )
            image, boxes = F.resize(image, [size, size], antialias=True), F.resize(boxes, [size, size])
        out = self.sanitize({"image": image, "boxes": boxes, "labels": labels})
        return out["image"], out["boxes"], out["labels"]

    def _crop(self, image: Tensor, boxes: Tensor, labels: Tensor, top: int, left: int, side: int):
        """A `side` x `side` window at (top, left); boxes clipped to it, those keeping less than
        `min_visibility` of their area dropped."""
        before = _area(boxes.as_subclass(Tensor))
        image, cropped = F.crop(image, top, left, side, side), F.crop(boxes, top, left, side, side)
        after = _area(cropped.as_subclass(Tensor))
        keep = (after > 0) & (after >= self.augment.min_visibility * before)
        return image, tv_tensors.wrap(cropped.as_subclass(Tensor)[keep], like=cropped), labels[keep]
