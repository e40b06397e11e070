"""Where prediction outputs go: a CSV streamed row by row, file names from input paths, PNGs written
atomically. Every sink has `write(outputs)` (one predict batch) and `close() -> Path`."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image


class PredictionSink(Protocol):
    def write(self, outputs: Any) -> None: ...

    def close(self) -> Path: ...


class CsvSink:
    """Appends `rows(outputs)` to a CSV with `header`; written atomically on close."""

    def __init__(
        self, path: Path, header: Sequence[str], rows: Callable[[Any], Iterable[Sequence[Any]]]
    ) -> None:
        self.path, self.rows = path, rows
        self._partial = path.with_name(path.name + ".partial")
        self._handle = self._partial.open("w", newline="")
        self._writer = csv.writer(self._handle)
        self._writer.writerow(header)
        self.count = 0

    def write(self, outputs: Any) -> None:
        for row in self.rows(outputs):
            self._writer.writerow(row)
            self.count += 1

    def close(self) -> Path:
        self._handle.close()
        self._partial.replace(self.path)
        return self.path


class BatchNames:
    """Each predict batch's names: its `"path"` entries, or without them names by position
    (`image_000012`), counted from the first batch of each run (batch 0 starts again at 0)."""

    def __init__(self) -> None:
        self._next = 0

    def __call__(self, batch: Any, count: int, batch_idx: int) -> list[str]:
        if "path" in batch:
            return [str(p) for p in batch["path"]]
        start = 0 if batch_idx == 0 else self._next
        self._next = start + count
        return [f"image_{start + i:06d}" for i in range(count)]


class UniqueNames:
    """Output names from input paths: the file stem; a stem already used gets its folder's name too."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def __call__(self, path: str) -> str:
        source = Path(path)
        name = source.stem
        if name in self._used:
            name = f"{source.parent.name}_{name}"
        while name in self._used:
            name += "_"
        self._used.add(name)
        return name


def save_png(array: np.ndarray, path: Path) -> None:
    """Write an HxW or HxWx3 array as a PNG atomically (8-bit, or 16-bit for values past 255)."""
    partial = path.with_name(path.name + ".partial")
    image = Image.fromarray(array.astype(np.uint8 if array.max(initial=0) < 256 else np.uint16))
    image.save(partial, format="PNG")
    partial.replace(path)
