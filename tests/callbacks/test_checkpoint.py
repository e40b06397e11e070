"""ModelCheckpoint: `last.ckpt` after every epoch, saving by steps or time still works, and its
state key is Lightning's."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel

from tests.conftest import cpu_trainer
from vision_lightning.callbacks import ModelCheckpoint


def _fit(tmp_path, checkpoint: ModelCheckpoint, epochs: int = 2) -> list[str]:
    pl.seed_everything(0, verbose=False)
    trainer = cpu_trainer(
        max_epochs=epochs, limit_train_batches=4, limit_val_batches=0, enable_checkpointing=True,
        callbacks=[checkpoint],
    )  # fmt: skip
    trainer.fit(BoringModel())
    return sorted(path.name for path in tmp_path.glob("*.ckpt"))


def test_saving_by_steps_still_works(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=3, save_top_k=-1, filename="{step}")
    assert _fit(tmp_path, checkpoint) == ["step=3.ckpt", "step=6.ckpt"]


def test_last_checkpoint_after_every_epoch_without_steps(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    assert _fit(tmp_path, checkpoint, epochs=3) == ["last.ckpt"]
    assert torch.load(tmp_path / "last.ckpt", weights_only=False)["epoch"] == 2


def test_state_key_is_lightnings():
    ours = ModelCheckpoint(monitor="val/loss", mode="min", every_n_train_steps=5)
    theirs = LightningModelCheckpoint(monitor="val/loss", mode="min", every_n_train_steps=5)
    assert ours.state_key == ours.state_key == theirs.state_key  # same class name, same settings
