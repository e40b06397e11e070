"""Synthetic textures: content with real fine detail for super-resolution and style transfer, no download.

Super-resolution learns to restore what bicubic downscaling removes, so flat synthetic shapes teach it
nothing; these images mix oriented gratings (smooth and square-wave, from coarse to near the pixel
pitch), sharp-edged discs, rectangles and thin lines, a colour gradient and mild noise. A sample depends
only on (seed, index, image size), so a data set is the same on every machine and in every worker,
and a 128 px image takes about a millisecond (numpy only).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vision_lightning.utils.errors import InputError


def _unit_colour(rng: np.random.Generator) -> np.ndarray:
    """A random colour direction (3,) of length 1, so gratings shift hue as well as brightness."""
    direction = rng.normal(size=3) + 1.0  # biased to brightness: textures read as luminance detail
    return (direction / np.linalg.norm(direction)).astype(np.float32)


def _grating(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """An oriented sinusoid (or, a third of the time, square wave: sharp stripes) of random frequency
    between 1/50 and 1/3 cycles per pixel, in [-1, 1]."""
    frequency = math.exp(rng.uniform(math.log(0.02), math.log(0.33)))
    angle, phase = rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi)
    kx, ky = 2 * math.pi * frequency * math.cos(angle), 2 * math.pi * frequency * math.sin(angle)
    wave = np.cos(kx * x + ky * y + phase)
    return np.sign(wave) if rng.random() < 0.33 else wave


def render_texture(seed: int, index: int, image_size: int) -> np.ndarray:
    """The uint8 HxWx3 texture `index` of the data set `seed`."""
    rng = np.random.default_rng([seed, index])
    size = image_size
    y = np.arange(size, dtype=np.float32)[:, None] + 0.5
    x = np.arange(size, dtype=np.float32)[None, :] + 0.5

    # A gradient between two colours along a random direction.
    angle = rng.uniform(0, 2 * math.pi)
    ramp = math.cos(angle) * x + math.sin(angle) * y
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    low, high = rng.uniform(20, 235, size=(2, 3)).astype(np.float32)
    image = low + (high - low) * ramp[..., None]

    # Gratings, each faded in over a soft random blob so regions differ in texture.
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = (float(c) for c in rng.uniform(0, size, size=2))
        spread = 2 * (rng.uniform(0.25, 0.7) * size) ** 2
        window = np.exp(-((x - cx) ** 2) / spread) * np.exp(-((y - cy) ** 2) / spread)
        amplitude = rng.uniform(20, 60)
        image += (amplitude * _grating(rng, x, y) * window)[..., None] * _unit_colour(rng)

    # Sharp-edged shapes: flat or striped discs, rotated rectangles and thin lines, each drawn only
    # inside its bounding box.
    for _ in range(int(rng.integers(3, 9))):
        kind = rng.integers(3)
        cx, cy = (float(c) for c in rng.uniform(0, size, size=2))
        angle = rng.uniform(0, math.pi)
        if kind == 0:
            half_long = half_short = rng.uniform(0.04, 0.2) * size
        elif kind == 1:
            half_long, half_short = (float(h) for h in rng.uniform(0.04, 0.22, size=2) * size)
        else:
            half_long, half_short = rng.uniform(0.15, 0.5) * size, rng.uniform(0.4, 1.5)
        reach = math.hypot(half_long, half_short)
        rows = slice(max(int(cy - reach), 0), min(int(cy + reach) + 2, size))
        cols = slice(max(int(cx - reach), 0), min(int(cx + reach) + 2, size))
        dx, dy = x[:, cols] - cx, y[rows] - cy
        if kind == 0:
            mask = dx**2 + dy**2 <= half_long**2
        else:
            cos, sin = math.cos(angle), math.sin(angle)
            u, v = dx * cos + dy * sin, dy * cos - dx * sin
            mask = (np.abs(u) <= half_long) & (np.abs(v) <= half_short)
        colour = rng.uniform(0, 255, size=3).astype(np.float32)
        region = image[rows, cols]  # a view: writing into it draws on the image
        if rng.random() < 0.3:
            stripes = rng.uniform(20, 50) * _grating(rng, x[:, cols], y[rows])[mask]
            region[mask] = colour + stripes[:, None] * _unit_colour(rng)
        else:
            region[mask] = colour

    # Mild sensor-like noise (uniform: a tenth of the cost of Gaussian draws, and looks the same).
    image += (rng.random(image.shape, dtype=np.float32) - 0.5) * rng.uniform(4.0, 12.0)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


class SyntheticTextures:
    """`count` textures of `image_size` x `image_size` pixels as an indexable data set."""

    def __init__(self, count: int, image_size: int, seed: int = 0) -> None:
        if count < 0:
            raise InputError(f"the number of synthetic textures must not be negative, got {count}")
        if image_size < 8:
            raise InputError(f"synthetic textures must be at least 8 pixels, got image_size {image_size}")
        self.count, self.image_size, self.seed = count, image_size, seed

    def __len__(self) -> int:
        return self.count

    def sample(self, index: int) -> np.ndarray:
        """The uint8 HxWx3 texture `index`."""
        if not 0 <= index < self.count:
            raise IndexError(index)
        return render_texture(self.seed, index, self.image_size)


class TextureSource:
    """Synthetic textures as a data-module sample source: `(image, None, "<name>/<index>")`."""

    def __init__(self, textures: SyntheticTextures, name: str = "synthetic") -> None:
        self.textures, self.name = textures, name

    def __len__(self) -> int:
        return len(self.textures)

    def load(self, index: int) -> tuple[np.ndarray, Any, str]:
        return self.textures.sample(index), None, f"{self.name}/{index:06d}"
