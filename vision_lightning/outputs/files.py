"""Where prediction outputs go: a CSV streamed row by row, file names from input paths, PNGs written
atomically. Every sink has `write(outputs, indices)` (one predict batch and the data-set index of each
of its items), `close() -> Path`, and `merge_parts(world_size) -> Path`.

Under multi-process prediction each process writes its own part of every file that lists items
(`predictions.rank1.csv`, `embeddings.rank1.npy`): parts carry each item's data-set index, and when
every process is done the first one merges them into the one file a single process would have
written, in data-set order, and deletes the parts. Files written per image (masks, images) go
straight to their place, under names decided from the whole data set's paths (`UniqueNames`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

INDEX_COLUMN = "_index"
_RANK_PART = re.compile(r"^(?P<stem>.*)\.rank(?P<rank>\d+)(?P<ext>\.[^.]+)$")


class PredictionSink(Protocol):
    def write(self, outputs: Any, indices: Sequence[int] | None = None) -> None: ...

    def close(self) -> Path: ...

    def merge_parts(self, world_size: int) -> Path: ...


def is_rank_part(path: Path) -> bool:
    """Whether `path` is one process's part of a file (`predictions.rank1.csv`)."""
    return _RANK_PART.match(path.name) is not None


def merged_path(path: Path) -> Path:
    """The file that the parts of `path` merge into (`predictions.rank0.csv` -> `predictions.csv`)."""
    match = _RANK_PART.match(path.name)
    return path if match is None else path.with_name(match["stem"] + match["ext"])


def part_paths(path: Path, world_size: int) -> list[Path]:
    """Every process's part of the file whose part `path` is, in rank order."""
    match = _RANK_PART.match(path.name)
    if match is None:
        return [path]
    return [path.with_name(f"{match['stem']}.rank{rank}{match['ext']}") for rank in range(world_size)]


def replace_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """`write(partial)` then move the partial file to `path`: a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    write(partial)
    partial.replace(path)
    return path


class CsvSink:
    """Appends `rows(outputs)` to a CSV with `header`; written atomically on close.

    `rows(outputs)` yields, per item of the batch, the list of that item's rows (one for a class
    prediction, one per class for RLE masks). A part of a multi-process run (`*.rankN.csv`) has a
    first column `_index` with each row's item's data-set index, which `merge_parts` sorts by and drops.
    """

    def __init__(
        self, path: Path, header: Sequence[str], rows: Callable[[Any], Iterable[Sequence[Sequence[Any]]]]
    ) -> None:
        self.path, self.rows = path, rows
        self.indexed = is_rank_part(path)
        self._partial = path.with_name(path.name + ".partial")
        self._handle = self._partial.open("w", newline="")
        self._writer = csv.writer(self._handle)
        self._writer.writerow(([INDEX_COLUMN] if self.indexed else []) + list(header))
        self.count = 0

    def write(self, outputs: Any, indices: Sequence[int] | None = None) -> None:
        for position, item_rows in enumerate(self.rows(outputs)):
            prefix = [indices[position] if indices is not None else self.count] if self.indexed else []
            for row in item_rows:
                self._writer.writerow(prefix + list(row))
                self.count += 1

    def close(self) -> Path:
        self._handle.close()
        self._partial.replace(self.path)
        return self.path

    def merge_parts(self, world_size: int) -> Path:
        """Merge every process's part into one CSV in data-set order, without the index column."""
        if not self.indexed:
            return self.path
        header, rows, _ = merge_csv_parts(part_paths(self.path, world_size))
        return write_csv(merged_path(self.path), header, (row for _, row in rows))


def merge_csv_parts(parts: Sequence[Path]) -> tuple[list[str], list[tuple[int, list[str]]], list[int]]:
    """(header without `_index`, [(data-set index, row)] sorted by index, the part each row came
    from) of CSV parts, which are deleted."""
    header: list[str] = []
    rows: list[tuple[int, list[str], int]] = []
    for number, part in enumerate(parts):
        with part.open(newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader)[1:]
            rows.extend((int(row[0]), row[1:], number) for row in reader)
    rows.sort(key=lambda item: item[0])  # stable: an item's rows keep their order
    for part in parts:
        part.unlink()
    return header, [(index, row) for index, row, _ in rows], [number for _, _, number in rows]


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    def write(partial: Path) -> None:
        with partial.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)

    return replace_atomically(path, write)


class BatchNames:
    """Each predict batch's names: its `"path"` entries, or without them names by position
    (`image_000012`): the items' data-set indices when the trainer knows them (also right when
    several processes each predict a part), else counted from the first batch of each run."""

    def __init__(self) -> None:
        self._next = 0

    def __call__(self, batch: Any, count: int, batch_idx: int, trainer: Any = None) -> list[str]:
        if "path" in batch:
            return [str(p) for p in batch["path"]]
        indices = predict_batch_indices(trainer)
        if indices is not None and len(indices) == count:
            return [f"image_{index:06d}" for index in indices]
        start = 0 if batch_idx == 0 else self._next
        self._next = start + count
        return [f"image_{start + i:06d}" for i in range(count)]


def predict_batch_indices(trainer: Any) -> list[int] | None:
    """The data-set indices of the batch being predicted (Lightning tracks them for prediction
    writers), or None outside `predict` or when the loader cannot tell."""
    if trainer is None or not getattr(trainer, "predicting", False):
        return None
    indices = getattr(getattr(trainer, "predict_loop", None), "current_batch_indices", None)
    return list(indices) if indices else None


class UniqueNames:
    """Output names from input paths: the file stem; a stem already used gets its folder's name too.

    Given every path of the data set up front (`paths`), names are decided in data-set order, so
    they do not depend on which process or in which order an image is predicted."""

    def __init__(self, paths: Sequence[str] | None = None) -> None:
        self._used: set[str] = set()
        self._known: dict[str, str] = {}
        for path in paths or ():
            if path not in self._known:
                self._known[path] = self._new(path)

    def _new(self, path: str) -> str:
        source = Path(path)
        name = source.stem
        if name in self._used:
            name = f"{source.parent.name}_{name}"
        while name in self._used:
            name += "_"
        self._used.add(name)
        return name

    def __call__(self, path: str) -> str:
        known = self._known.get(path)
        return known if known is not None else self._new(path)


def save_png(array: np.ndarray, path: Path) -> None:
    """Write an HxW or HxWx3 array as a PNG atomically (8-bit, or 16-bit for values past 255)."""
    partial = path.with_name(path.name + ".partial")
    image = Image.fromarray(array.astype(np.uint8 if array.max(initial=0) < 256 else np.uint16))
    image.save(partial, format="PNG")
    partial.replace(path)
