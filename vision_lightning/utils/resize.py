"""The one bicubic resize of the project: making LR images, the bicubic baseline, upscaling for display.

`F.interpolate(mode="bicubic", antialias=True)` uses PIL's (and MATLAB `imresize`'s) cubic kernel,
a = -0.5, widened when shrinking so that downscaling does not alias; the super-resolution literature
makes its LR images and its bicubic baseline this way (plain `antialias=False` differs by tens of
grey levels when shrinking x4).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def bicubic_resize(images: Tensor, size: tuple[int, int], quantize: bool = False) -> Tensor:
    """Resize float images (N, C, H, W) in [0, 1] to `size` (h, w); `quantize` rounds to 8-bit levels,
    as saving the result as a PNG would."""
    out = F.interpolate(images.float(), size=tuple(size), mode="bicubic", antialias=True, align_corners=False)
    out = out.clamp(0.0, 1.0)
    return (out * 255).round() / 255 if quantize else out


def mod_crop(image: Tensor, scale: int) -> Tensor:
    """Crop the bottom and right edges of (..., H, W) so H and W are multiples of `scale` (BasicSR)."""
    h, w = image.shape[-2:]
    return image[..., : h - h % scale, : w - w % scale]


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
