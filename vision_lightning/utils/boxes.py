"""Box geometry shared by the detection data and the detection task.

A detection input is a square `S` x `S` image made from an original (H, W) image by `letterbox` (keep the
aspect ratio: the long side becomes S, the short side is padded, centred, with the mean colour) or
`stretch` (both sides become S). Either way one row (sx, sy, pad_x, pad_y) describes it:
`input_x = x * sx + pad_x`, `input_y = y * sy + pad_y`, so `original = (input - pad) / s`.
Boxes are xyxy in absolute pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor

RESIZE_MODES = ("letterbox", "stretch")


def letterbox_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) the image is resized to before padding to `size` x `size`: the long side becomes `size`,
    the short side keeps the aspect ratio (rounded, at least 1 pixel)."""
    ratio = size / max(height, width)
    return max(1, min(size, round(height * ratio))), max(1, min(size, round(width * ratio)))


def letterbox_padding(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) padding that centres the letterboxed image in `size` x `size`."""
    new_h, new_w = letterbox_size(height, width, size)
    left, top = (size - new_w) // 2, (size - new_h) // 2
    return left, top, size - new_w - left, size - new_h - top


def resize_scale(height: int, width: int, size: int, resize: str = "letterbox") -> Tensor:
    """The scale row (sx, sy, pad_x, pad_y) of an (height, width) image brought to `size` x `size` by
    `resize` ("letterbox" or "stretch"). The factors are those of the rounded resized size, so the
    mapping is exact for the pixels actually produced."""
    if resize == "stretch":
        return torch.tensor([size / width, size / height, 0.0, 0.0], dtype=torch.float32)
    if resize != "letterbox":
        raise ValueError(f"resize must be one of {RESIZE_MODES}, not {resize!r}")
    new_h, new_w = letterbox_size(height, width, size)
    left, top, _, _ = letterbox_padding(height, width, size)
    return torch.tensor([new_w / width, new_h / height, float(left), float(top)], dtype=torch.float32)


def to_input(boxes: Tensor, scale: Tensor) -> Tensor:
    """Boxes (k, 4) xyxy in original pixels -> input pixels, given the scale row (sx, sy, pad_x, pad_y)."""
    scale = scale.to(boxes.device, torch.float32)
    factor = torch.stack([scale[0], scale[1], scale[0], scale[1]])
    offset = torch.stack([scale[2], scale[3], scale[2], scale[3]])
    return boxes.float() * factor + offset


def to_original(boxes: Tensor, scale: Tensor, size: Tensor) -> Tensor:
    """Boxes (k, 4) xyxy in input pixels -> original pixels, clipped to the image.

    `scale` is the batch's (sx, sy, pad_x, pad_y) row of this image and `size` its original (H, W) row.
    """
    scale = scale.to(boxes.device, torch.float32)
    factor = torch.stack([scale[0], scale[1], scale[0], scale[1]])
    offset = torch.stack([scale[2], scale[3], scale[2], scale[3]])
    out = (boxes.float() - offset) / factor
    height, width = (float(v) for v in size.tolist())
    out[:, 0::2] = out[:, 0::2].clamp(0.0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0.0, height)
    return out
