"""Embeddings to disk as they are predicted: `.npy` files of float32 rows plus an index CSV.

A data set of 25,000 images and 25,088-d VGG16 features is 2.5 GB of floats: collecting them in a
list and saving at the end would hold all of it in memory. `NpyRowWriter` instead writes the
`.npy` header first, with room for any row count, appends each batch's rows, and rewrites the
header with the final count on close, so memory stays one batch whatever the number of rows.
Files are written under a temporary name (`.<name>.<run id>.partial`) and moved into place when complete: a run that dies half way
leaves no `.npy` that looks finished. The result is an ordinary `.npy` (format 1.0):
`np.load(path, mmap_mode="r")` reads it without loading it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from vision_lightning.outputs.files import (
    CsvSink,
    clean_name,
    is_rank_part,
    merge_csv_parts,
    merged_path,
    part_paths,
    replace_atomically,
    write_csv,
)
from vision_lightning.outputs.run import OutputRun, current_run
from vision_lightning.utils.errors import InputError

NPY_MAGIC = b"\x93NUMPY\x01\x00"
HEADER_BYTES = 128  # magic (8) + length (2) + the header dict padded with spaces and ending in "\n"


def _npy_header(rows: int, width: int) -> bytes:
    """A format-1.0 header for a (rows, width) little-endian float32 C-order array, always
    `HEADER_BYTES` long (a multiple of 64, as numpy aligns it), so it can be rewritten in place."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {width}), }}"
    space = HEADER_BYTES - len(NPY_MAGIC) - 2
    if len(text) + 1 > space:
        raise InputError(f"an embedding file of shape ({rows}, {width}) does not fit the npy header")
    body = text.ljust(space - 1).encode("latin1") + b"\n"
    return NPY_MAGIC + len(body).to_bytes(2, "little") + body


class NpyRowWriter:
    """Append float32 rows of one width to `path` (a `.npy`), batch by batch, in constant memory.

    `write` converts each batch to a C-ordered float32 array and writes its bytes straight to the
    file: nothing is kept between calls except the row count. `close` fixes the header's row count
    and moves the temporary file to `path`.
    """

    def __init__(self, path: str | Path, width: int | None = None, run: OutputRun | None = None) -> None:
        self.path = Path(path)
        self.run = run or current_run()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.run.partial(self.path)
        self.width = width
        self.rows = 0
        self._handle: BinaryIO | None = self.partial.open("wb")
        self._handle.write(_npy_header(0, width or 0))  # placeholder until the width and count are known

    def write(self, rows: Any) -> None:
        """Append `rows`, an (N, width) array or tensor (any float dtype; stored as float32)."""
        if self._handle is None:
            raise InputError(f"embedding file {self.path} is already closed")
        if isinstance(rows, torch.Tensor):
            rows = rows.detach().to("cpu", torch.float32).numpy()
        array = np.ascontiguousarray(rows, dtype="<f4")
        if array.ndim != 2:
            raise InputError(f"embedding rows for {self.path} must be 2-D (N, D), got shape {array.shape}")
        if self.width is None:
            self.width = array.shape[1]
        if array.shape[1] != self.width:
            raise InputError(
                f"embedding rows for {self.path} have {array.shape[1]} values, earlier rows {self.width}"
            )
        self._handle.write(memoryview(array).cast("B"))
        self.rows += array.shape[0]

    def close(self) -> Path:
        """Write the final shape into the header and move the file into place."""
        if self._handle is None:
            return self.path
        self._handle.seek(0)
        self._handle.write(_npy_header(self.rows, self.width or 0))
        self._handle.close()
        self._handle = None
        return self.run.commit(self.partial, self.path, self.rows)


def embedding_file_name(layer: str | None, suffix: str = "") -> str:
    """`embeddings{suffix}.npy` for a single layer (None), `embeddings_<layer>{suffix}.npy` otherwise
    (the layer's name cleaned for a file name)."""
    return f"embeddings{suffix}.npy" if layer is None else f"embeddings_{clean_name(layer)}{suffix}.npy"


def label_text(label: Any, class_names: Sequence[str] | None) -> str:
    """A label for the index CSV: the class name of an id (the id without names), the names of a 0/1
    row's positive classes joined by ';' (multilabel), '' when unknown."""
    if label is None:
        return ""
    values = torch.as_tensor(label)
    if values.ndim == 0:
        index = int(values)
        return class_names[index] if class_names and 0 <= index < len(class_names) else str(index)
    positive = torch.nonzero(values >= 0.5).flatten().tolist()
    return ";".join(class_names[i] if class_names and i < len(class_names) else str(i) for i in positive)


class EmbeddingSink:
    """Embeddings of one predict run (one split) under `output_dir`.

    - `embeddings{suffix}.npy` when one layer is extracted, else `embeddings_<layer>{suffix}.npy`
      per layer: float32 (rows, D), row i belonging to row i of the index;
    - `embeddings{suffix}.csv`, the index: `row, path, label` (the class name when the data module
      knows `class_names`, else the id; empty when the image has no label);
    - `embeddings{suffix}.json`: row count, each layer's file and width, and the class names in
      their id order (what `EmbeddingDataModule` reads back).

    `write` takes `{"path": [...], "label"?: (N,) ids or (N, C) rows, "features": {layer: (N, D)}}`.
    """

    def __init__(
        self,
        output_dir: str | Path,
        suffix: str,
        layers: Sequence[str],
        class_names: Sequence[str] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.suffix = suffix
        self.layers = list(layers)
        if not self.layers:
            raise InputError("an embedding sink needs at least one layer name")
        self.class_names = list(class_names) if class_names else None
        self.run = current_run()
        single = len(self.layers) == 1
        self.files = {
            layer: self.output_dir / embedding_file_name(None if single else layer, suffix)
            for layer in self.layers
        }
        self._arrays = {layer: NpyRowWriter(path, run=self.run) for layer, path in self.files.items()}
        self.index_path = self.output_dir / f"embeddings{suffix}.csv"
        self._index = CsvSink(self.index_path, ["row", "path", "label"], self._index_rows)
        self.count = 0

    def _index_rows(self, outputs: dict[str, Any]):
        labels = outputs.get("label")
        for i, path in enumerate(outputs["path"]):
            yield [
                [self.count + i, path, label_text(None if labels is None else labels[i], self.class_names)]
            ]

    def write(self, outputs: dict[str, Any], indices: Sequence[int] | None = None) -> None:
        features = outputs["features"]
        count = len(outputs["path"])
        for layer, writer in self._arrays.items():
            if layer not in features:
                raise InputError(f"the predict step returned no features for layer {layer!r}")
            if len(features[layer]) != count:
                raise InputError(f"layer {layer!r} gave {len(features[layer])} rows for {count} paths")
            writer.write(features[layer])
        self._index.write(outputs, indices)
        self.count += count

    def close(self) -> Path:
        for writer in self._arrays.values():
            writer.close()
        self._index.close()
        widths = {layer: writer.width or 0 for layer, writer in self._arrays.items()}
        self._write_meta(self.index_path, self.files, widths, self.count)
        return self.index_path

    def _write_meta(self, index: Path, files: dict[str, Path], widths: dict[str, int], rows: int) -> None:
        meta = {
            "rows": rows,
            "index": index.name,
            "layers": {layer: {"file": files[layer].name, "dim": widths[layer]} for layer in files},
            "class_names": self.class_names,
        }
        meta_path = index.with_suffix(".json")
        write_text = lambda partial: partial.write_text(json.dumps(meta, indent=2) + "\n")  # noqa: E731
        replace_atomically(meta_path, write_text, self.run)

    def merge_parts(self, world_size: int, chunk: int = 1024) -> Path:
        """Every process's rows in one `.npy` per layer, in data-set order, with one index and one
        description; the parts are deleted. Rows are copied `chunk` at a time from memory-mapped parts."""
        if not is_rank_part(self.index_path):
            return self.index_path
        header, rows, sources = merge_csv_parts(part_paths(self.index_path, world_size))
        local_rows = [int(row[0]) for _, row in rows]
        files = {layer: merged_path(path) for layer, path in self.files.items()}
        widths = {}
        for layer, path in self.files.items():
            parts = part_paths(path, world_size)
            arrays = [np.load(part, mmap_mode="r") for part in parts]
            width = max(array.shape[1] for array in arrays) or None
            writer = NpyRowWriter(files[layer], width=width, run=self.run)
            for start in range(0, len(rows), chunk):
                picked = range(start, min(start + chunk, len(rows)))
                writer.write(np.stack([arrays[sources[i]][local_rows[i]] for i in picked]))
            writer.close()
            widths[layer] = writer.width or 0
            del arrays
            for part in parts:
                part.unlink()
        index = merged_path(self.index_path)
        write_csv(index, header, ([number, *row[1:]] for number, (_, row) in enumerate(rows)), self.run)
        self._write_meta(index, files, widths, len(rows))
        for part in part_paths(self.index_path.with_suffix(".json"), world_size):
            part.unlink(missing_ok=True)
        return index
