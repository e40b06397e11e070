"""PredictionWriter: streams each predict batch to files under `output_dir` as the task says.

The task decides the format through `prediction_sink(output_dir, suffix)` (sinks live in
`vision_lightning.outputs`): a CSV of class names and probabilities for classification, PNG masks for
segmentation, and so on. Rows go to disk batch by batch, so predicting a large folder does not grow
memory.

Under DDP each process writes its part (`predictions.rank1.csv`, each item with its data-set index),
and when all are done the first merges the parts into the files a single process would write, in
data-set order: one complete set, nothing duplicated (Lightning's predict sampler does not pad) or
lost. Per-image files (masks, images) are named from the whole data set's paths, so two processes
never choose one name for different images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from vision_lightning.outputs.files import PredictionSink, UniqueNames

log = logging.getLogger(__name__)


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
        loaders = _as_list(trainer.predict_dataloaders)
        self._sinks = {}
        for i, name in enumerate(names):
            sink = pl_module.prediction_sink(output_dir, f"{name}{rank}")
            item_names = (
                getattr(getattr(loaders[i], "dataset", None), "item_names", None)
                if i < len(loaders)
                else None
            )
            paths = item_names() if callable(item_names) else None
            if paths is not None and isinstance(getattr(sink, "names", None), UniqueNames):
                sink.names = UniqueNames(paths)  # the same name for an image whichever process predicts it
            self._sinks[i] = sink

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ):
        self._sinks[dataloader_idx].write(prediction, list(batch_indices) if batch_indices else None)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sinks, self._sinks = self._sinks, {}
        paths = [sink.close() for sink in sinks.values()]
        if trainer.world_size > 1:
            trainer.strategy.barrier("prediction parts written")
            if trainer.is_global_zero:
                paths = [sink.merge_parts(trainer.world_size) for sink in sinks.values()]
            trainer.strategy.barrier("prediction parts merged")
        if trainer.is_global_zero:
            for path in paths:
                log.info("Predictions written to %s", path)
                print(f"Predictions written to {path}")


def _as_list(loaders) -> list:
    if loaders is None:
        return []
    return list(loaders) if isinstance(loaders, list | tuple) else [loaders]


def loader_suffixes(trainer: pl.Trainer) -> list[str]:
    """A file-name suffix per predict dataloader: the data module's `predict_splits` (`_train`,
    `_val`) when it names them, `""` for a single unnamed loader, else the loader's index."""
    counts = trainer.num_predict_batches
    count = len(counts) if isinstance(counts, (list, tuple)) else 1
    splits = getattr(getattr(trainer, "datamodule", None), "predict_splits", None)
    if splits and len(splits) == count:
        return [f"_{split}" for split in splits]
    return [""] if count == 1 else [f"_{i}" for i in range(count)]
