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
from lightning.pytorch.callbacks import BasePredictionWriter

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


class PredictionWriter(BasePredictionWriter):
    """Write predictions under `output_dir` in the format of the task being predicted."""

    def __init__(self, output_dir: str = "predictions") -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self._sink: PredictionSink | None = None

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not hasattr(pl_module, "prediction_sink"):
            raise TypeError(
                f"{type(pl_module).__name__} has no prediction_sink(output_dir, suffix) to write with"
            )
        output_dir = Path(self.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        suffix = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        self._sink = pl_module.prediction_sink(output_dir, suffix)

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ):
        self._sink.write(prediction)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._sink is not None:
            path = self._sink.close()
            self._sink = None
            log.info("Predictions written to %s", path)
            print(f"Predictions written to {path}")
