"""One image (and its boxes) made into a detection input: resized to `size` x `size` by letterbox or
stretch, normalised, padded with 0 (the mean colour once normalised, so padding looks like nothing).

The data module's evaluation items and inference from a checkpoint (`predict_batch`) both come from
here, so a checkpoint prepares images exactly as validation did. Box geometry: utils/boxes.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from vision_lightning.utils.boxes import letterbox_padding, letterbox_size, resize_scale


def as_image(image: np.ndarray | Tensor) -> tv_tensors.Image:
    """A uint8 HxWxC array (or a CxHxW tensor) as a torchvision Image (CxHxW)."""
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[..., None]
        if not image.flags.writeable:  # PIL's arrays are read-only; torch wants to own writable memory
            image = image.copy()
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return tv_tensors.Image(image)


def as_boxes(boxes: Tensor | np.ndarray, height: int, width: int) -> tv_tensors.BoundingBoxes:
    """xyxy pixel boxes (k, 4) of an (height, width) image as torchvision BoundingBoxes."""
    data = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return tv_tensors.BoundingBoxes(data, format="XYXY", canvas_size=(height, width))


def normalise(image: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 image -> float in [0, 1], normalised with `mean` / `std` (one value per channel, or one)."""
    image = F.to_dtype(image, torch.float32, scale=True)
    channels = image.shape[-3]
    mean = list(mean) * channels if len(mean) == 1 else list(mean)
    std = list(std) * channels if len(std) == 1 else list(std)
    return F.normalize(image, mean=mean, std=std)


def to_input(
    image: np.ndarray | Tensor,
    size: int,
    resize: str,
    mean: Sequence[float],
    std: Sequence[float],
    boxes: tv_tensors.BoundingBoxes | None = None,
) -> tuple[Tensor, tv_tensors.BoundingBoxes | None, Tensor]:
    """(float image (C, size, size), the boxes moved along (or None), the scale row (sx, sy, pad_x,
    pad_y)) of a uint8 image: resized (antialiased) by `resize`, normalised, letterbox padding 0."""
    image = as_image(image)
    height, width = image.shape[-2:]
    target = [size, size] if resize == "stretch" else list(letterbox_size(height, width, size))
    scale = resize_scale(height, width, size, resize)  # checks `resize`
    image = normalise(F.resize(image, target, antialias=True), mean, std)
    if boxes is not None:
        boxes = F.resize(boxes, target)
    if resize == "letterbox":
        padding = list(letterbox_padding(height, width, size))
        image = F.pad(image, padding, fill=0.0)
        if boxes is not None:
            boxes = F.pad(boxes, padding)
    return image.as_subclass(Tensor), boxes, scale


def predict_batch(images: Sequence[np.ndarray], paths: Sequence[str], preprocessing: dict[str, Any]) -> dict:
    """A predict batch of the detection contract from decoded uint8 HxWxC images, prepared as a data
    module's `preprocessing()` says (`image_size`, `resize`, `mean`, `std`)."""
    inputs, scales, sizes = [], [], []
    for image in images:
        tensor, _, scale = to_input(
            image,
            int(preprocessing["image_size"]),
            str(preprocessing.get("resize", "letterbox")),
            preprocessing["mean"],
            preprocessing["std"],
        )
        inputs.append(tensor)
        scales.append(scale)
        sizes.append(torch.tensor(image.shape[:2], dtype=torch.int64))
    return {
        "image": torch.stack(inputs),
        "path": [str(p) for p in paths],
        "size": torch.stack(sizes),
        "scale": torch.stack(scales),
    }
