"""Augmentation of whole uint8 batches on the training device: flips, rotations, crops, cutout.

The in-memory data path (data/in_memory.py) hands the data module batches of uint8 images; its
`on_after_batch_transfer` augments them where they are (GPU or CPU) and converts them to
normalised floats, so a batch crosses PCIe as bytes and no worker process augments single images.

- `flip`: each image mirrored left-right with probability 0.5;
- `dihedral`: each image one of the 8 symmetries of the square at random (mirrored left-right,
  top-bottom, and transposed, each with probability 0.5: the 4 rotations by 90 degrees and their
  mirror images); for data without an up or a left, such as micrographs (square outputs only);
- `pad_crop: p`: each image shifted by up to `p` pixels either way, i.e. padded by `p` and cropped
  back to its size at a random offset (the CIFAR recipe: `pad_crop: 4`); `pad_mode: reflect`
  mirrors the border, `constant` fills with black (a random translate);
- a random *window* of the crop size, when the data module crops (segmentation `crop: true` on
  the in-memory path keeps whole images and trains on random `image_size` windows of them);
- `cutout: s`: an `s` x `s` square at a random centre (it may hang over the edge) set to 0 after
  normalisation, i.e. to the data's mean colour (DeVries & Taylor 2017).

Window, flips, transposition and translation are one gather of pixels, indices reflected or
clamped in place of padding, applied
to the image and to its mask alike (masks: nearest by construction; constant padding fills masks
with `ignore_index` when the data has one, else 0, the background). Cutout changes the image
only: the mask keeps the true classes of the hidden pixels.

The random numbers come from a CPU generator seeded with the batch's seed (the data path derives it
from the run seed, the epoch and the batch's first sample), so a batch is augmented the same on any
device, in a repeated run and in a resumed one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from vision_lightning.utils.errors import InputError


@dataclass(frozen=True)
class BatchAugment:
    """What the training batches get on the device (see the module docstring); all off by default."""

    flip: bool = False
    dihedral: bool = False
    pad_crop: int = 0
    pad_mode: Literal["reflect", "constant"] = "reflect"
    cutout: int = 0

    def __post_init__(self) -> None:
        if self.pad_crop < 0 or self.cutout < 0:
            raise InputError(
                f"batch_augment.pad_crop and cutout must be 0 or more, got {self.pad_crop} and {self.cutout}"
            )
        if self.pad_mode not in ("reflect", "constant"):
            raise InputError(f"batch_augment.pad_mode must be reflect or constant, got {self.pad_mode!r}")

    @property
    def geometric(self) -> bool:
        return self.flip or self.dihedral or self.pad_crop > 0


def _reflect(index: Tensor, size: int) -> Tensor:
    """Indices past either edge mirrored back inside (numpy's `reflect`: the edge is not repeated)."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def _axis_indices(
    offsets: Tensor, flips: Tensor | None, pad: int, size: int, out: int, mode: str
) -> tuple[Tensor, Tensor | None]:
    """(N, out) source indices along one axis of length `size` (a window of `out` starting at
    `offsets - pad`, reversed where `flips`), and where constant padding shows (None: nowhere)."""
    steps = torch.arange(out, device=offsets.device)
    if flips is not None:
        steps = torch.where(flips[:, None], out - 1 - steps, steps)
    index = offsets[:, None] - pad + steps  # (N, out)
    if mode == "reflect":
        return _reflect(index, size), None
    outside = (index < 0) | (index >= size)
    return index.clamp(0, size - 1), outside


def _grid(rows: Tensor, cols: Tensor, transpose: Tensor | None) -> tuple[Tensor, Tensor]:
    """(N, H, W) pairs (row, column) of rows (N, H) x cols (N, W); transposed where `transpose`:
    output (y, x) then reads (rows[x], cols[y]) (square outputs)."""
    grid_rows, grid_cols = (
        rows[:, :, None].expand(-1, -1, cols.shape[1]),
        cols[:, None, :].expand(-1, rows.shape[1], -1),
    )
    if transpose is not None:
        t = transpose[:, None, None]
        grid_rows, grid_cols = (
            torch.where(t, rows[:, None, :].expand_as(grid_rows), grid_rows),
            torch.where(t, cols[:, :, None].expand_as(grid_cols), grid_cols),
        )
    return grid_rows, grid_cols


def _gather(images: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """images (N, C, H, W) or (N, H, W) read at (rows, cols), each (N, h, w): one `torch.gather`
    giving (N, C, h, w) or (N, h, w)."""
    planar = images.ndim == 3
    x = images[:, None] if planar else images
    n, c, h, w = x.shape
    out_h, out_w = rows.shape[1:]
    linear = (rows * w + cols).reshape(n, 1, out_h * out_w).expand(n, c, out_h * out_w)
    out = x.reshape(n, c, h * w).gather(2, linear).reshape(n, c, out_h, out_w)
    return out[:, 0] if planar else out


class BatchAugmenter:
    """`BatchAugment` applied to batches: `geometry` (image and mask) before normalising, `cutout`
    after; `crop`: train on random `crop` x `crop` windows of the batch's images."""

    def __init__(
        self, options: BatchAugment, ignore_index: int | None = None, crop: int | None = None
    ) -> None:
        self.options, self.ignore_index, self.crop = options, ignore_index, crop

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        if self.crop is None:
            return height, width
        if self.crop > min(height, width):
            raise InputError(
                f"the crop size (image_size {self.crop}) is larger than the in-memory images ({height}x{width})"
            )
        return self.crop, self.crop

    def draw(self, count: int, height: int, width: int, seed: int) -> dict[str, Tensor]:
        """The batch's random numbers for images of `height` x `width`, drawn on the CPU from
        `seed` (the same on every device)."""
        generator = torch.Generator().manual_seed(seed)
        pad = self.options.pad_crop
        out_h, out_w = self.output_size(height, width)
        return {
            "flip": torch.rand(count, generator=generator) < 0.5,
            "dy": torch.randint(0, height - out_h + 2 * pad + 1, (count,), generator=generator),
            "dx": torch.randint(0, width - out_w + 2 * pad + 1, (count,), generator=generator),
            "cy": torch.randint(0, out_h, (count,), generator=generator),
            "cx": torch.randint(0, out_w, (count,), generator=generator),
            "vflip": torch.rand(count, generator=generator) < 0.5,
            "transpose": torch.rand(count, generator=generator) < 0.5,
        }

    def geometry(
        self, images: Tensor, masks: Tensor | None, draws: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor | None]:
        """Window, flip, transpose and pad-crop `images` (N, C, H, W) and `masks` ((N, H, W) or
        (N, K, H, W)) alike."""
        if not self.options.geometric and self.crop is None:
            return images, masks
        device, (h, w) = images.device, images.shape[-2:]
        out_h, out_w = self.output_size(h, w)
        pad, mode = self.options.pad_crop, self.options.pad_mode
        dihedral = self.options.dihedral
        if dihedral and out_h != out_w:
            raise InputError(f"batch_augment.dihedral needs square images, these are {out_h}x{out_w}")
        flips = draws["flip"].to(device) if self.options.flip or dihedral else None
        vflips = draws["vflip"].to(device) if dihedral else None
        transpose = draws["transpose"].to(device) if dihedral else None
        rows, row_out = _axis_indices(draws["dy"].to(device), vflips, pad, h, out_h, mode)
        cols, col_out = _axis_indices(draws["dx"].to(device), flips, pad, w, out_w, mode)
        grid_rows, grid_cols = _grid(rows, cols, transpose)
        images = _gather(images, grid_rows, grid_cols)
        masks = _gather(masks, grid_rows, grid_cols) if masks is not None else None
        if row_out is not None and col_out is not None:
            out_rows, out_cols = _grid(row_out, col_out, transpose)
            outside = out_rows | out_cols  # (N, h, w)
            images = images.masked_fill(outside[:, None], 0)
            if masks is not None:
                fill = self.ignore_index if self.ignore_index is not None else 0
                masks = masks.masked_fill(outside if masks.ndim == 3 else outside[:, None], fill)
        return images, masks

    def cutout(self, images: Tensor, draws: dict[str, Tensor]) -> Tensor:
        """Normalised `images` with each one's square set to 0 (the mean colour)."""
        size = self.options.cutout
        if size <= 0:
            return images
        device, (h, w) = images.device, images.shape[-2:]
        top = (draws["cy"] - size // 2).to(device)[:, None]
        left = (draws["cx"] - size // 2).to(device)[:, None]
        ys, xs = torch.arange(h, device=device)[None], torch.arange(w, device=device)[None]
        inside_rows = (ys >= top) & (ys < top + size)  # (N, H)
        inside_cols = (xs >= left) & (xs < left + size)  # (N, W)
        hidden = inside_rows[:, :, None] & inside_cols[:, None, :]
        return images.masked_fill(hidden[:, None], 0.0)
