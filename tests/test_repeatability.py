"""Runs repeat exactly (issue 13, point 6): the same seed gives the same weights with albumentations
augmentation and any number of loader workers; a fit killed with SIGKILL and resumed from
`last.ckpt` ends with the uninterrupted run's weights, its logs continuing in the same TensorBoard
run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import albumentations as A
import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import cpu_trainer, run_cli
from vision_lightning import ClassifierModule, ImageClassificationDataModule
from vision_lightning.data.base import LoaderOptions
from vision_lightning.data.classification_sources import SyntheticShapes
from vision_lightning.data.datasets import TransformedDataset
from vision_lightning.utils.transforms import build_transform

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _restore_seed_env(monkeypatch):
    """`seed_everything` sets PL_GLOBAL_SEED / PL_SEED_WORKERS: keep them from leaking into other tests."""
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        monkeypatch.delenv(name, raising=False)


def _augmentations() -> list:
    return [A.HorizontalFlip(p=0.5), A.Affine(rotate=(-30, 30), p=1.0), A.RandomBrightnessContrast(p=0.5)]


def _fit_weights(workers: int, seed: int = 3) -> dict[str, torch.Tensor]:
    pl.seed_everything(seed, workers=True, verbose=False)
    data = ImageClassificationDataModule(
        SyntheticShapes(samples=40, num_classes=4),
        image_size=32,
        batch_size=8,
        augmentations=_augmentations(),
        loader=LoaderOptions(num_workers=workers),
    )
    model = ClassifierModule(
        backbone="cifar_lenet", num_classes=4, head={"kind": "mlp", "hidden": 16, "dropout": [0.2, 0.5]}
    )
    cpu_trainer(max_epochs=2, num_sanity_val_steps=0).fit(model, data)
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _assert_equal_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    different = [name for name in first if not torch.equal(first[name], second[name])]
    assert not different, f"weights differ: {different}"


@pytest.fixture(scope="module")
def weights_without_workers() -> dict[str, torch.Tensor]:
    return _fit_weights(workers=0)


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_same_weights_with_augmentation(workers, weights_without_workers):
    _assert_equal_weights(_fit_weights(workers), weights_without_workers)


def test_another_seed_other_weights(weights_without_workers):
    other = _fit_weights(workers=0, seed=4)
    assert any(not torch.equal(other[k], weights_without_workers[k]) for k in other)


class _SameImage:
    """Every sample is the same image, so any difference between items is augmentation."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.image = np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)

    def __len__(self) -> int:
        return self.count

    def load(self, index: int):
        return self.image, 0, f"same/{index}"


def _augmented_items(workers: int, epoch: int) -> dict[str, torch.Tensor]:
    """The training loader's items of one epoch by name, and which worker made each (batch i: worker i % 2)."""
    pl.seed_everything(5, workers=True, verbose=False)
    data = ImageClassificationDataModule(
        SyntheticShapes(samples=8), image_size=24, batch_size=1, loader=LoaderOptions(num_workers=workers)
    )
    dataset = TransformedDataset(_SameImage(8), range(8), build_transform(24, augmentations=_augmentations()))
    loader = data._loader(dataset, train=True, batch_size=1)
    loader.sampler.set_epoch(epoch)  # as Lightning does each epoch
    return {batch["path"][0]: batch["image"][0] for batch in loader}


def test_workers_augment_differently_and_as_one_process():
    alone, two_workers = _augmented_items(0, epoch=0), _augmented_items(2, epoch=0)
    assert alone.keys() == two_workers.keys()
    for name in alone:  # the same item, whichever process made it
        assert torch.equal(alone[name], two_workers[name])
    images = list(two_workers.values())
    # batches alternate between the two workers: neighbours come from different ones
    assert all(not torch.equal(images[i], images[i + 1]) for i in range(len(images) - 1))
    next_epoch = _augmented_items(2, epoch=1)
    assert any(not torch.equal(next_epoch[name], two_workers[name]) for name in two_workers)


# ----------------------------------------------------------------------------- kill and resume
CONFIG = """
seed_everything: 11
trainer:
  accelerator: cpu
  max_epochs: 3
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: tests.pause_callback.PauseEachBatch
      init_args: {{seconds: {pause}}}
model:
  class_path: vision_lightning.ClassifierModule
  init_args:
    backbone: cifar_lenet
    head: {{kind: mlp, hidden: 16, dropout: [0.25, 0.5]}}
    optimizer:
      class_path: torch.optim.SGD
      init_args: {{lr: 0.05, momentum: 0.9}}
data:
  class_path: vision_lightning.ImageClassificationDataModule
  init_args:
    source:
      class_path: vision_lightning.data.classification_sources.SyntheticShapes
      init_args: {{samples: 60, num_classes: 4}}
    image_size: 32
    batch_size: 8
    augmentations:
      - class_path: albumentations.HorizontalFlip
      - class_path: albumentations.RandomBrightnessContrast
"""


def _last_epoch(path: Path) -> int | None:
    """The epoch `last.ckpt` was saved after, or None before there is one (written atomically)."""
    if not path.is_file():
        return None
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _steps(folder: Path, tag: str) -> list[int]:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def test_fit_killed_and_resumed_ends_as_uninterrupted(tmp_path: Path):
    (tmp_path / "slow.yaml").write_text(CONFIG.format(pause=0.25))
    (tmp_path / "fast.yaml").write_text(CONFIG.format(pause=0.0))
    # the run that is killed: a real process, SIGKILLed once the first epoch's last.ckpt exists
    killed = tmp_path / "killed"
    last = killed / "lightning_logs/version_0/checkpoints/last.ckpt"
    process = subprocess.Popen(
        [sys.executable, "-m", "vision_lightning", "fit", "--config", tmp_path / "slow.yaml",
         "--trainer.default_root_dir", killed],
        # as many threads as the in-process runs it is compared with: float sums depend on the count
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while _last_epoch(last) is None and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.6)  # a few batches into the second epoch
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert _last_epoch(last) == 0  # killed during the second epoch, after logging some of its steps

    run_cli(
        "fit", "--config", tmp_path / "fast.yaml", "--trainer.default_root_dir", killed, "--ckpt_path", last
    )
    uninterrupted = tmp_path / "uninterrupted"
    run_cli("fit", "--config", tmp_path / "fast.yaml", "--trainer.default_root_dir", uninterrupted)

    _assert_equal_weights(
        _weights(last), _weights(uninterrupted / "lightning_logs/version_0/checkpoints/last.ckpt")
    )
    # the logs went on in the interrupted run's folder, each step shown once, as uninterrupted
    assert [p.name for p in (killed / "lightning_logs").iterdir()] == ["version_0"]
    run = killed / "lightning_logs/version_0"
    assert (run / "config.yaml").is_file() and (run / "config_1.yaml").is_file()
    expected = _steps(uninterrupted / "lightning_logs/version_0", "train/loss_step")
    assert _steps(run, "train/loss_step") == expected
    assert _steps(run, "val/loss") == _steps(uninterrupted / "lightning_logs/version_0", "val/loss")
