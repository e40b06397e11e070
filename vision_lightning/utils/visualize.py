"""Pictures for TensorBoard and files, drawn with Pillow (no matplotlib): captioned image grids,
confusion matrices and line plots (the learning-rate finder's loss curve)."""

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


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round values (1, 2 or 5 times a power of ten apart) between `low` and `high`."""
    if not high > low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** np.floor(np.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = np.ceil(low / step) * step
    return [float(v) for v in np.arange(first, high + step * 1e-9, step)]


def _log_ticks(low: float, high: float) -> list[float]:
    """Powers of ten between `low` and `high` (positive); also 2x and 5x when they span three decades or fewer."""
    decades = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
    multiples = (1,) if len(decades) > 3 else (1, 2, 5)
    ticks = [m * 10.0**k for k in decades for m in multiples]
    return [t for t in ticks if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)]


def line_plot_image(
    x: Sequence[float],
    y: Sequence[float],
    *,
    log_x: bool = False,
    marker: int | None = None,
    marker_label: str = "",
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    y_range: tuple[float, float] | None = None,
    size: tuple[int, int] = (640, 400),
) -> np.ndarray:
    """A line plot of `y` against `x` as HWC uint8 (Pillow, no matplotlib), with labelled ticks.

    `log_x` puts x on a log scale (x must be positive); point `marker` (an index) is circled in red
    and captioned `marker_label`. Non-finite y values break the line; y values outside `y_range`
    (default: the finite values' range) are drawn on its edge, so a diverging tail stays readable.
    """
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.shape != ys.shape or xs.ndim != 1 or len(xs) == 0:
        raise ValueError(
            f"x and y must be 1-d and of the same non-zero length, got {xs.shape} and {ys.shape}"
        )
    if log_x and not (xs > 0).all():
        raise ValueError("log_x needs positive x values")
    finite = np.isfinite(ys)
    low, high = y_range if y_range else (ys[finite].min(), ys[finite].max()) if finite.any() else (0.0, 1.0)
    if not high > low:
        low, high = low - 0.5, high + 0.5
    to_axis = np.log10 if log_x else (lambda v: v)
    x_low, x_high = to_axis(xs.min()), to_axis(xs.max())
    if not x_high > x_low:
        x_low, x_high = x_low - 0.5, x_high + 0.5

    width, height = size
    left, right, top, bottom = 64, 16, 30, 44
    canvas = Image.new("RGB", size, (255, 255, 255))
    draw, font = ImageDraw.Draw(canvas), _font(11)
    grey, ink, line = (225, 225, 225), (40, 40, 40), (40, 90, 200)

    def px(vx: float) -> float:
        return left + (to_axis(vx) - x_low) / (x_high - x_low) * (width - left - right)

    def py(vy: float) -> float:
        return top + (1 - (min(max(vy, low), high) - low) / (high - low)) * (height - top - bottom)

    x_ticks = _log_ticks(xs.min(), xs.max()) if log_x else _nice_ticks(xs.min(), xs.max())
    for tick in x_ticks:
        tx = px(tick)
        draw.line([(tx, top), (tx, height - bottom)], fill=grey)
        text = f"{tick:.0e}" if log_x else f"{tick:g}"
        draw.text((tx - draw.textlength(text, font=font) / 2, height - bottom + 4), text, fill=ink, font=font)
    for tick in _nice_ticks(low, high):
        ty = py(tick)
        draw.line([(left, ty), (width - right, ty)], fill=grey)
        text = f"{tick:.4g}"
        draw.text((left - 6 - draw.textlength(text, font=font), ty - 6), text, fill=ink, font=font)
    draw.rectangle([left, top, width - right, height - bottom], outline=ink)

    def stroke(points: list[tuple[float, float]]) -> None:
        if len(points) > 1:
            draw.line(points, fill=line, width=2)
        elif points:
            draw.point(points, fill=line)

    segment: list[tuple[float, float]] = []
    for vx, vy, ok in zip(xs, ys, finite):
        if ok:
            segment.append((px(vx), py(vy)))
        else:  # a gap: NaN or infinite loss
            stroke(segment)
            segment = []
    stroke(segment)

    if marker is not None and finite[marker]:
        mx, my = px(xs[marker]), py(ys[marker])
        draw.ellipse([mx - 6, my - 6, mx + 6, my + 6], outline=RED, width=3)
        if marker_label:
            tx = min(mx + 10, width - right - draw.textlength(marker_label, font=font) - 4)
            draw.text((tx, max(my - 20, top + 2)), marker_label, fill=RED, font=font)

    draw.text((left, 8), title, fill=ink, font=_font(13))
    if x_label:
        x_text = (left + width - right - draw.textlength(x_label, font=font)) / 2
        draw.text((x_text, height - 20), x_label, fill=ink, font=font)
    if y_label:  # written upwards along the left edge
        label = Image.new("RGB", (int(draw.textlength(y_label, font=font)) + 4, 14), (255, 255, 255))
        ImageDraw.Draw(label).text((2, 0), y_label, fill=ink, font=font)
        rotated = label.rotate(90, expand=True)
        canvas.paste(rotated, (2, int((top + height - bottom - rotated.height) / 2)))
    return np.asarray(canvas)


def draw_boxes(
    image: np.ndarray,
    boxes: torch.Tensor,
    captions: Sequence[str] | None = None,
    colour: tuple[int, int, int] = GREEN,
    width: int = 1,
) -> np.ndarray:
    """HWC uint8 `image` with xyxy `boxes` (pixels) drawn by torchvision's `draw_bounding_boxes`,
    each with its caption (class name and score)."""
    from torchvision.utils import draw_bounding_boxes

    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if len(boxes) == 0:
        return np.ascontiguousarray(image)
    drawn = draw_bounding_boxes(
        tensor, boxes.detach().float().cpu(), labels=list(captions) if captions else None,
        colors=[colour] * len(boxes), width=width,
    )  # fmt: skip
    return drawn.permute(1, 2, 0).numpy()
