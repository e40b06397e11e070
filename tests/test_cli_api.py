"""What the CLI adds around a run (issue 11): TensorBoard that opens on the losses, the resolved
config saved in the run's folder and never over a user's file, Lightning's `--optimizer` /
`--lr_scheduler`, and prediction from a checkpoint alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.cli import SaveConfigCallback
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.conftest import run_cli
from vision_lightning.cli import VisionCLI

ROOT = Path(__file__).resolve().parents[1]
QUICK_SR = ROOT / "configs" / "quickstart" / "superres.yaml"
TINY = [
    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
    "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false", "--data.init_args.source.init_args.samples", "8",
    "--data.init_args.batch_size", "4", "--model.init_args.arch_args.blocks", "1",
]  # fmt: skip


def _fit(tmp_path: Path, *extra: str) -> Path:
    run_cli("fit", "--config", QUICK_SR, "--trainer.default_root_dir", tmp_path / "run", *TINY, *extra)
    return tmp_path / "run" / "lightning_logs" / "version_0"


def test_tensorboard_opens_on_losses_and_metrics_grouped_by_stage(tmp_path):
    version = _fit(tmp_path)
    events = EventAccumulator(str(next(version.glob("events.out.tfevents.*"))))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss_step", "train/loss_epoch", "val/loss", "val/psnr_y_crop2"} <= scalars
    assert "hp_metric" not in scalars and "epoch" not in scalars and "trainer/epoch" in scalars
    assert all("/" in tag for tag in scalars)  # no one-chart sections
    assert "custom_scalars__config__" in events.Tags()["tensors"]  # train and val loss on one chart
    hparams = events.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/experiment"]).experiment
    names = {info.name for info in experiment.hparam_infos}
    assert "arch" in names and not any(name.startswith("_") or "/_" in name for name in names)
    assert [m.name.tag for m in experiment.metric_infos] == ["val/loss"]


def test_config_is_saved_in_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    version = _fit(tmp_path)
    assert (version / "config.yaml").is_file() and not (tmp_path / "config.yaml").exists()


def test_without_a_logger_the_config_goes_beside_the_checkpoints_and_replaces_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("mine: true\n")
    checkpoints = tmp_path / "checkpoints"
    args = ["--trainer.logger", "false", "--checkpoint.dirpath", checkpoints]
    _fit(tmp_path, *args)
    _fit(tmp_path, *args)
    assert (tmp_path / "config.yaml").read_text() == "mine: true\n"
    assert (checkpoints / "config.yaml").is_file() and (checkpoints / "config_1.yaml").is_file()


def test_the_config_callback_leaves_the_trainer_once_the_config_is_saved(tmp_path):
    """Lightning walks every callback for every hook of every step; this one only acts in `setup`."""
    args = ["--config", str(QUICK_SR), "--trainer.default_root_dir", str(tmp_path / "run"), *TINY]
    cli = VisionCLI(args=args, run=False)
    assert any(isinstance(callback, SaveConfigCallback) for callback in cli.trainer.callbacks)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert not any(isinstance(callback, SaveConfigCallback) for callback in cli.trainer.callbacks)
    assert (tmp_path / "run" / "lightning_logs" / "version_0" / "config.yaml").is_file()


def test_lightning_optimizer_arguments_go_to_the_task(tmp_path):
    version = _fit(
        tmp_path,
        "--optimizer", "torch.optim.SGD", "--optimizer.lr", "0.05", "--optimizer.momentum", "0.9",
        "--lr_scheduler", "vision_lightning.WarmupCosineLR", "--lr_scheduler.warmup_epochs", "0.5",
    )  # fmt: skip
    checkpoint = torch.load(version / "checkpoints" / "last.ckpt", weights_only=True)
    optimizer = checkpoint["hyper_parameters"]["optimizer"]
    assert optimizer["class_path"] == "torch.optim.SGD" and optimizer["init_args"]["lr"] == 0.05
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    assert {group["name"] for group in groups} >= {"backbone", "head"}
    assert all(group["initial_lr"] == pytest.approx(0.05) for group in groups)
    assert checkpoint["lr_schedulers"][0]["warmup_steps"] == 1
    data = checkpoint["datamodule_hyper_parameters"]  # the data module's arguments travel along
    assert data["source"]["class_path"].endswith("SyntheticTextureImages") and data["scale"] == 2
    assert checkpoint["preprocessing"]["scale"] == 2 and checkpoint["task_class"].endswith("SuperResModule")


def test_optimizer_in_yaml_under_the_model(tmp_path):
    config = tmp_path / "opt.yaml"
    config.write_text(
        "model:\n  init_args:\n    optimizer:\n      class_path: torch.optim.AdamW\n"
        "      init_args: {lr: 0.002, weight_decay: 0.05}\n"
    )
    version = _fit(tmp_path, "--config", config)
    checkpoint = torch.load(version / "checkpoints" / "last.ckpt", weights_only=True)
    groups = {g["name"]: g for g in checkpoint["optimizer_states"][0]["param_groups"]}
    assert groups["head"]["weight_decay"] == 0.05 and groups["head_no_decay"]["weight_decay"] == 0.0


def test_predict_images_from_a_checkpoint_alone(tmp_path, capsys):
    version = _fit(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((10, 14, 3), 128, dtype=np.uint8)).save(photos / "a.png")
    run_cli("predict_images", "--ckpt_path", version / "checkpoints" / "last.ckpt", "--images", photos,
            "--output_dir", tmp_path / "out")  # fmt: skip
    written = Image.open(tmp_path / "out" / "images" / "a.png")
    assert written.size == (28, 20)  # x2
    assert "Predictions written to" in capsys.readouterr().out


def test_predict_images_names_a_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("predict_images", "--ckpt_path", tmp_path / "none.ckpt", "--images", tmp_path)
    assert exit_info.value.code == 2
    assert "none.ckpt does not exist" in capsys.readouterr().err


def test_a_checkpoint_saved_from_python_resumes_through_the_cli(tmp_path):
    """A Python-made checkpoint has no `_class_path` (the CLI's record of the model class): the
    task's own `task_class` stands in, so `fit --ckpt_path` rebuilds the model and continues."""
    from tests.conftest import cpu_trainer
    from vision_lightning import ClassifierModule, ImageClassificationDataModule
    from vision_lightning.data.classification_sources import SyntheticShapes

    model = ClassifierModule(backbone="cifar_lenet", num_classes=4, pretrained=False)
    data = ImageClassificationDataModule(
        SyntheticShapes(samples=32, num_classes=4), image_size=32, batch_size=16
    )
    trainer = cpu_trainer(max_epochs=1, limit_val_batches=1)
    trainer.fit(model, data)
    trainer.save_checkpoint(tmp_path / "python.ckpt")
    run_cli("fit", "--config", ROOT / "configs/quickstart/classification.yaml", "--ckpt_path", tmp_path / "python.ckpt",
            "--data.init_args.source.init_args.samples", "32", "--trainer.max_epochs", "2",
            "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", tmp_path / "run",
            "--checkpoint.dirpath", tmp_path / "run/checkpoints", "--trainer.enable_progress_bar", "false")  # fmt: skip
    resumed = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 2 * trainer.global_step
