"""Bad checkpoints given to `fit --ckpt_path` (resuming): exit status 2 and one line naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import cpu_trainer, run_cli
from vision_lightning import ClassifierModule, SegmentationModule

FIT = [
    "fit", "--model", "vision_lightning.ClassifierModule", "--model.backbone", "cifar_lenet",
    "--data", "vision_lightning.ImageClassificationDataModule", "--data.image_size", "32",
    "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    """A folder with a classifier's and a segmentation task's checkpoint, as `fit` writes them."""
    folder = tmp_path_factory.mktemp("checkpoints")
    tasks = {
        "classifier": ClassifierModule(backbone="cifar_lenet", num_classes=4),
        "segmentation": SegmentationModule(arch="classic_unet", num_classes=2, mode="binary"),
    }
    for name, task in tasks.items():
        trainer = cpu_trainer()
        trainer.strategy.connect(task)
        trainer.save_checkpoint(folder / f"{name}.ckpt")
    return folder


def _missing(folder: Path) -> Path:
    return folder / "no_such.ckpt"


def _truncated(folder: Path) -> Path:
    path = folder / "truncated.ckpt"
    path.write_bytes((folder / "classifier.ckpt").read_bytes()[:2000])
    return path


def _plain_weights(folder: Path) -> Path:
    path = folder / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, path)
    return path


def _other_task(folder: Path) -> Path:
    return folder / "segmentation.ckpt"


CASES = {
    "missing": (_missing, "does not exist"),
    "truncated": (_truncated, "is not a complete PyTorch checkpoint"),
    "plain_weights": (_plain_weights, "not a Lightning training checkpoint"),
    "other_task": (_other_task, "was written by SegmentationModule, not ClassifierModule"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fit_ckpt_path(case, checkpoints, tmp_path, capsys):
    make, problem = CASES[case]
    path = make(checkpoints)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*FIT, "--trainer.default_root_dir", tmp_path, "--ckpt_path", path)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: checkpoint {path} ")
    assert problem in lines[0]
    assert not (tmp_path / "lightning_logs").exists()  # nothing was started
