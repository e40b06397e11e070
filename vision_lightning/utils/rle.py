"""Run-length encoding of binary masks in the two conventions of Kaggle segmentation data sets.

A mask of shape (height, width) is flattened to a line of pixels, and each run of foreground pixels is
written as two integers. `order` says how pixels are numbered: "F" (column-major: down the first column,
then the next, so pixel 2 of a 1-based numbering is (row 1, col 0)), which is what Kaggle's descriptions
state, or "C" (row-major, `mask.flatten()`), which is what some files actually use (Carvana's
train_masks.csv in practice).

- `format="carvana"` (Carvana, Airbus ship detection, DSB 2018, HuBMAP, ...): pairs "start length" where
  start is the 1-based ABSOLUTE position of the run's first pixel; "1 3 10 5" means pixels 1-3 and
  10-14. An empty mask is "".
- `format="siim"` (SIIM-ACR pneumothorax, its `mask_functions.py`): pairs "offset length" where offset is
  RELATIVE and 0-based: the number of background pixels between the end of the previous run (or pixel 0,
  for the first run) and the start of this one; "0 3 6 5" means 0-based pixels 0-2 and 9-13. An empty
  mask is "-1" (the CSV stores " -1"). SIIM's official functions number pixels column-major ("F").

Decoding checks every number and raises `InputError` with a sentence that starts with the caller's
`where` (say "train_masks.csv row 12 (id 00087a6bd4dc_01)"). Carvana runs may overlap or come unsorted
(the mask is their union); a run past the end of the image is an error, as it usually means a wrong shape
or order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

import numpy as np

from vision_lightning.utils.errors import InputError

RleFormat = Literal["carvana", "siim"]
RleOrder = Literal["F", "C"]

_FORMATS = ("carvana", "siim")
_ORDERS = ("F", "C")


def _check_options(format: str, order: str) -> None:
    if format not in _FORMATS:
        raise InputError(f"RLE format must be one of {', '.join(_FORMATS)}, got {format!r}")
    if order not in _ORDERS:
        raise InputError(f"RLE pixel order must be 'F' (column-major) or 'C' (row-major), got {order!r}")


def _runs(mask: np.ndarray, order: str) -> tuple[np.ndarray, np.ndarray]:
    """0-based start and end (exclusive) of each foreground run of the flattened mask."""
    foreground = mask != 0
    line = (foreground.T if order == "F" else foreground).reshape(-1)
    if line.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    changes = np.flatnonzero(line[1:] != line[:-1]) + 1
    head = [0] if line[0] else []
    tail = [line.size] if line[-1] else []
    changes = np.concatenate((head, changes, tail)).astype(np.int64)
    return changes[0::2], changes[1::2]


def _join(first: np.ndarray, lengths: np.ndarray) -> str:
    pairs = np.empty(2 * first.size, dtype=np.int64)
    pairs[0::2] = first
    pairs[1::2] = lengths
    return " ".join(map(str, pairs.tolist()))


def rle_encode(mask: np.ndarray, format: RleFormat = "carvana", order: RleOrder = "F") -> str:
    """Encode a 2-D mask (nonzero = foreground) as `format` RLE, pixels numbered in `order`."""
    _check_options(format, order)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"rle_encode needs a 2-D (height, width) mask, got shape {tuple(mask.shape)}")
    starts, ends = _runs(mask, order)
    if format == "carvana":
        return _join(starts + 1, ends - starts)
    if starts.size == 0:
        return "-1"
    previous_ends = np.concatenate(([0], ends[:-1]))
    return _join(starts - previous_ends, ends - starts)


def _is_empty(rle: object, format: str) -> bool:
    if rle is None or (isinstance(rle, float) and math.isnan(rle)):  # an empty CSV cell read by pandas
        return True
    return isinstance(rle, str) and rle.strip() in (("", "-1") if format == "siim" else ("",))


def _is_int64(token: str) -> bool:
    try:
        np.int64(int(token))
    except (ValueError, OverflowError):
        return False
    return True


def _parse(rle: object, format: str, where: str) -> np.ndarray:
    if not isinstance(rle, str):
        raise InputError(f"{where}: the RLE must be a string, got {type(rle).__name__} {rle!r}")
    tokens = rle.split()
    try:
        values = np.array([int(token) for token in tokens], dtype=np.int64)
    except (ValueError, OverflowError):
        index, token = next((i, t) for i, t in enumerate(tokens) if not _is_int64(t))
        raise InputError(
            f"{where}: value {index + 1} of the RLE, {token!r}, is not an integer that fits in 64 bits"
        ) from None
    if values.size % 2:
        raise InputError(
            f"{where}: the RLE has an odd number of values ({values.size}); it must be pairs of "
            f"{'start' if format == 'carvana' else 'offset'} and length"
        )
    return values


def rle_decode(
    rle: str,
    shape: tuple[int, int],
    format: RleFormat = "carvana",
    order: RleOrder = "F",
    where: str = "RLE",
) -> np.ndarray:
    """Decode an RLE string into a uint8 0/1 mask of `shape` (height, width).

    An empty string (and "-1" for SIIM; also None or NaN, as pandas reads empty cells) is an empty mask.
    Errors are `InputError` whose message starts with `where`.
    """
    _check_options(format, order)
    height, width = _check_shape(shape, where)
    size = height * width
    if _is_empty(rle, format):
        return np.zeros((height, width), dtype=np.uint8)
    if format == "carvana" and isinstance(rle, str) and rle.strip() == "-1":
        raise InputError(
            f"{where}: '-1' is how the siim format writes an empty mask; in the carvana format an empty "
            "mask is an empty string (is this file in the siim format?)"
        )
    values = _parse(rle, format, where)
    first, lengths = values[0::2], values[1::2]
    name = "start" if format == "carvana" else "offset"

    bad = np.flatnonzero(first < (1 if format == "carvana" else 0))
    if bad.size:
        i = bad[0]
        rule = "1-based and at least 1" if format == "carvana" else "0 or more"
        raise InputError(
            f"{where}: run {i + 1} has {name} {first[i]}; {format} {name}s are {rule}"
            + ("" if format == "carvana" else " (an empty mask is written '-1' on its own)")
        )
    bad = np.flatnonzero(lengths < 1)
    if bad.size:
        i = bad[0]
        raise InputError(
            f"{where}: run {i + 1} ({name} {first[i]}) has length {lengths[i]}; lengths must be 1 or more"
        )

    # Any number above `size` means a run past the end; clipping keeps the sums below from overflowing.
    clipped_first, clipped_lengths = np.minimum(first, size + 1), np.minimum(lengths, size + 1)
    if format == "carvana":
        starts = clipped_first - 1
    else:  # each offset counts from the end of the previous run
        starts = np.cumsum(clipped_first) + np.concatenate(([0], np.cumsum(clipped_lengths)[:-1]))
    ends = starts + clipped_lengths
    bad = np.flatnonzero(ends > size)
    if bad.size:
        i = bad[0]
        if format == "carvana":
            last = f"pixel {int(first[i]) + int(lengths[i]) - 1}"
        else:  # exact Python integers, as the clipped sums are only good for telling that it is past the end
            end = sum(int(v) for v in first[: i + 1]) + sum(int(v) for v in lengths[: i + 1])
            last = f"0-based pixel {end - 1}"
        raise InputError(
            f"{where}: run {i + 1} ({name} {first[i]}, length {lengths[i]}) ends at {last}, past the end "
            f"of the {height}x{width} image ({size} pixels); are the shape (height, width), format and "
            "order right?"
        )

    flat = _fill(starts, ends, size)
    if order == "F":
        return np.ascontiguousarray(flat.reshape(width, height).T)
    return flat.reshape(height, width)


def _fill(starts: np.ndarray, ends: np.ndarray, size: int) -> np.ndarray:
    """Flat uint8 0/1 line of `size` pixels with [start, end) of every run set."""
    if np.all(starts[1:] >= ends[:-1]):  # sorted, not overlapping: alternate background and foreground
        counts = np.empty(2 * starts.size + 1, dtype=np.int64)
        counts[0:-1:2] = starts - np.concatenate(([0], ends[:-1]))
        counts[1::2] = ends - starts
        counts[-1] = size - ends[-1]
        values = np.zeros(counts.size, dtype=np.uint8)
        values[1::2] = 1
        return np.repeat(values, counts)
    # +1 where a run starts, -1 where one ends: a running sum > 0 is covered by some run (union of overlaps).
    edges = np.bincount(starts, minlength=size + 1) - np.bincount(ends, minlength=size + 1)
    return (np.cumsum(edges[:size]) > 0).view(np.uint8)


def rle_decode_many(
    rles: Iterable[str],
    shape: tuple[int, int],
    format: RleFormat = "carvana",
    order: RleOrder = "F",
    where: str = "RLE",
) -> np.ndarray:
    """The union of several RLE strings as one uint8 0/1 mask (SIIM lists one row per instance)."""
    _check_options(format, order)
    height, width = _check_shape(shape, where)
    rles = [rles] if isinstance(rles, str) else list(rles)
    mask = np.zeros((height, width), dtype=np.uint8)
    for index, rle in enumerate(rles):
        mask |= rle_decode(rle, (height, width), format, order, f"{where} (RLE {index + 1} of {len(rles)})")
    return mask


def _check_shape(shape: tuple[int, int], where: str) -> tuple[int, int]:
    try:
        height, width = (int(side) for side in shape)
        valid = height > 0 and width > 0 and (height, width) == tuple(shape)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise InputError(
            f"{where}: the mask shape must be two positive integers (height, width), got {shape!r}"
        )
    return height, width
