"""PredictionWriter: each run owns its files, through the Trainer, the Python API and the CLI."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
from PIL import Image

from tests.conftest import cpu_trainer
from vision_lightning import SegmentationDataModule, SegmentationModule
from vision_lightning.callbacks.prediction_writer import PredictionWriter
from vision_lightning.data.segmentation_sources import SyntheticShapes
from vision_lightning.outputs.run import RECORD_NAME
from vision_lightning.utils.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
TINY_UNET = {"arch": "classic_unet", "arch_args": {"base_channels": 4}, "log_images": 0}


class SlowBatches(pl.Callback):
    """Sleeps after each predict batch, so that two runs started together overlap."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds

    def on_predict_batch_end(self, *args, **kwargs) -> None:
        time.sleep(self.seconds)


class FailAfter(pl.Callback):
    """Stops a predict run with an error after `batches` batches: what a crash leaves behind."""

    def __init__(self, batches: int) -> None:
        self.batches = batches

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx + 1 == self.batches:
            raise RuntimeError("killed")


def write_images(folder: Path, names: list[str], size: int = 24) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for name in names:
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{name}.png")
        paths.append(folder / f"{name}.png")
    return paths


def predict(folder: Path, out: Path, existing: str = "error", callbacks=(), batch_size: int = 2) -> None:
    pl.seed_everything(0)
    model = SegmentationModule(**TINY_UNET)
    data = SegmentationDataModule(
        source=SyntheticShapes(8), image_size=16, batch_size=batch_size, predict_root=str(folder)
    )
    writer = PredictionWriter(str(out), existing=existing)
    cpu_trainer(callbacks=[writer, *callbacks]).predict(model, datamodule=data, return_predictions=False)


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def record(folder: Path) -> dict:
    return json.loads((folder / RECORD_NAME).read_text())


def test_the_record_lists_the_masks_and_the_unreadable_inputs(tmp_path: Path, caplog):
    write_images(tmp_path / "in", ["a", "b", "c"])
    (tmp_path / "in/broken.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING):
        predict(tmp_path / "in", tmp_path / "out")
    assert f"{tmp_path / 'in/broken.png'}" in caplog.text  # the skipped file is named
    assert files(tmp_path / "out") == ["masks/a.png", "masks/b.png", "masks/c.png", RECORD_NAME]
    written = record(tmp_path / "out")
    assert sorted(entry["path"] for entry in written["files"]) == [
        "masks/a.png",
        "masks/b.png",
        "masks/c.png",
    ]
    assert written["items_predicted"] == 3
    assert written["skipped"] == [str(tmp_path / "in/broken.png")] and written["task"] == "SegmentationModule"


def test_an_interrupted_run_is_refused_then_overwritten(tmp_path: Path):
    write_images(tmp_path / "in", [f"img{i}" for i in range(6)])
    with pytest.raises(RuntimeError, match="killed"):
        predict(tmp_path / "in", tmp_path / "out", callbacks=[FailAfter(2)])
    left = files(tmp_path / "out")
    assert RECORD_NAME not in left and len([name for name in left if name.startswith("masks/img")]) == 4
    with pytest.raises(InputError, match=f"output folder {tmp_path / 'out'} is not empty"):
        predict(tmp_path / "in", tmp_path / "out")
    predict(tmp_path / "in", tmp_path / "out", existing="overwrite")
    assert files(tmp_path / "out") == [*(f"masks/img{i}.png" for i in range(6)), RECORD_NAME]
    assert record(tmp_path / "out")["items_predicted"] == 6


def test_add_writes_beside_an_earlier_run_but_never_over_it(tmp_path: Path):
    write_images(tmp_path / "first", ["a", "b"])
    write_images(tmp_path / "second", ["c"])
    predict(tmp_path / "first", tmp_path / "out")
    predict(tmp_path / "second", tmp_path / "out", existing="add")
    assert files(tmp_path / "out") == ["masks/a.png", "masks/b.png", "masks/c.png", RECORD_NAME]
    written = record(tmp_path / "out")
    assert [entry["path"] for entry in written["files"]] == ["masks/c.png"]
    assert len(written["earlier_runs"]) == 1 and written["earlier_runs"][0]["items_predicted"] == 2
    with pytest.raises(InputError, match=r"masks/a.png exists already and existing .* never replaces a file"):
        predict(tmp_path / "first", tmp_path / "out", existing="add")


def test_class_names_with_separators_stay_inside_the_folder_with_the_python_api(tmp_path: Path):
    images = write_images(tmp_path / "in", ["..x", "y"])
    model = SegmentationModule(
        **{**TINY_UNET, "mode": "multilabel", "num_classes": 3}, class_names=["../evil", "a/b", "a_b"]
    )
    model.predict_to_folder(images, tmp_path / "out", batch_size=2, checkpoint="made.ckpt")
    expected = [f"masks/{stem}_{name}.png" for stem in ("x", "y") for name in ("_evil", "a_b", "a_b_2")]
    assert files(tmp_path / "out") == sorted([*expected, RECORD_NAME])
    assert record(tmp_path / "out")["checkpoint"] == "made.ckpt"
    assert files(tmp_path) == sorted(
        [*(f"in/{p.name}" for p in images), *(f"out/{n}" for n in [*expected, RECORD_NAME])]
    )


def cli_predict(out: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "vision_lightning", "predict",
        "--config", str(ROOT / "configs/quickstart/classification.yaml"),
        "--data.init_args.source.init_args.samples", "400",
        "--data.init_args.batch_size", "4",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.accelerator", "cpu",
        "--trainer.callbacks+", "tests.callbacks.test_prediction_writer.SlowBatches",
        "--prediction_writer.output_dir", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_two_concurrent_predict_runs_never_mix_their_rows(tmp_path: Path):
    """Two real processes into one folder at once: one writes, the other is refused (the folder is
    locked or, if it comes late, no longer empty); the written CSV is whole and its record is the
    successful process's own."""
    out = tmp_path / "out"
    processes = [cli_predict(out), cli_predict(out)]
    results = [(process, *process.communicate(timeout=300)) for process in processes]
    codes = sorted(process.returncode for process, _, _ in results)
    assert codes == [0, 2], [stderr[-2000:] for _, _, stderr in results]
    (winner, stdout, _), (_, loser_out, loser_err) = sorted(results, key=lambda r: r[0].returncode)
    assert f"Predictions written to {out / 'predictions.csv'}" in stdout
    assert "Predictions written" not in loser_out
    errors = [line for line in loser_err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"output folder {out} is " in errors[0]
    assert "Traceback" not in loser_err
    print(errors[0])  # which of the two refusals it met (-s shows it)
    written = record(out)
    assert written["run_id"].split("-")[1] == str(winner.pid)  # the record is the winner's
    with (out / "predictions.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert written["files"] == [{"path": "predictions.csv", "rows": len(rows) - 1}]
    assert written["items_predicted"] == len(rows) - 1 == 100  # the test split, each image once
    assert files(out) == [RECORD_NAME, "predictions.csv"]
