"""The CLI end to end: the quickstart's promises (fit, TensorBoard, checkpoint, predict CSV, resume),
the other subcommands, --print_config, and one-line errors for bad input."""

from __future__ import annotations

import csv
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs/quickstart/classification.yaml"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _events(run: Path) -> EventAccumulator:
    files = sorted(run.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file under {run}"
    accumulator = EventAccumulator(str(files[0].parent), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory) -> Path:
    """The quickstart config as the README runs it, checkpoints in <run>/checkpoints."""
    run = tmp_path_factory.mktemp("quickstart")
    run_cli(
        "fit",
        "--config",
        QUICKSTART,
        "--trainer.default_root_dir",
        run,
        "--checkpoint.dirpath",
        run / "checkpoints",
        *QUIET,
    )
    return run


def test_quickstart_trains_far_above_chance(quickstart_run: Path):
    events = _events(quickstart_run)
    accuracy = [e.value for e in events.Scalars("val/acc")]
    assert len(accuracy) == 8  # one per epoch
    assert accuracy[-1] > 0.9  # 4 classes: chance is 0.25
    groups = ("backbone", "backbone_no_decay", "head", "head_no_decay")  # no decay: norms, biases
    for tag in ("train/loss_epoch", "val/loss", "val/f1_macro", *(f"lr-Adam/{group}" for group in groups)):
        assert tag in events.Tags()["scalars"]
    lrs = [e.value for e in events.Scalars("lr-Adam/head")]
    assert lrs[-1] < lrs[0]  # cosine schedule decays


def test_quickstart_logs_images(quickstart_run: Path):
    events = _events(quickstart_run)
    assert {"val/samples", "val/confusion_matrix"} <= set(events.Tags()["images"])
    assert len(events.Images("val/samples")) == 8
    sample = events.Images("val/samples")[-1]
    assert sample.width >= 400 and sample.height >= 100


def test_quickstart_checkpoints(quickstart_run: Path):
    checkpoints = quickstart_run / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file()
    best = [p for p in checkpoints.glob("epoch*.ckpt")]
    assert len(best) == 1 and "val_loss" in best[0].name
    state = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 7
    assert state["hyper_parameters"]["class_names"] == ["circle", "square", "triangle", "cross"]


def test_predict_writes_csv(quickstart_run: Path, tmp_path: Path):
    out = tmp_path / "predictions"
    run_cli(
        "predict", "--config", QUICKSTART, "--ckpt_path", quickstart_run / "checkpoints/last.ckpt",
        "--prediction_writer.output_dir", out, "--trainer.default_root_dir", tmp_path, *QUIET,
    )  # fmt: skip
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "prediction", "circle", "square", "triangle", "cross"]
    assert len(rows) == 500  # synthetic test set: a quarter of the source's 2,000 samples
    for row in rows:
        probs = [float(row[c]) for c in ("circle", "square", "triangle", "cross")]
        assert abs(sum(probs) - 1) < 1e-4
        assert row["prediction"] == ("circle", "square", "triangle", "cross")[probs.index(max(probs))]


def test_predict_folder(quickstart_run: Path, tmp_path: Path):
    from vision_lightning.data.synthetic import write_image_folder

    paths = write_image_folder(
        tmp_path / "images", per_class=3, num_classes=4, image_size=48, extension=".jpg"
    )
    out = tmp_path / "predictions"
    run_cli(
        "predict", "--config", QUICKSTART, "--ckpt_path", quickstart_run / "checkpoints/last.ckpt",
        "--data.init_args.predict_root", tmp_path / "images", "--prediction_writer.output_dir", out,
        "--trainer.default_root_dir", tmp_path, *QUIET,
    )  # fmt: skip
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in paths)
    correct = sum(Path(r["path"]).parent.name == r["prediction"] for r in rows)
    assert correct >= 9  # the folder names are the true classes


@pytest.mark.parametrize("subcommand", ["validate", "test"])
def test_validate_and_test(quickstart_run: Path, tmp_path: Path, subcommand: str):
    run_cli(subcommand, "--config", QUICKSTART, "--ckpt_path", quickstart_run / "checkpoints/last.ckpt",
            "--trainer.default_root_dir", tmp_path, *QUIET)  # fmt: skip
    prefix = "val" if subcommand == "validate" else "test"
    accuracy = _events(tmp_path).Scalars(f"{prefix}/acc")[-1].value
    assert accuracy > 0.9


def test_resume_continues_from_last_checkpoint(quickstart_run: Path, tmp_path: Path):
    last = quickstart_run / "checkpoints/last.ckpt"
    before = torch.load(last, map_location="cpu", weights_only=False)
    run_cli(
        "fit", "--config", QUICKSTART, "--ckpt_path", last, "--trainer.max_epochs", "9",
        "--trainer.default_root_dir", tmp_path, "--checkpoint.dirpath", tmp_path / "checkpoints", *QUIET,
    )  # fmt: skip
    after = torch.load(tmp_path / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert after["epoch"] == before["epoch"] + 1
    steps_per_epoch = before["global_step"] // (before["epoch"] + 1)
    assert after["global_step"] == before["global_step"] + steps_per_epoch
    assert len(_events(tmp_path).Scalars("val/acc")) == 1  # only the one new epoch ran


def test_print_config_shows_linked_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", QUICKSTART, "--print_config")
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "class_path: vision_lightning.ClassifierModule" in printed
    assert "backbone: cifar_lenet" in printed
    assert "checkpoint:" in printed and "monitor: val/loss" in printed
    assert "filename: epoch{epoch:03d}-val_loss{val/loss:.4f}" in printed  # no "/" in file names


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            [
                "--data.init_args.source",
                "ImageFolder",
                "--data.init_args.source.init_args.root",
                "/does/not/exist",
            ],
            "image folder /does/not/exist does not exist",
        ),
        (["--model.init_args.backbone", "resnet181"], "unknown backbone 'resnet181'; did you mean resnet18"),
        (
            [
                "--data.init_args.source",
                "CsvLabels",
                "--data.init_args.source.init_args.csv_path",
                "/missing.csv",
            ],
            "CSV file /missing.csv does not exist",
        ),
        (
            ["--data.init_args.image_size", "40"],
            "backbone 'cifar_lenet' takes 3x32x32 images but got 3x40x40",
        ),
    ],
)
def test_bad_input_is_one_line(override, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(
            "fit",
            "--config",
            QUICKSTART,
            "--trainer.fast_dev_run",
            "true",
            "--trainer.default_root_dir",
            tmp_path,
            *QUIET,
            *override,
        )
    assert exit_info.value.code == 2
    error_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0]


def test_csv_without_label_column_is_one_line(tmp_path, capsys):
    (tmp_path / "labels.csv").write_text("image,target\na.png,0\n")
    with pytest.raises(SystemExit):
        run_cli("fit", "--config", QUICKSTART, "--data.init_args.source", "CsvLabels",
                "--data.init_args.source.init_args.csv_path", tmp_path / "labels.csv",
                "--data.init_args.source.init_args.label_columns", "label")  # fmt: skip
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'labels.csv'} has no column 'label' (columns: image, target)" in err
    assert "Traceback" not in err


def test_module_and_console_script():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "vision-lightning"]
    assert script.value == "vision_lightning.cli:main"
    result = subprocess.run(
        [sys.executable, "-m", "vision_lightning", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    for subcommand in ("fit", "validate", "test", "predict"):
        assert subcommand in result.stdout
