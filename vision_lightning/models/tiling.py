"""Run an image-to-image network tile by tile, so memory does not grow with the image.

Each tile is extended by `overlap` input pixels of context on every side (clamped at the image's
edges), and only its centre goes into the output. With an overlap at least as large as the
network's receptive-field radius the result equals one pass over the whole image; SR networks of a
few dozen 3x3 convolutions at low resolution need about 16-24 pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


@torch.no_grad()
def tiled_forward(
    network: Callable[[Tensor], Tensor], images: Tensor, scale: int = 1, tile: int = 128, overlap: int = 16
) -> Tensor:
    """`network(images)` for images (N, C, H, W) whose output is `scale` times larger, computed in tiles
    of `tile` x `tile` input pixels (the whole image in one pass when it fits in a tile)."""
    n, _, height, width = images.shape
    if height <= tile and width <= tile:
        return network(images)
    output: Tensor | None = None
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            y0, x0 = max(top - overlap, 0), max(left - overlap, 0)
            y1, x1 = min(bottom + overlap, height), min(right + overlap, width)
            result = network(images[:, :, y0:y1, x0:x1])
            if output is None:
                output = result.new_zeros(n, result.shape[1], height * scale, width * scale)
            inner = result[
                :, :,
                (top - y0) * scale : (bottom - y0) * scale,
                (left - x0) * scale : (right - x0) * scale,
            ]  # fmt: skip
            output[:, :, top * scale : bottom * scale, left * scale : right * scale] = inner
    return output
