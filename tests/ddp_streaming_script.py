"""StreamingClassification under 2-process DDP on CPU (gloo), run by tests/data/test_streaming.py.

    python tests/ddp_streaming_script.py CHUNKS OUT_DIR

Lightning starts the second process by running this script again. Each rank writes
OUT_DIR/rank<r>.json: the world size, the sampler of its training loader (Lightning must not add a
DistributedSampler to LitData's iterable data set), and the paths of its training batches per epoch
and of each validation run, so the test can check that each rank read its own part.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from tests.distributed_helpers import SeenPaths
from vision_lightning import ClassifierModule
from vision_lightning.data import ImageClassificationDataModule, StreamingClassification


class Record(SeenPaths):
    def __init__(self, out: Path) -> None:
        super().__init__()
        self.out = out

    def on_fit_end(self, trainer, pl_module) -> None:
        record = {
            "world_size": trainer.world_size,
            "sampler": type(trainer.train_dataloader.sampler).__name__,
            "train_batches": trainer.num_training_batches,
            "train": self.train,
            "val": self.val,
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def main(chunks: str, out: Path) -> None:
    pl.seed_everything(0, verbose=False)
    data = ImageClassificationDataModule(StreamingClassification(chunks), image_size=32, batch_size=3)
    model = ClassifierModule("lenet5", num_classes=3, log_images=0)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record(out)],
    )
    torch.set_num_threads(1)
    trainer.fit(model, data)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
