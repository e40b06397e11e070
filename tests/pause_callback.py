"""A callback that slows training down, so a test can kill a real `fit` process between epochs."""

from __future__ import annotations

import time

import lightning.pytorch as pl


class PauseEachBatch(pl.Callback):
    """Sleep `seconds` after every training batch (the weights do not depend on it)."""

    def __init__(self, seconds: float = 0.1) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args, **kwargs) -> None:
        time.sleep(self.seconds)
