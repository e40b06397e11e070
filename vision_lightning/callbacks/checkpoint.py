"""ModelCheckpoint whose `last.ckpt` always holds the latest epoch.

Lightning 2.6 refreshes `last.ckpt` only in a step where a top-k checkpoint was also saved, so an
epoch that does not improve the monitored metric is missing from `last.ckpt` and a resume repeats
it. Here `last.ckpt` is written after every epoch as well. Writes are atomic (Lightning serialises
to memory, then moves the file into place in one filesystem transaction).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint

from vision_lightning.utils.paths import check_output_folder


class ModelCheckpoint(LightningModelCheckpoint):
    @property
    def state_key(self) -> str:
        """Lightning's key, made once: Lightning builds it for every hook of every step (a profiler
        label), from settings that are fixed by then."""
        key = self.__dict__.get("_state_key")
        if key is None:
            key = self.__dict__["_state_key"] = super().state_key
        return key

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and self.dirpath is not None:
            check_output_folder(self.dirpath, "checkpoint folder")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self._every_n_train_steps < 1 and self._train_time_interval is None:
            return  # no saving by steps or time: Lightning would check its state every step to no end
        super().on_train_batch_end(trainer, pl_module, *args)

    def _save_last_if_missed(self, trainer: pl.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)
