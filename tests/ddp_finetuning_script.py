"""BackboneFreezeUnfreeze under 2-process DDP on CPU (gloo), run by tests/callbacks/test_backbone_freeze_unfreeze.py.

    python tests/ddp_finetuning_script.py OUT_DIR

Lightning starts the second process by running this script again. Each rank writes
OUT_DIR/rank<r>.json: SHA-256 digests of the backbone's and the head's parameters at the start and
after every training epoch, whether any backbone gradient existed at an optimizer step of each
epoch, and a digest of every parameter at the end (equal on both ranks when DDP reduced them all).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

from vision_lightning import BackboneFreezeUnfreeze, ClassifierModule
from vision_lightning.data.classification import ImageClassificationDataModule
from vision_lightning.data.classification_sources import SyntheticShapes


def digest(module: nn.Module) -> str:
    sha = hashlib.sha256()
    for parameter in module.parameters():
        sha.update(parameter.detach().cpu().contiguous().numpy().tobytes())
    return sha.hexdigest()


class Record(pl.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.epochs: list[dict] = []
        self.grads: dict[int, bool] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = {"backbone": digest(pl_module.backbone), "head": digest(pl_module.head)}
        self.find_unused = trainer.strategy.model.find_unused_parameters  # the DDP wrapper

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        has_grad = any(p.grad is not None for p in pl_module.backbone.parameters())
        self.grads[trainer.current_epoch] = self.grads.get(trainer.current_epoch, False) or has_grad

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs.append({"backbone": digest(pl_module.backbone), "head": digest(pl_module.head)})

    def on_fit_end(self, trainer, pl_module) -> None:
        record = {
            "world_size": trainer.world_size,
            "find_unused_parameters": self.find_unused,
            "start": self.start,
            "epochs": self.epochs,
            "backbone_grads": [self.grads.get(e, False) for e in range(len(self.epochs))],
            "all": digest(pl_module),
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def main(out: Path) -> None:
    pl.seed_everything(0, verbose=False)
    data = ImageClassificationDataModule(SyntheticShapes(32, num_classes=4), image_size=32, batch_size=4)
    # SGD with momentum and weight decay: a step on a frozen parameter with a zero (not None)
    # gradient would still move it, so an unchanged backbone proves the optimizer skipped it.
    sgd = functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=1e-3)
    model = ClassifierModule("lenet5_bn", num_classes=4, optimizer=sgd, log_images=0)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=3,
        limit_train_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[BackboneFreezeUnfreeze(unfreeze_at_epoch=1, backbone_lr_factor=[0.1, 0.5]), Record(out)],
    )
    torch.set_num_threads(1)
    trainer.fit(model, data)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
