"""A crafted checkpoint never runs code, whatever the environment says: every load passes
`weights_only=True` explicitly, so `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` (which turns torch's default
off) changes nothing. Each route a user can load through is tried with the override set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.bad_inputs.test_checkpoints_and_configs import CLASSIFICATION, QUIET, CraftedPayload
from tests.conftest import cpu_trainer, run_cli
from vision_lightning import ClassifierModule, FeatureExtractModule
from vision_lightning.data import ImageClassificationDataModule
from vision_lightning.data.classification_sources import SyntheticShapes
from vision_lightning.tasks.loading import load_task
from vision_lightning.utils.errors import CheckpointError, InputError
from vision_lightning.utils.weights import load_weights


def _model() -> ClassifierModule:
    return ClassifierModule(backbone="cifar_lenet", num_classes=4, in_channels=3, pretrained=False)


@pytest.fixture
def crafted(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(a checkpoint whose unpickling touches a marker file, the marker), with the override set."""
    model = _model()
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model, datamodule=ImageClassificationDataModule(SyntheticShapes(samples=8, num_classes=4), image_size=32, batch_size=4))  # fmt: skip
    good = tmp_path / "good.ckpt"
    trainer.save_checkpoint(good)
    marker = tmp_path / "code-ran"
    checkpoint = torch.load(good, weights_only=True)
    checkpoint["state_dict"]["payload"] = CraftedPayload(marker)
    path = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    return path, marker


def test_the_crafted_file_does_run_code_when_loaded_the_default_way(crafted):
    """The danger is real: torch's own default, under the override, runs the payload."""
    path, marker = crafted
    with pytest.warns(UserWarning, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        torch.load(path)
    assert marker.exists()


def _refused(load, crafted) -> None:
    path, marker = crafted
    with pytest.raises(CheckpointError, match=f"checkpoint {path} holds Python objects other than weights"):
        load(path)
    assert not marker.exists()


def test_load_from_checkpoint_refuses_it(crafted):
    _refused(ClassifierModule.load_from_checkpoint, crafted)


def test_load_task_refuses_it(crafted):
    _refused(load_task, crafted)


def test_a_feature_extractor_built_from_it_refuses_it(crafted):
    _refused(lambda path: FeatureExtractModule(checkpoint=str(path)), crafted)


@pytest.mark.parametrize("stage", ["fit", "validate", "predict"])
def test_a_plain_lightning_trainer_refuses_it(crafted, stage):
    data = ImageClassificationDataModule(
        SyntheticShapes(samples=8, num_classes=4), image_size=32, batch_size=4
    )
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    _refused(lambda path: getattr(trainer, stage)(_model(), datamodule=data, ckpt_path=path), crafted)


def test_a_weights_file_refuses_it(crafted):
    path, marker = crafted
    with pytest.raises(InputError, match=f"weights file {path} holds Python objects"):
        load_weights(nn.Linear(2, 2), path)
    assert not marker.exists()


def test_the_cli_refuses_it(crafted, tmp_path, capsys):
    path, marker = crafted
    with pytest.raises(SystemExit) as exit_info:
        run_cli("predict", "--config", CLASSIFICATION, "--ckpt_path", path, "--trainer.logger", "false",
                "--prediction_writer.output_dir", tmp_path / "out", *QUIET)  # fmt: skip
    assert exit_info.value.code == 2
    assert f"error: checkpoint {path} holds Python objects" in capsys.readouterr().err
    assert not marker.exists()


def test_torchvision_downloads_are_read_weights_only_first(monkeypatch):
    """torchvision reads its ImageNet files with weights_only=False; the factory reads each file
    with weights_only=True first (here the download is replaced by a recorder)."""
    import torchvision

    from vision_lightning.utils.weights import pretrained_torchvision

    calls = []

    def get_state_dict(self, *args, **kwargs):
        calls.append(kwargs)
        return torchvision.models.resnet18().state_dict()

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", get_state_dict)
    pretrained_torchvision("resnet18")
    assert calls[0]["weights_only"] is True
