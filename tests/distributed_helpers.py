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
