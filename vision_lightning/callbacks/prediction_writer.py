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
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from vision_lightning.outputs.files import PredictionSink, UniqueNames, clean_name
from vision_lightning.outputs.run import EXISTING_CHOICES, OutputRun, active
from vision_lightning.utils.errors import InputError

log = logging.getLogger(__name__)


class PredictionWriter(BasePredictionWriter):
    """Write predictions under `output_dir` in the format of the task being predicted.

    One sink per predict dataloader. A single loader writes the task's plain names
    (`predictions.csv`); when the data module names its loaders (`predict_splits: [train, val]`)
    each sink's files carry the split (`embeddings_train.npy`, `predictions_val.csv`), and
    several unnamed loaders get their index (`predictions_0.csv`, `predictions_1.csv`).

    Each run owns its files (`vision_lightning.outputs.run`): temporary names unique to the run,
    files moved into place whole, a lock against a second run into the same folder, and
    `prediction_run.json` written last, listing the files, the checkpoint, the items predicted and
    the unreadable ones skipped. `existing` says what to do with a folder that is not empty:
    `error` (refuse it), `overwrite` (delete what earlier runs recorded, then write; files no run
    recorded are never deleted: the run is refused, naming them) or `add` (keep it; a file this run
    would write that exists already is an error). A run with nothing readable to predict is an error.
    """

    def __init__(
        self, output_dir: str = "predictions", existing: Literal["error", "overwrite", "add"] = "error"
    ) -> None:
        super().__init__(write_interval="batch")
        if existing not in EXISTING_CHOICES:
            raise InputError(f"existing must be one of {', '.join(EXISTING_CHOICES)}, got {existing!r}")
        self.output_dir = output_dir
        self.existing = existing
        self._sinks: dict[int, PredictionSink] = {}
        self._run: OutputRun | None = None
        self._items = 0
        self._skipped: list[str] = []

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not hasattr(pl_module, "prediction_sink"):
            raise TypeError(
                f"{type(pl_module).__name__} has no prediction_sink(output_dir, suffix) to write with"
            )
        loaders = _as_list(trainer.predict_dataloaders)
        datasets = [getattr(loader, "dataset", None) for loader in loaders]
        self._skipped = list(getattr(trainer.datamodule, "skipped_predict_images", None) or ())
        _refuse_nothing_to_predict(trainer, datasets, self._skipped)
        output_dir = Path(self.output_dir)
        self._run = run = self._start_run(trainer, output_dir)
        rank = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        names = loader_suffixes(trainer)
        self._sinks, self._items = {}, 0
        with active(run):
            for i, name in enumerate(names):
                sink = pl_module.prediction_sink(output_dir, f"{name}{rank}")
                item_names = getattr(datasets[i], "item_names", None) if i < len(datasets) else None
                paths = item_names() if callable(item_names) else None
                if paths is not None and isinstance(getattr(sink, "names", None), UniqueNames):
                    # the same name for an image whichever process predicts it
                    sink.names = UniqueNames(paths)
                self._sinks[i] = sink

    def _start_run(self, trainer: pl.Trainer, output_dir: Path) -> OutputRun:
        """The first process prepares the folder (lock, earlier contents) and decides the run id;
        every process then writes under that id, or stops with the first one's error."""
        option = "existing (CLI: --prediction_writer.existing)"
        run, error = None, None
        if trainer.is_global_zero:
            run = OutputRun(output_dir, self.existing, option=option)
            try:
                run.prepare()
            except InputError as caught:
                error = caught
        run_id, message = trainer.strategy.broadcast(
            (run.run_id if run else None, None if error is None else str(error)), src=0
        )
        if error is not None:
            raise error
        if message is not None:
            raise InputError(message)
        if run is None:
            run = OutputRun(output_dir, self.existing, run_id=run_id, rank=trainer.global_rank, option=option)
        run.open_journal()
        return run

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0
    ):
        indices = list(batch_indices) if batch_indices else None
        self._sinks[dataloader_idx].write(prediction, indices)
        paths = prediction.get("path") if isinstance(prediction, dict) else None
        self._items += len(paths) if paths is not None else len(indices or ())

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sinks, self._sinks = self._sinks, {}
        run, self._run = self._run, None
        assert run is not None
        try:
            paths = [sink.close() for sink in sinks.values()]
            if trainer.world_size > 1:
                if not trainer.is_global_zero:
                    run.close_journal(self._items)
                trainer.strategy.barrier("prediction parts written")
                if trainer.is_global_zero:
                    paths = [sink.merge_parts(trainer.world_size) for sink in sinks.values()]
            if trainer.is_global_zero:
                run.close_journal(self._items)
                checkpoint = getattr(trainer, "ckpt_path", None)
                record = run.finish(
                    trainer.world_size, self._skipped, checkpoint, task=type(pl_module).__name__
                )
            if trainer.world_size > 1:
                trainer.strategy.barrier("prediction run recorded")
        finally:
            run.release()
        if trainer.is_global_zero:
            for path in paths:
                log.info("Predictions written to %s", path)
                print(f"Predictions written to {path}")
            if self._skipped:
                log.warning(
                    "%d unreadable input(s) skipped (listed in %s): %s",
                    len(self._skipped), record, ", ".join(self._skipped[:5]),
                )  # fmt: skip
            print(f"Run record: {record}")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Let go of the folder; the temporary files and the journal stay for an `overwrite` run."""
        if self._run is not None:
            self._run.release()
            self._run = None
        self._sinks = {}


def _refuse_nothing_to_predict(trainer: pl.Trainer, datasets: list[Any], skipped: list[str]) -> None:
    """An error, not an empty output folder and exit status 0, when no input could be read."""
    try:
        total = sum(len(dataset) for dataset in datasets)
    except TypeError:  # a data set without a length (an iterable one): cannot tell
        return
    if total or not datasets:
        return
    root = getattr(getattr(trainer, "datamodule", None), "predict_root", None)
    where = f" in {root}" if root else ""
    reason = (
        f"all {len(skipped)} input(s) are unreadable (e.g. {', '.join(skipped[:3])})"
        if skipped
        else "the predict data is empty"
    )
    raise InputError(f"nothing could be read to predict{where}: {reason}")


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
        return [f"_{clean_name(split)}" for split in splits]
    return [""] if count == 1 else [f"_{i}" for i in range(count)]
