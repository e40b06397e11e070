"""Box geometry shared by detection data and the detection task: input pixels <-> original pixels.

A detection input is the image brought to `image_size` x `image_size` by `letterbox` (keep aspect,
scale the long side, pad the rest) or `stretch`; its `scale` row (sx, sy, pad_x, pad_y) says
input_x = x * sx + pad_x, input_y = y * sy + pad_y.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

ResizeMode = Literal["letterbox", "stretch"]


def to_original(boxes: Tensor, scale: Tensor, size: Tensor) -> Tensor:
    """`boxes` (k, 4) xyxy in input pixels -> original pixels, clipped to the image.

    `scale` (4,) is (sx, sy, pad_x, pad_y) as above; `size` (2,) is the original (height, width)."""
    scale = scale.to(boxes.device, torch.float32)
    sx, sy, pad_x, pad_y = scale.unbind()
    boxes = boxes.float()
    x = (boxes[:, 0::2] - pad_x) / sx
    y = (boxes[:, 1::2] - pad_y) / sy
    height, width = (float(v) for v in size.tolist())
    x = x.clamp(0, width)
    y = y.clamp(0, height)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def resize_geometry(height: int, width: int, image_size: int, mode: ResizeMode = "letterbox") -> tuple:
    """(new height, new width, (sx, sy, pad_x, pad_y)) bringing an image of `height` x `width` to a
    square `image_size` input; letterbox centres the scaled image."""
    if mode == "stretch":
        return image_size, image_size, (image_size / width, image_size / height, 0.0, 0.0)
    ratio = image_size / max(height, width)
    new_h, new_w = max(1, round(height * ratio)), max(1, round(width * ratio))
    pad_x, pad_y = (image_size - new_w) // 2, (image_size - new_h) // 2
    return new_h, new_w, (new_w / width, new_h / height, float(pad_x), float(pad_y))


def letterbox_array(
    image: np.ndarray, image_size: int, mode: ResizeMode, mean: list[float], std: list[float]
) -> tuple[Tensor, Tensor]:
    """A HWC uint8 image as a normalised CHW float input of `image_size` x `image_size` (padding 0
    after normalisation: the mean colour) and its scale row (sx, sy, pad_x, pad_y)."""
    from PIL import Image

    height, width = image.shape[:2]
    new_h, new_w, scale = resize_geometry(height, width, image_size, mode)
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    if resized.ndim == 2:
        resized = resized[..., None]
    tensor = torch.from_numpy(resized.copy()).permute(2, 0, 1).float() / 255.0
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    tensor = (tensor - m) / s
    canvas = torch.zeros(tensor.shape[0], image_size, image_size)
    pad_x, pad_y = int(scale[2]), int(scale[3])
    canvas[:, pad_y : pad_y + new_h, pad_x : pad_x + new_w] = tensor
    return canvas, torch.tensor(scale, dtype=torch.float32)
