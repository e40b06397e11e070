"""Image logging that works with whatever loggers the Trainer has (TorchGeo #2138)."""

from __future__ import annotations

import logging
import math
import time

import lightning.pytorch as pl
import numpy as np
from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loggers.logger import DummyLogger

log = logging.getLogger(__name__)
_warned: set[str] = set()


#: seconds between redraws of the progress bar (`ThrottledProgressBar`) and the per-step values for it
REDRAW_INTERVAL = 0.5


class StepLogGate:
    """Whether a per-step value is worth handing to `self.log` on this step: on the steps the loggers
    write (`log_every_n_steps`), and with a progress bar about every `interval` seconds for it to
    show. Lightning keeps only those: a value logged on the steps between is never written, yet each
    `self.log` call costs its result bookkeeping 0.3-1 ms, a few percent of a small network's CPU
    step (benchmarks/overhead.py)."""

    def __init__(self, interval: float = REDRAW_INTERVAL) -> None:
        self.interval = interval
        self._last = -math.inf

    def due(self, trainer: pl.Trainer | None) -> bool:
        connector = getattr(trainer, "_logger_connector", None)  # what LearningRateMonitor asks too
        if connector is None or connector.should_update_logs:
            return True
        if trainer.progress_bar_callback is None:
            return False
        now = time.monotonic()
        if now - self._last < self.interval:
            return False
        self._last = now
        return True


def log_image(trainer: pl.Trainer, tag: str, image: np.ndarray) -> None:
    """Send an HWC uint8 image to every logger that stores images; name the ones that cannot, once."""
    step = trainer.global_step
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(tag, image, step, dataformats="HWC")
        elif hasattr(logger, "log_image"):  # Wandb, Neptune, Comet and MLflow-style loggers
            logger.log_image(key=tag, images=[image], step=step)
        elif not isinstance(logger, DummyLogger) and type(logger).__name__ not in _warned:
            _warned.add(type(logger).__name__)
            log.warning(
                "%s cannot store images; %s and other image logs are not written", type(logger).__name__, tag
            )


def describe_run(
    trainer: pl.Trainer, hparams: dict, monitor: str | None, charts: dict[str, list[str]]
) -> None:
    """What a person opening TensorBoard should see first: `charts` (title: tag regexes) as one
    custom-scalars section, so training and validation curves of one quantity share a chart, and
    the HParams table with `monitor` as its metric (no `hp_metric` stuck at -1)."""
    from torch.utils.tensorboard.summary import custom_scalars
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    for logger in trainer.loggers:
        if not isinstance(logger, TensorBoardLogger) or trainer.global_rank != 0:
            continue
        writer = logger.experiment
        layout = {"curves": {title: ["Multiline", tags] for title, tags in charts.items()}}
        writer._get_file_writer().add_summary(custom_scalars(layout))
        if monitor:  # `hparams_initial`s hold no internal keys
            values = dict(hparams)
            datamodule = getattr(trainer, "datamodule", None)
            if datamodule is not None and getattr(datamodule, "hparams_initial", None):
                values.update(datamodule.hparams_initial)
            values = logger._sanitize_params(_flatten_dict(_convert_params(values)))
            for summary in hparams_summary(values, {monitor: float("nan")}):
                writer._get_file_writer().add_summary(summary)


def no_default_hp_metric(trainer: pl.Trainer) -> None:
    """Stop Lightning's TensorBoardLogger from writing `hp_metric` = -1 at fit start (the task writes
    the HParams table itself, with its monitored metric)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger._default_hp_metric = False


class QuietTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger without the charts nobody opens TensorBoard for: no `hp_metric`
    stuck at -1 (tasks write HParams with their monitored metric) and the epoch number under
    `trainer/epoch`, after the losses and metrics instead of before them."""

    def __init__(self, *args, default_hp_metric: bool = False, **kwargs) -> None:
        super().__init__(*args, default_hp_metric=default_hp_metric, **kwargs)

    def log_metrics(self, metrics, step=None) -> None:
        metrics = dict(metrics)
        if "epoch" in metrics:
            metrics["trainer/epoch"] = metrics.pop("epoch")
        super().log_metrics(metrics, step)
