"""A callback for the multi-process tests (tests/test_distributed.py): every process writes the
figures it logged, so the test can compare the processes with each other and with one process.

    --trainer.callbacks+=tests.distributed_helpers.RecordMetrics --trainer.callbacks.out_dir DIR

writes DIR/<stage>.rank<r>.json (`fit`, `validate`) with `world_size` and every scalar in
`trainer.callback_metrics`.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl


class RecordMetrics(pl.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def _write(self, trainer: pl.Trainer, stage: str) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "world_size": trainer.world_size,
            "node_rank": trainer.node_rank,
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1},
        }
        (self.out_dir / f"{stage}.rank{trainer.global_rank}.json").write_text(json.dumps(record))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, "fit")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.training and not trainer.sanity_checking:
            self._write(trainer, "validate")


class SeenPaths(pl.Callback):
    """The paths of every training batch, per epoch, and of every validation run (the streaming tests
    check each sample is read once per epoch, also per rank under DDP)."""

    def __init__(self) -> None:
        self.train: list[list[str]] = []
        self.val: list[list[str]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.train.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train[-1] += batch["path"]

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.val.append([])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val[-1] += batch["path"]
