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
import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from vision_lightning.outputs.run import OutputRun, current_run

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


def replace_atomically(
    path: Path, write: Callable[[Path], None], run: OutputRun | None = None, rows: int | None = None
) -> Path:
    """`write(partial)` then move the partial file to `path`: a reader never sees half a file."""
    run = run or current_run()
    partial = run.partial(path)
    write(partial)
    return run.commit(partial, path, rows)


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
        self.run = current_run()
        self._partial = self.run.partial(path)
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
        return self.run.commit(self._partial, self.path, self.count)

    def merge_parts(self, world_size: int) -> Path:
        """Merge every process's part into one CSV in data-set order, without the index column."""
        if not self.indexed:
            return self.path
        header, rows, _ = merge_csv_parts(part_paths(self.path, world_size))
        return write_csv(merged_path(self.path), header, (row for _, row in rows), self.run)


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


def write_csv(
    path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]], run: OutputRun | None = None
) -> Path:
    count = 0

    def write(partial: Path) -> None:
        nonlocal count
        with partial.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for row in rows:
                writer.writerow(row)
                count += 1

    run = run or current_run()
    partial = run.partial(path)
    write(partial)
    return run.commit(partial, path, count)


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


#: Windows refuses these as file names, whatever the extension (`con.png`).
_WINDOWS_RESERVED = {
    "CON",
    "PRN",
    "AUX",
    "NUL",
    *(f"{port}{i}" for port in ("COM", "LPT") for i in range(1, 10)),
}
_UNSAFE = re.compile(r'[<>:"/\\|?*]')
MAX_NAME_BYTES = 120


def clean_name(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """`name` (a class name, an image's stem) made safe as one file name, or part of one, anywhere.

    Path separators and the characters Windows forbids become `_`, control and other invisible
    characters too; runs of dots become one and leading or trailing dots and spaces go (no `..`, no
    hidden files); Windows' reserved names (`CON`, `nul`, `COM1`, ...) get a leading `_`; an empty
    result is `_`; a name longer than `max_bytes` (UTF-8) is cut and ends in 8 hex digits of its hash,
    so long names that differ stay different."""
    text = unicodedata.normalize("NFC", str(name))
    text = "".join("_" if unicodedata.category(c)[0] == "C" else c for c in _UNSAFE.sub("_", text))
    text = re.sub(r"\.{2,}", ".", text).strip(" .") or "_"
    if text.split(".")[0].strip().upper() in _WINDOWS_RESERVED:
        text = "_" + text
    encoded = text.encode()
    if len(encoded) > max_bytes:
        digest = hashlib.sha1(str(name).encode()).hexdigest()[:8]
        text = encoded[: max_bytes - 9].decode(errors="ignore").rstrip(" .") + "-" + digest
    return text


def unique_clean_names(names: Iterable[str]) -> list[str]:
    """`clean_name` of each name, names equal after cleaning (or differing only in case, the same file
    on Windows and macOS) made unique with `_2`, `_3`, ..."""
    used: set[str] = set()
    cleaned = []
    for name in names:
        base = candidate = clean_name(name)
        number = 2
        while candidate.casefold() in used:
            candidate, number = f"{base}_{number}", number + 1
        used.add(candidate.casefold())
        cleaned.append(candidate)
    return cleaned


class UniqueNames:
    """Output names from input paths: the file stem; a stem already used gets its folder's name too,
    and then a number. Names are cleaned (`clean_name`) and unique whatever the case.

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
        name = clean_name(source.stem)
        if name.casefold() in self._used:
            name = clean_name(f"{source.parent.name}_{source.stem}")
        base, number = name, 2
        while name.casefold() in self._used:
            name, number = f"{base}_{number}", number + 1
        self._used.add(name.casefold())
        return name

    def __call__(self, path: str) -> str:
        known = self._known.get(path)
        return known if known is not None else self._new(path)


def save_png(array: np.ndarray, path: Path, run: OutputRun | None = None) -> None:
    """Write an HxW or HxWx3 array as a PNG atomically (8-bit, or 16-bit for values past 255)."""
    run = run or current_run()
    partial = run.partial(path)
    image = Image.fromarray(array.astype(np.uint8 if array.max(initial=0) < 256 else np.uint16))
    image.save(partial, format="PNG")
    run.commit(partial, path)
