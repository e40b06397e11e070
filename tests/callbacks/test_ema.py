"""EMA of weights through Lightning's own `EMAWeightAveraging` (issue 14, point 2): validation runs
with the averaged weights, checkpoints hold them as the model's state dict (the weights being trained
kept beside them for resuming), everything that loads a checkpoint predicts with them, and a resumed
fit continues the average exactly."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from PIL import Image

from tests.conftest import cpu_trainer, optimizer, run_cli
from vision_lightning import ClassifierModule, ImageClassificationDataModule
from vision_lightning.callbacks import ModelCheckpoint
from vision_lightning.data.classification_sources import SyntheticShapes
from vision_lightning.tasks.loading import load_task

ARGS = {"backbone": "lenet5_bn", "num_classes": 4, "optimizer": optimizer("SGD", lr=0.05, momentum=0.9)}


def _data() -> ImageClassificationDataModule:
    return ImageClassificationDataModule(
        SyntheticShapes(samples=48, num_classes=4), image_size=32, batch_size=8
    )


def _ema() -> EMAWeightAveraging:
    return EMAWeightAveraging(decay=0.8, update_starting_at_step=2, update_every_n_steps=2)


def _fit(folder: Path, epochs: int, resume: Path | None = None, **model_args) -> tuple[pl.Trainer, Path]:
    pl.seed_everything(7, verbose=False)
    trainer = cpu_trainer(
        max_epochs=epochs, enable_checkpointing=True, num_sanity_val_steps=0,
        callbacks=[_ema(), ModelCheckpoint(dirpath=folder, save_last=True, monitor="val/loss")],
    )  # fmt: skip
    trainer.fit(ClassifierModule(**ARGS, **model_args), _data(), ckpt_path=resume)
    return trainer, folder / "last.ckpt"


def _checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _equal(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def _validate(state_dict: dict[str, torch.Tensor]) -> float:
    model = ClassifierModule(**ARGS)
    model.load_state_dict(state_dict)
    return cpu_trainer().validate(model, _data(), verbose=False)[0]["val/loss"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[pl.Trainer, Path]:
    return _fit(tmp_path_factory.mktemp("ema"), epochs=2)


def _average(trainer: pl.Trainer) -> dict[str, torch.Tensor]:
    ema = next(c for c in trainer.callbacks if isinstance(c, EMAWeightAveraging))
    return ema._average_model.module.state_dict()


def test_validation_metric_is_the_averaged_weights(fitted):
    trainer, last = fitted
    logged = float(trainer.callback_metrics["val/loss"])
    assert _validate(_average(trainer)) == pytest.approx(logged, abs=1e-6)  # the average, evaluated by hand
    assert _validate(_checkpoint(last)["current_model_state"]) != pytest.approx(logged, abs=1e-3)


def test_checkpoint_state_dict_is_the_average_with_batchnorm_statistics(fitted):
    trainer, last = fitted
    checkpoint, average = _checkpoint(last), _average(trainer)
    assert _equal(checkpoint["state_dict"], average)
    assert not _equal(checkpoint["current_model_state"], average)
    running = [k for k in average if k.endswith("running_mean")]
    assert running and any(
        not torch.equal(checkpoint["state_dict"][k], checkpoint["current_model_state"][k]) for k in running
    )  # BatchNorm statistics are averaged too (use_buffers)
    assert _equal(trainer.lightning_module.state_dict(), average)  # after fit, the model is the average


def _images(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_everything_that_loads_the_checkpoint_predicts_with_the_average(fitted, tmp_path):
    trainer, last = fitted
    average = _average(trainer)
    assert _equal(ClassifierModule.load_from_checkpoint(last).state_dict(), average)
    assert _equal(load_task(last).state_dict(), average)
    by_hand = ClassifierModule(**ARGS)
    by_hand.load_state_dict(average)
    by_hand.preprocessing = _checkpoint(last)["preprocessing"]  # how the data module prepared images
    images = _images(tmp_path / "images")
    expected = [r["probs"] for r in by_hand.predict_images(images)]
    assert [r["probs"] for r in load_task(last).predict_images(images)] == expected
    # the fit's own Trainer, EMA callback still holding its average: the checkpoint's weights are evaluated
    folder = _data_with(images)
    loaded = trainer.predict(trainer.lightning_module, folder, ckpt_path=last)
    plain = cpu_trainer().predict(by_hand, _data_with(images))
    assert torch.equal(torch.cat([o["probs"] for o in loaded]), torch.cat([o["probs"] for o in plain]))
    validated = trainer.validate(ckpt_path=last, datamodule=_data(), verbose=False)[0]["val/loss"]
    assert validated == pytest.approx(_validate(average), abs=1e-6)


def _data_with(images: Path) -> ImageClassificationDataModule:
    return ImageClassificationDataModule(
        SyntheticShapes(samples=48, num_classes=4), image_size=32, batch_size=8, predict_root=str(images)
    )


def test_resume_continues_the_average_exactly(fitted, tmp_path):
    _, uninterrupted = fitted
    _fit(tmp_path, epochs=1)
    _, resumed = _fit(tmp_path, epochs=2, resume=tmp_path / "last.ckpt")
    first, second = _checkpoint(uninterrupted), _checkpoint(resumed)
    for key in ("state_dict", "current_model_state", "averaging_state"):
        assert _equal(first[key], second[key]), key


def test_channels_last_network_is_averaged(tmp_path):
    trainer, last = _fit(tmp_path, epochs=1, channels_last=True)
    assert _equal(_checkpoint(last)["state_dict"], _average(trainer))


CONFIG = """
trainer:
  max_epochs: 1
  limit_train_batches: 3
  limit_val_batches: 1
  callbacks:
    - class_path: lightning.pytorch.callbacks.EMAWeightAveraging
      init_args: {decay: 0.9, update_starting_at_step: 1}
model:
  class_path: vision_lightning.ClassifierModule
  init_args: {backbone: lenet5_bn}
data:
  class_path: vision_lightning.ImageClassificationDataModule
  init_args:
    source:
      class_path: vision_lightning.data.classification_sources.SyntheticShapes
      init_args: {samples: 24, num_classes: 3}
    image_size: 32
    batch_size: 8
"""


def test_configured_from_yaml_as_a_trainer_callback(tmp_path):
    (tmp_path / "ema.yaml").write_text(CONFIG)
    run_cli("fit", "--config", tmp_path / "ema.yaml", "--trainer.default_root_dir", tmp_path,
            "--trainer.enable_progress_bar", "false", "--checkpoint.dirpath", tmp_path / "checkpoints")  # fmt: skip
    checkpoint = _checkpoint(tmp_path / "checkpoints/last.ckpt")
    assert "EMAWeightAveraging" in checkpoint["callbacks"]
    # updated after every step from the second on (update_starting_at_step counts from 0)
    assert checkpoint["averaging_state"]["n_averaged"] == checkpoint["global_step"] - 1 > 0
