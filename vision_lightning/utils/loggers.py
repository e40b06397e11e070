"""Image logging that works with whatever loggers the Trainer has (TorchGeo #2138)."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loggers.logger import DummyLogger

log = logging.getLogger(__name__)
_warned: set[str] = set()


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
