"""Pictures for TensorBoard drawn with Pillow (no matplotlib): captioned image grids and confusion matrices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

GREEN, RED, WHITE = (60, 200, 90), (230, 70, 60), (235, 235, 235)


def to_uint8_images(
    images: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> np.ndarray:
    """NCHW float tensors (normalised with mean/std, or in [0, 1]) -> NHWC uint8 RGB arrays."""
    images = images.detach().float().cpu()
    if mean is not None and std is not None:
        channels = images.shape[1]
        m = torch.tensor(list(mean) * (channels // len(mean) or 1))[:channels].view(1, -1, 1, 1)
        s = torch.tensor(list(std) * (channels // len(std) or 1))[:channels].view(1, -1, 1, 1)
        images = images * s + m
    elif images.min() < 0 or images.max() > 1:  # unknown normalisation: stretch each image
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        high = images.amax(dim=(1, 2, 3), keepdim=True)
        images = (images - low) / (high - low).clamp_min(1e-8)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images[:, :3].permute(0, 2, 3, 1).numpy()


def _font(size: int = 11) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def captioned_grid(
    images: np.ndarray,
    captions: Sequence[str],
    colours: Sequence[tuple[int, int, int]] | None = None,
    columns: int = 8,
    min_tile: int = 96,
) -> np.ndarray:
    """A grid of NHWC uint8 `images`, each under its caption (one or two lines), as HWC uint8."""
    count, height, width = images.shape[:3]
    scale = max(1, -(-min_tile // max(height, width)))
    tile_h, tile_w = height * scale, width * scale
    caption_h, pad = 28, 4
    columns = min(columns, count)
    rows = -(-count // columns)
    canvas = Image.new(
        "RGB", (columns * (tile_w + pad) + pad, rows * (tile_h + caption_h + pad) + pad), (20, 20, 20)
    )
    draw, font = ImageDraw.Draw(canvas), _font()
    for i in range(count):
        x = pad + (i % columns) * (tile_w + pad)
        y = pad + (i // columns) * (tile_h + caption_h + pad)
        draw.multiline_text(
            (x + 2, y + 1), captions[i], fill=colours[i] if colours else WHITE, font=font, spacing=2
        )
        tile = Image.fromarray(images[i]).resize((tile_w, tile_h), Image.NEAREST)
        canvas.paste(tile, (x, y + caption_h))
    return np.asarray(canvas)


def confusion_matrix_image(matrix: np.ndarray, class_names: Sequence[str], cell: int = 36) -> np.ndarray:
    """Rows are true classes, columns predictions; cells shaded by row-normalised count, counts written in."""
    matrix = np.asarray(matrix, dtype=np.int64)
    n = matrix.shape[0]
    cell = cell if n <= 20 else max(6, 720 // n)
    names = [str(c)[:14] for c in class_names]
    margin = 100 if n <= 40 else 8
    size = margin + n * cell + 8
    canvas = Image.new("RGB", (size, size + 16), (255, 255, 255))
    draw, font = ImageDraw.Draw(canvas), _font(10)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    draw.text((margin, 2), "predicted ->   (rows: true class)", fill=(0, 0, 0), font=font)
    for r in range(n):
        y = 16 + margin + r * cell
        if margin > 8:
            draw.text((4, y + cell // 3), names[r], fill=(0, 0, 0), font=font)
        for c in range(n):
            x = margin + c * cell
            shade = int(255 - 200 * rates[r, c])
            fill = (shade, shade, 255) if r == c else (255, shade, shade)
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=fill, outline=(200, 200, 200))
            if n <= 20:
                draw.text((x + 3, y + cell // 3), str(matrix[r, c]), fill=(0, 0, 0), font=font)
    if margin > 8:
        for c in range(n):  # column names, written vertically
            label = Image.new("RGB", (margin - 4, cell), (255, 255, 255))
            ImageDraw.Draw(label).text((2, cell // 3), names[c], fill=(0, 0, 0), font=font)
            rotated = label.rotate(90, expand=True)
            canvas.paste(rotated, (margin + c * cell, 16))
    return np.asarray(canvas)


def class_palette(num_classes: int) -> np.ndarray:
    """A fixed colour per class (class 0, the background, black); distinct hues for the rest."""
    colours = [(0, 0, 0), (255, 64, 64), (64, 200, 255), (255, 210, 0), (90, 220, 90), (200, 90, 255)]
    rng = np.random.default_rng(0)
    while len(colours) < num_classes:
        colours.append(tuple(int(v) for v in rng.integers(40, 256, size=3)))
    return np.array(colours[: max(num_classes, 1)], dtype=np.uint8)


def mask_overlay(images: np.ndarray, masks: np.ndarray, num_classes: int, alpha: float = 0.5) -> np.ndarray:
    """NHWC uint8 `images` with NHW class-id `masks` painted over them (background left clear)."""
    palette = class_palette(max(num_classes, int(masks.max(initial=0)) + 1))
    colour = palette[masks.clip(0, len(palette) - 1)].astype(np.float32)
    painted = masks[..., None] > 0
    blended = np.where(painted, (1 - alpha) * images + alpha * colour, images)
    return blended.round().astype(np.uint8)
