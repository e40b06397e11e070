"""Shared helpers for the tests: run the CLI in-process, and stand-ins for downloadable data."""

from __future__ import annotations

import csv
import dataclasses
import logging

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from vision_lightning.cli import main
from vision_lightning.data import torchvision_datasets


@pytest.fixture(autouse=True)
def _same_torch_threads():
    """A benchmark's `main` run in-process sets torch's thread count; later tests must not inherit
    it (a different count changes float summation order, and the repeatability tests compare
    in-process runs with child processes bit for bit)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _quiet_lightning():
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)


def cpu_trainer(**kwargs) -> pl.Trainer:
    """A quiet one-epoch CPU Trainer without logger or checkpoints; `kwargs` override."""
    defaults = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "max_epochs": 1,
    }
    return pl.Trainer(**{**defaults, **kwargs})


def run_cli(*args: str) -> None:
    """`python -m vision_lightning ARGS` in this process (SystemExit propagates)."""
    main([str(a) for a in args])


def fit_then_predict(config, run, *args) -> list:
    """`fit` one epoch of `config` (with `args`) into `run`, then `predict` from its `last.ckpt` into
    `run/predictions`, as the Makefile's quickstart does; the images written."""
    common = [
        "--config",
        config,
        "--trainer.default_root_dir",
        run,
        "--trainer.enable_progress_bar",
        "false",
        *args,
    ]
    run_cli("fit", *common, "--trainer.max_epochs", "1", "--checkpoint.dirpath", run / "checkpoints")
    run_cli("predict", *common, "--ckpt_path", run / "checkpoints/last.ckpt", "--trainer.logger", "false",
            "--prediction_writer.output_dir", run / "predictions")  # fmt: skip
    return sorted((run / "predictions/images").glob("*.png"))


def write_csv(path, rows: list[dict], fieldnames: list[str] | None = None):
    """`rows` as a CSV file at `path` (columns: `fieldnames`, else the first row's keys)."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def split_dataset(dm: pl.LightningDataModule, split: str):
    """The data set behind `split`'s loader (train, val, test or predict), items in order."""
    return getattr(dm, f"{split}_dataloader")().dataset


class FakeTorchvisionDataset:
    """What a torchvision classification data set looks like: (PIL image, int) items and `targets`."""

    def __init__(self, num_classes: int, channels: int, size: int, count: int = 24, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.targets = [i % num_classes for i in range(count)]
        shape = (size, size) if channels == 1 else (size, size, 3)
        self.images = [Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)) for _ in range(count)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.images[index], self.targets[index]


def fake_torchvision(monkeypatch: pytest.MonkeyPatch, name: str, size: int = 32) -> None:
    """Replace torchvision data set `name` by a small fake with its real classes and channels."""
    spec = torchvision_datasets.TORCHVISION_DATASETS[name]

    def factory(root, split, download):
        return FakeTorchvisionDataset(len(spec.classes), spec.channels, size, seed=hash(split) % 1000)

    monkeypatch.setitem(
        torchvision_datasets.TORCHVISION_DATASETS, name, dataclasses.replace(spec, factory=factory)
    )


def optimizer(name: str = "Adam", **kwargs):
    """An injected optimizer factory, as a user writes one in Python: `optimizer("SGD", lr=0.1)`."""
    import functools

    import torch

    return functools.partial(getattr(torch.optim, name), **kwargs)
