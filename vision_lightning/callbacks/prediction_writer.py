"""PredictionWriter: streams each predict batch to files under `output_dir` as the task says.

The task decides the format through `prediction_sink(output_dir, suffix)`: a CSV of class names and
probabilities for classification, PNG masks for segmentation, and so on. Rows go to disk batch by
batch, so predicting a large folder does not grow memory. Each process of a multi-GPU run writes
its own file (`predictions.rank1.csv`).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from vision_lightning.utils.rle import rle_encode

log = logging.getLogger(__name__)


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


class PredictionWriter(BasePredictionWriter):
    """Write predictions under `output_dir` in the format of the task being predicted.

    One sink per predict dataloader. A single loader writes the task's plain names
    (`predictions.csv`); when the data module names its loaders (`predict_splits: [train, val]`)
    each sink's files carry the split (`embeddings_train.npy`, `predictions_val.csv`), and
    several unnamed loaders get their index (`predictions_0.csv`, `predictions_1.csv`).
    """

    def __init__(self, output_dir: str = "predictions") -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self._sinks: dict[int, PredictionSink] = {}

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not hasattr(pl_module, "prediction_sink"):
            raise TypeError(
                f"{type(pl_module).__name__} has no prediction_sink(output_dir, suffix) to write with"
            )
        output_dir = Path(self.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        rank = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        names = loader_suffixes(trainer)
        self._sinks = {
            i: pl_module.prediction_sink(output_dir, f"{name}{rank}") for i, name in enumerate(names)
        }

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ):
        self._sinks[dataloader_idx].write(prediction)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sinks, self._sinks = self._sinks, {}
        for sink in sinks.values():
            path = sink.close()
            log.info("Predictions written to %s", path)
            print(f"Predictions written to {path}")


def loader_suffixes(trainer: pl.Trainer) -> list[str]:
    """A file-name suffix per predict dataloader: the data module's `predict_splits` (`_train`,
    `_val`) when it names them, `""` for a single unnamed loader, else the loader's index."""
    counts = trainer.num_predict_batches
    count = len(counts) if isinstance(counts, (list, tuple)) else 1
    splits = getattr(getattr(trainer, "datamodule", None), "predict_splits", None)
    if splits and len(splits) == count:
        return [f"_{split}" for split in splits]
    return [""] if count == 1 else [f"_{i}" for i in range(count)]


class MaskSink:
    """One PNG per predicted image under `output_dir/masks/` and, when `rle_format` is set, an RLE CSV.

    PNGs hold class ids for multiclass and 0/255 for binary; multilabel writes one 0/255 PNG per
    class (`<name>_<class>.png`). The CSV (`masks.csv`) has a row per image for binary masks and a
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
        self._name = UniqueNames()
        self._csv = None
        if rle_format:
            header = ["id", "rle"] if mode == "binary" else ["id", "class", "rle"]
            self._csv = CsvSink(output_dir / f"masks{suffix}.csv", header, self._rows)
        self.count = 0

    def _rows(self, outputs: list[tuple[str, np.ndarray]]):
        for name, mask in outputs:
            if self.mode == "binary":
                yield [name, rle_encode(mask, self.rle_format, self.rle_order)]
            elif self.mode == "multiclass":
                for class_id in range(1, len(self.class_names)):
                    rle = rle_encode(mask == class_id, self.rle_format, self.rle_order)
                    yield [name, self.class_names[class_id], rle]
            else:
                for class_id, class_name in enumerate(self.class_names):
                    yield [name, class_name, rle_encode(mask[class_id], self.rle_format, self.rle_order)]

    def write(self, outputs: dict[str, Any]) -> None:
        written = []
        for path, mask in zip(outputs["path"], outputs["masks"]):
            name = self._name(path)
            if self.mode == "multilabel":
                for class_id, class_name in enumerate(self.class_names):
                    save_png(mask[class_id] * 255, self.folder / f"{name}_{class_name}.png")
            else:
                save_png(mask * 255 if self.mode == "binary" else mask, self.folder / f"{name}.png")
            written.append((name, mask))
            self.count += 1
        if self._csv is not None:
            self._csv.write(written)

    def close(self) -> Path:
        if self._csv is not None:
            self._csv.close()
        return self.folder


class ImageSink:
    """One PNG per predicted image under `output_dir/images/`, named after its input file.

    The task's `predict_step` returns `{"path": [...], "images": [uint8 HxWx3 arrays]}`.
    """

    def __init__(self, output_dir: Path, suffix: str = "") -> None:
        self.folder = output_dir / "images"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._name = UniqueNames()
        self.count = 0

    def write(self, outputs: dict[str, Any]) -> None:
        for path, image in zip(outputs["path"], outputs["images"]):
            save_png(image, self.folder / f"{self._name(path)}.png")
            self.count += 1

    def close(self) -> Path:
        return self.folder
