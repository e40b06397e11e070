"""One DDP process's loss alone becomes NaN, run by tests/tasks/test_divergence.py.

    python tests/ddp_divergence_script.py OUT_DIR

Rank 1's loss is NaN at its third batch; rank 0's stays finite. Both processes must stop at that
step with TrainingDivergedError (one stopping alone would leave the other waiting in the next
gradient all-reduce). Each rank writes OUT_DIR/rank<r>.json with the step it stopped at and its message.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as pl

from vision_lightning import ClassifierModule, ImageClassificationDataModule
from vision_lightning.data.classification_sources import SyntheticShapes
from vision_lightning.utils.errors import TrainingDivergedError

NAN_BATCH = 2


class NaNOnRankOne(ClassifierModule):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if self.global_rank == 1 and batch_idx == NAN_BATCH:
            loss = loss * float("nan")
        return loss


def main(out: Path) -> None:
    model = NaNOnRankOne(backbone="cifar_lenet", num_classes=4, in_channels=3, pretrained=False)
    data = ImageClassificationDataModule(
        SyntheticShapes(samples=64, num_classes=4), image_size=32, batch_size=4
    )
    trainer = pl.Trainer(
        strategy="ddp", devices=2, accelerator="cpu", max_epochs=1, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    try:
        trainer.fit(model, datamodule=data)
        record = {"stopped": False}
    except TrainingDivergedError as error:
        record = {"stopped": True, "step": error.step, "batch_idx": error.batch_idx, "message": str(error)}
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
