"""The learning-rate finder: the `lr_find` subcommand (curve files, one-line suggestion, nothing
trained or saved), and the callback route, where the suggestion must reach the optimizer and the
schedule that `configure_optimizers` builds."""

from __future__ import annotations

import copy
import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import optimizer, run_cli
from vision_lightning import ClassifierModule, ImageClassificationDataModule, OneCycleLR
from vision_lightning.data.classification_sources import SyntheticShapes
from vision_lightning.lr_find import LRFindResult, VisionTrainer, suggest_lr
from vision_lightning.utils.visualize import line_plot_image

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs/quickstart/classification.yaml"
QUICKSTART_LR = 0.003  # the config's lr
TINY = [
    "--config", QUICKSTART,
    "--data.init_args.source.init_args.samples", "160",  # 128 training images: 8 batches of 16
    "--data.init_args.batch_size", "16",
    "--trainer.accelerator", "cpu",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
]  # fmt: skip


def _curve(run: Path) -> tuple[list[float], list[float]]:
    (path,) = run.rglob("lr_find.csv")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return [float(r["lr"]) for r in rows], [float(r["loss"]) for r in rows]


def _checkpoints(run: Path) -> list[str]:
    return [name for _, _, files in os.walk(run) for name in files if name.endswith(".ckpt")]


def _scalars(run: Path, tag: str) -> list[float]:
    (events,) = {p.parent for p in run.rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
    accumulator.Reload()
    return [e.value for e in accumulator.Scalars(tag)]


def test_lr_find_subcommand_writes_curve_and_suggestion(tmp_path: Path, capsys):
    # no early stop: the point is 20 steps over several epochs, wherever this data makes the loss rise
    run_cli(
        "lr_find",
        *TINY,
        "--num_training",
        "20",
        "--early_stop_threshold",
        "null",
        "--trainer.default_root_dir",
        tmp_path,
    )
    lines = capsys.readouterr().out.splitlines()
    (line,) = [line for line in lines if line.startswith("Suggested learning rate")]
    suggested = float(line.split()[3])
    assert f"--model.init_args.optimizer.init_args.lr {suggested:.3g}" in line and "falls fastest at" in line

    lrs, losses = _curve(tmp_path)
    assert len(lrs) == 20  # 20 steps although an epoch has 8 batches and max_epochs is 8 or less
    assert lrs[0] == pytest.approx(1e-7) and all(a < b for a, b in zip(lrs, lrs[1:]))
    assert all(math.isfinite(v) for v in losses)
    assert any(math.isclose(suggested, lr, rel_tol=5e-3) for lr in lrs[10:-1])

    (png,) = tmp_path.rglob("lr_find.png")
    assert png.parent == next(tmp_path.rglob("config.yaml")).parent  # the run's log folder
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape == (400, 640, 3)
    red = (image[..., 0] > 200) & (image[..., 1] < 100) & (image[..., 2] < 100)
    assert red.sum() > 20  # the suggestion is circled
    assert _checkpoints(tmp_path) == []  # the finder's own temporary checkpoint is gone too


def test_lr_find_leaves_the_model_as_it_was(tmp_path: Path):
    """Weights and BatchNorm statistics restored, `lr` untouched: the search trains nothing."""
    data = ImageClassificationDataModule(SyntheticShapes(96, num_classes=3), image_size=32, batch_size=16)
    model = ClassifierModule(
        backbone="lenet5_bn", num_classes=3, optimizer=optimizer(lr=0.01), lr_scheduler=OneCycleLR
    )
    before = copy.deepcopy(model.state_dict())
    trainer = VisionTrainer(
        accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    result = trainer.lr_find(model, datamodule=data, num_training=15, output_dir=str(tmp_path / "curve"))
    assert len(result.lrs) == 15 and result.losses[0] != result.losses[-1]  # it did take steps
    assert result.csv_path == tmp_path / "curve/lr_find.csv" and result.plot_path.is_file()
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.lr == 0.01
    assert model.hparams.optimizer["init_args"] == {"lr": 0.01}
    assert _checkpoints(tmp_path) == []


def test_lr_find_diverging_loss_is_one_line(tmp_path: Path, capsys):
    run_cli("lr_find", *TINY, "--min_lr", "10", "--max_lr", "1e6", "--num_training", "20",
            "--trainer.default_root_dir", tmp_path)  # fmt: skip
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("No learning-rate suggestion")]
    assert len(lines) == 1 and "the loss diverged after" in lines[0] and "--max_lr" in lines[0]
    lrs, _ = _curve(tmp_path)
    assert 1 <= len(lrs) < 20  # stopped early; what was measured is still written
    assert next(tmp_path.rglob("lr_find.png")).is_file()


def test_lr_finder_callback_sets_the_rate_the_schedule_uses(tmp_path: Path):
    """`fit --trainer.callbacks+=LRFinder`: the cosine schedule starts from the suggestion (Lightning's
    own callback leaves the schedule built from the old rate), and checkpoints record it."""
    run_cli(
        "fit", *TINY, "--trainer.callbacks+=LRFinder", "--trainer.callbacks.num_training_steps", "20",
        "--trainer.callbacks.min_lr", "1e-4",
        "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1",
        "--trainer.default_root_dir", tmp_path, "--checkpoint.dirpath", tmp_path / "checkpoints",
    )  # fmt: skip
    lrs, _ = _curve(tmp_path)
    assert len(lrs) > 8  # more steps than the one epoch of the run has batches
    trained = torch.load(tmp_path / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    found = trained["hyper_parameters"]["optimizer"]["init_args"]["lr"]
    assert found != QUICKSTART_LR and any(math.isclose(found, lr, rel_tol=1e-9) for lr in lrs)
    groups = trained["optimizer_states"][0]["param_groups"]
    assert {g["name"]: g["initial_lr"] for g in groups} == {
        name: found for name in ("backbone", "backbone_no_decay", "head", "head_no_decay")
    }  # the schedule starts from it in every group
    for group in ("head", "backbone"):
        used = _scalars(tmp_path, f"lr-Adam/{group}")
        assert used[0] == pytest.approx(found, rel=1e-5)  # float32 in TensorBoard
        assert used[-1] < used[0]  # and the cosine schedule decays from it


def test_lightning_learning_rate_finder_works_without_a_schedule(tmp_path: Path):
    """Lightning's own callback sets the optimizer's rate, which holds when nothing schedules it."""
    run_cli(
        "fit", *TINY, "--trainer.callbacks+=LearningRateFinder", "--trainer.callbacks.num_training_steps", "20",
        "--trainer.callbacks.early_stop_threshold", "null",  # all 20 steps: the run has 32 batches
        "--model.init_args.lr_scheduler", "null", "--data.init_args.source.init_args.samples", "320",
        "--data.init_args.batch_size", "8",
        "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1",
        "--trainer.default_root_dir", tmp_path, "--checkpoint.dirpath", tmp_path / "checkpoints",
    )  # fmt: skip
    trained = torch.load(tmp_path / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    found = trained["hyper_parameters"]["optimizer"]["init_args"]["lr"]
    assert found != QUICKSTART_LR
    used = _scalars(tmp_path, "lr-Adam/head")
    assert used and all(v == pytest.approx(found, rel=1e-5) for v in used)
    assert not [name for name in _checkpoints(tmp_path) if name.startswith(".lr_find")]


def test_help_lists_lr_find(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("--help")
    assert exit_info.value.code == 0
    assert "lr_find" in capsys.readouterr().out


def test_lr_find_print_config(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("lr_find", "--config", QUICKSTART, "--num_training", "30", "--print_config")
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "num_training: 30" in printed and "min_lr: 1.0e-07" in printed
    assert "class_path: vision_lightning.ClassifierModule" in printed


def test_lr_find_bad_argument_is_one_line(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("lr_find", *TINY, "--num_training", "5", "--trainer.default_root_dir", tmp_path)
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "num_training=5" in errors[0]


def test_line_plot_image_log_axis_gaps_and_marker():
    x = np.logspace(-6, 0, 40)
    y = np.linspace(2, 1, 40)
    y[5] = np.nan  # a gap, not a crash
    image = line_plot_image(x, y, log_x=True, marker=20, marker_label="here", title="t", size=(320, 200))
    assert image.shape == (200, 320, 3) and image.dtype == np.uint8
    blue = (image[..., 2] > 150) & (image[..., 0] < 100)
    assert blue.sum() > 100
    with pytest.raises(ValueError, match="positive"):
        line_plot_image([0.0, 1.0], [1.0, 2.0], log_x=True)


def test_suggestion_is_half_way_down_the_longest_descent():
    """fast.ai's valley rule: a flat, noisy start, a fall between 1e-3 and 1e-1, then divergence;
    the suggestion lies on the fall, and a curve that never falls has none."""
    lrs = [float(v) for v in np.logspace(-7, 0, 100)]
    rng = np.random.default_rng(0)
    losses = [2.0 + 1e-3 * rng.standard_normal() for _ in lrs]
    for i, lr in enumerate(lrs):
        if 1e-3 <= lr <= 1e-1:
            losses[i] = 2.0 - (np.log10(lr) + 3) / 2  # 2 -> 1 over two decades
        elif lr > 1e-1:
            losses[i] = 1.0 + 10 * (np.log10(lr) + 1)
    suggested = suggest_lr(lrs, losses)
    assert 3e-3 <= suggested <= 3e-2
    result = LRFindResult(lrs, losses, suggested, num_training=100, early_stop_threshold=4.0)
    assert 1e-3 <= result.steepest <= 1e-1 and 5e-2 <= result.lowest <= 1e-1  # the other two anchors
    assert suggest_lr(lrs, [float(i) for i in range(100)]) is None  # rising all the way
    assert suggest_lr(lrs[:12], losses[:12]) is None  # one point left after leaving out 10 + 1
    with_nans = [v if i < 60 else float("nan") for i, v in enumerate(losses)]
    assert lrs[10] <= suggest_lr(lrs, with_nans) <= lrs[59]  # finite points only
