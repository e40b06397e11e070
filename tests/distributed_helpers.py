"""A callback for the multi-process tests (tests/test_distributed.py): every process writes the
figures it logged, so the test can compare the processes with each other and with one process.

    --trainer.callbacks+=tests.distributed_helpers.RecordMetrics --trainer.callbacks.out_dir DIR

writes DIR/<stage>.rank<r>.json (`fit`, `validate`) with `world_size` and every scalar in
`trainer.callback_metrics`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl

ROOT = Path(__file__).resolve().parents[1]


def fresh_process_environment(**extra: str) -> dict[str, str]:
    """This environment without the variables of a distributed launch (a test run inside one must
    not make the child join it), with the repository importable."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    launch = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_", "PL_", "RANK")
    for key in [k for k in env if k.startswith(launch)]:
        env.pop(key)
    env.update(extra)
    return env


def run_ddp_script(script: str, out: Path, *args: str, timeout: int = 180) -> list[dict]:
    """`python tests/<script> *args OUT` (Lightning starts the second process by running it again);
    the records it wrote as OUT/rank0.json and OUT/rank1.json."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / script), *map(str, args), str(out)],
        cwd=out, env=fresh_process_environment(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


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
