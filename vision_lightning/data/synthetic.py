"""Synthetic shapes: the built-in data set of the quickstarts and the tests (no download, any machine).

Each sample is one coloured shape on a noisy background; its class is the shape, not the colour,
and its mask is the shape's pixels. A sample depends only on (seed, index, image size), so a data
set is the same on every machine and in every worker.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from vision_lightning.utils.errors import InputError

SHAPE_NAMES = (
    "circle", "square", "triangle", "cross", "ring",
    "diamond", "hbar", "vbar", "saltire", "dot_pair",
)  # fmt: skip


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Pixels inside `shape` of radius `r` for offsets (dx, dy) from its centre."""
    ax, ay, dist = np.abs(dx), np.abs(dy), np.hypot(dx, dy)
    arm = 0.3 * r
    if shape == "circle":
        return dist <= r
    if shape == "square":
        return np.maximum(ax, ay) <= 0.8 * r
    if shape == "triangle":  # apex up, base down
        return (dy <= 0.8 * r) & (ax <= (dy + r) * 0.6)
    if shape == "cross":
        return ((ax <= arm) & (ay <= r)) | ((ay <= arm) & (ax <= r))
    if shape == "ring":
        return (dist <= r) & (dist >= 0.55 * r)
    if shape == "diamond":
        return ax + ay <= r
    if shape == "hbar":
        return (ay <= 0.35 * r) & (ax <= r)
    if shape == "vbar":
        return (ax <= 0.35 * r) & (ay <= r)
    if shape == "saltire":
        return ((np.abs(dx - dy) <= arm) | (np.abs(dx + dy) <= arm)) & (dist <= r)
    if shape == "dot_pair":
        return (np.hypot(dx - 0.5 * r, dy) <= 0.4 * r) | (np.hypot(dx + 0.5 * r, dy) <= 0.4 * r)
    raise ValueError(shape)


def render_shape(
    seed: int, index: int, image_size: int, num_classes: int, channels: int = 3
) -> tuple[np.ndarray, int, np.ndarray]:
    """(uint8 HxWxC image, class id, bool HxW mask) of sample `index` of the data set `seed`."""
    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(num_classes))
    size = image_size
    background = rng.uniform(0, 110, size=3)
    image = background + rng.normal(0, 18, size=(size, size, 3))
    radius = rng.uniform(0.22, 0.36) * size
    cx, cy = rng.uniform(radius, size - radius, size=2)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    mask = _shape_mask(SHAPE_NAMES[label], xx - cx, yy - cy, radius)
    colour = rng.uniform(140, 255, size=3)
    image[mask] = colour + rng.normal(0, 12, size=(int(mask.sum()), 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    if channels == 1:
        image = np.asarray(Image.fromarray(image).convert("L"))[..., None]
    return image, label, mask


class ShapeImages:
    """`num_samples` shapes of `num_classes` kinds (at most 10): images, class ids and masks by index.

    The generator behind the classification and segmentation `SyntheticShapes` sources."""

    def __init__(
        self,
        num_samples: int = 1000,
        image_size: int = 64,
        num_classes: int = 4,
        channels: int = 3,
        seed: int = 0,
    ) -> None:
        if not 2 <= num_classes <= len(SHAPE_NAMES):
            raise InputError(
                f"synthetic shapes have 2 to {len(SHAPE_NAMES)} classes, got num_classes={num_classes}"
            )
        if image_size < 8:
            raise InputError(f"synthetic image_size must be at least 8 pixels, got {image_size}")
        self.num_samples, self.image_size, self.num_classes = num_samples, image_size, num_classes
        self.channels, self.seed = channels, seed
        self.class_names = list(SHAPE_NAMES[:num_classes])

    def __len__(self) -> int:
        return self.num_samples

    def sample(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        return render_shape(self.seed, index, self.image_size, self.num_classes, self.channels)

    @functools.cached_property
    def labels(self) -> list[int]:
        """Every sample's class, cheaply: the class is the first draw of the sample's generator."""
        return [
            int(np.random.default_rng([self.seed, i]).integers(self.num_classes)) for i in range(len(self))
        ]


def write_image_folder(
    root: str | Path,
    per_class: int = 10,
    num_classes: int = 4,
    image_size: int = 32,
    channels: int = 3,
    seed: int = 0,
    extension: str = ".png",
) -> list[Path]:
    """Write synthetic shapes as an ImageFolder tree `root/<class>/<n><extension>`; return the paths."""
    root = Path(root)
    source = ShapeImages(per_class * num_classes * 4, image_size, num_classes, channels, seed)
    counts = dict.fromkeys(range(num_classes), 0)
    paths = []
    for index in range(len(source)):
        image, label, _ = source.sample(index)
        if counts[label] >= per_class:
            continue
        path = root / source.class_names[label] / f"{counts[label]:04d}{extension}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[..., 0] if channels == 1 else image).save(path)
        counts[label] += 1
        paths.append(path)
        if all(c >= per_class for c in counts.values()):
            break
    return paths
