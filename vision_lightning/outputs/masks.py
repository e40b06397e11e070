"""Predicted segmentation masks as PNG files and, optionally, an RLE CSV."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vision_lightning.outputs.files import CsvSink, UniqueNames, save_png, unique_clean_names
from vision_lightning.outputs.run import current_run
from vision_lightning.utils.rle import rle_encode


@dataclass(frozen=True)
class RleOutput:
    """Also write predicted masks as run-length encodings: Kaggle's `carvana` (1-based absolute
    starts) or `siim` (relative offsets), pixels in column-major `F` or row-major `C` order."""

    format: Literal["carvana", "siim"] = "carvana"
    order: Literal["F", "C"] = "F"


def rle_output(value: str | RleOutput | dict | None) -> RleOutput | None:
    if value is None or isinstance(value, RleOutput):
        return value
    return RleOutput(**value) if isinstance(value, dict) else RleOutput(format=value)  # type: ignore[arg-type]


class MaskSink:
    """One PNG per predicted image under `output_dir/masks/` and, when `rle_format` is set, an RLE CSV.

    PNGs hold class ids for multiclass and 0/255 for binary; multilabel writes one 0/255 PNG per
    class (`<name>_<class>.png`, the class name cleaned for a file name). The CSV (`masks.csv`) has a row per image for binary masks and a
    row per image and class (background excepted for multiclass) otherwise, empty masks included.
    """

    def __init__(
        self,
        output_dir: Path,
        suffix: str,
        mode: str,
        class_names: Sequence[str],
        rle_format: str | None = None,
        rle_order: str = "F",
    ) -> None:
        self.folder = output_dir / "masks"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.mode, self.class_names = mode, list(class_names)
        self.rle_format, self.rle_order = rle_format, rle_order
        self.names = UniqueNames()
        self.class_file_names = unique_clean_names(self.class_names)
        self.run = current_run()
        self._csv = None
        if rle_format:
            header = ["id", "rle"] if mode == "binary" else ["id", "class", "rle"]
            self._csv = CsvSink(output_dir / f"masks{suffix}.csv", header, self._rows)
        self.count = 0

    def _rows(self, outputs: list[tuple[str, np.ndarray]]):
        encode = self.rle_format, self.rle_order
        for name, mask in outputs:  # the rows of each image
            if self.mode == "binary":
                yield [[name, rle_encode(mask, *encode)]]
            elif self.mode == "multiclass":
                yield [
                    [name, self.class_names[class_id], rle_encode(mask == class_id, *encode)]
                    for class_id in range(1, len(self.class_names))
                ]
            else:
                yield [
                    [name, class_name, rle_encode(mask[class_id], *encode)]
                    for class_id, class_name in enumerate(self.class_names)
                ]

    def write(self, outputs: dict[str, Any], indices: Sequence[int] | None = None) -> None:
        written = []
        for path, mask in zip(outputs["path"], outputs["masks"]):
            name = self.names(path)
            if self.mode == "multilabel":
                for class_id, class_name in enumerate(self.class_file_names):
                    save_png(mask[class_id] * 255, self.folder / f"{name}_{class_name}.png", self.run)
            else:
                png = mask * 255 if self.mode == "binary" else mask
                save_png(png, self.folder / f"{name}.png", self.run)
            written.append((name, mask))
            self.count += 1
        if self._csv is not None:
            self._csv.write(written, indices)

    def close(self) -> Path:
        if self._csv is not None:
            self._csv.close()
        return self.folder

    def merge_parts(self, world_size: int) -> Path:
        """The PNGs are already in place; the RLE CSV's parts become one."""
        if self._csv is not None:
            self._csv.merge_parts(world_size)
        return self.folder
