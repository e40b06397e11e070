"""The issue-12 and -13 benchmark scripts run anywhere: benchmarks/gpu_check.py says in one sentence that
there is no GPU and exits 0 (safe in CI), and benchmarks/acceleration.py measures a task's
benchmark network on the CPU through Lightning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import acceleration, fast_data, gpu_check, memory

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_without_a_gpu_says_what_it_would_run_and_exits_0(tmp_path: Path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/gpu_check.py"), "--output-dir", str(tmp_path / "out")],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # no GPU, even on a machine that has one
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == gpu_check.NO_GPU
    for named in (
        "No CUDA GPU",
        "16-mixed",
        "bf16-mixed",
        "channels_last",
        "compile",
        "DDP",
        "acceleration.py",
    ):
        assert named in gpu_check.NO_GPU
    assert not (tmp_path / "out").exists()  # nothing was run, nothing written


def test_gpu_check_smoke_subset_covers_every_task_precision_and_switch():
    cases = gpu_check.smoke_cases()
    names = {name for name, _, _ in cases}
    assert set(gpu_check.TASKS) <= names
    for precision in ("16-mixed", "bf16-mixed"):
        assert {name for name, p, _ in cases if p == precision} >= set(gpu_check.TASKS)
    for switch in ("--model.init_args.channels_last", "--model.init_args.compile"):
        assert {name for name, _, extra in cases if switch in extra} == set(gpu_check.TASKS)
    from vision_lightning.losses.segmentation import LOSS_NAMES

    assert set(gpu_check.SEGMENTATION_LOSSES) == set(LOSS_NAMES)  # kept in step with the library
    args = gpu_check.smoke_args("segmentation-lovasz", "16-mixed", "gpu", Path("run"))
    assert args[:3] == ["fit", "--config", str(ROOT / "configs/quickstart/segmentation.yaml")]
    assert args[args.index("--trainer.accelerator") + 1] == "gpu"


def test_acceleration_benchmark_runs_on_the_cpu(tmp_path: Path, capsys: pytest.CaptureFixture):
    output = tmp_path / "figures.json"
    variants = ["eager", "channels_last", "bf16"]  # compile is left out: its first step takes ~20 s on a CPU
    figures = acceleration.main(
        ["--steps", "2", "--repeats", "1", "--tasks", "classification", "--variants", *variants,
         "--output", str(output)]
    )  # fmt: skip
    assert json.loads(output.read_text()) == figures
    rows = figures["results"]["classification"]
    assert list(rows) == variants
    for row in rows.values():
        assert row["stage"] == "train" and row["batch_size"] == 128 and row["timed_steps_per_round"] == 2
        assert 0 < row["images_per_s_median_step"] <= row["images_per_s_best_step"]
        assert len(row["images_per_s_rounds"]) == 1 and row["first_step_s"] > 0
    assert rows["eager"]["vs_eager"] == rows["eager"]["best_vs_eager_best"] == 1.0
    assert figures["machine"]["device"] == "cpu" and figures["machine"]["torch"]
    assert acceleration.failures(figures) == []
    table = capsys.readouterr().out
    assert "| classification (LeNet-5-BN, 32 px, batch 128) | bf16 |" in table


def test_acceleration_benchmark_refuses_fp16_on_the_cpu(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit):
        acceleration.main(["--variants", "fp16", "--tasks", "classification"])
    assert "16-mixed" in capsys.readouterr().err


def test_memory_benchmark_records_predict_marks_and_fit_epochs(tmp_path: Path, capsys: pytest.CaptureFixture):
    output = tmp_path / "figures.json"
    figures = memory.main(
        ["--images", "24", "--batch-size", "4", "--epochs", "2", "--fit-samples", "40",
         "--tasks", "segmentation", "fit", "--output", str(output)]
    )  # fmt: skip
    assert json.loads(output.read_text()) == figures
    predict = figures["results"]["predict segmentation"]
    assert predict["items"] == 24
    marks = [r["done"] for r in predict["records"]]
    assert marks[0] == 0.0 and marks[-1] == 1.0 and len(marks) == 4  # start, 10%+, 50%+, 100%
    fit = [r for r in figures["results"]["fit"]["records"] if r["stage"] == "fit"]
    assert [r["epoch"] for r in fit] == [1, 2]
    assert all(0 < r["rss"] <= r["peak"] for r in [*predict["records"], *fit])
    table = capsys.readouterr().out
    assert (
        "| predict segmentation | 24 | 100% |" in table and "| epoch | step | RSS MiB | peak MiB |" in table
    )


def test_time_to_accuracy_records_a_curve_a_test_figure_and_the_plain_loop(tmp_path: Path):
    """Two tiny epochs of the classification quickstart: a validation point per epoch with its
    wall-clock seconds, the final test accuracy, the TensorBoard curve, and the plain loop's own."""
    from benchmarks import time_to_accuracy

    summary = time_to_accuracy.main([
        "--config", str(ROOT / "configs/quickstart/classification.yaml"), "--plain", "--output-dir", str(tmp_path),
        "--", "--trainer.max_epochs", "2", "--data.init_args.source.init_args.samples", "120",
        "--data.init_args.in_memory", "{cache: false}", "--data.init_args.batch_augment.flip", "true",
        "--model.init_args.tta", "true", "--trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging",
        "--trainer.callbacks.decay", "0.9",
    ])  # fmt: skip
    for name in ("lightning", "plain"):
        (run,) = summary[name]["runs"]
        assert 0.0 <= run["test_acc_without_tta"] <= 1.0  # with tta: true, both figures
        assert [point["epoch"] for point in run["curve"]] == [0, 1]
        seconds = [point["seconds"] for point in run["curve"]]
        assert 0 < seconds[0] <= seconds[1] <= run["seconds"]
        assert 0.0 <= run["test_acc"] <= 1.0 and all(0 <= p["val_acc"] <= 1 for p in run["curve"])
    events = list((tmp_path / "lightning-0").rglob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for event in events:
        accumulator = EventAccumulator(str(event))
        accumulator.Reload()
        tags |= set(accumulator.Tags()["scalars"])
    assert "time_to_accuracy/val_acc" in tags
    assert (
        json.loads((tmp_path / "summary.json").read_text())["lightning"]["test_acc"]["median"]
        == (summary["lightning"]["runs"][0]["test_acc"])
    )


def test_fast_data_benchmark_compares_the_loaders_with_the_step_rate(tmp_path: Path):
    output = tmp_path / "figures.json"
    figures = fast_data.main(
        ["--images", "40", "--batch-size", "8", "--workers", "0", "--repeats", "1", "--steps", "1",
         "--output", str(output)]
    )  # fmt: skip
    assert json.loads(output.read_text()) == figures
    assert 0 < figures["images"] < 40  # generated, less the validation share
    rates = figures["images_per_s"]
    assert set(rates) == {"workers", "in_memory", "step"} and all(r["median"] > 0 for r in rates.values())
    assert figures["in_memory_vs_step"]["median"] > 0 and figures["cache_read_s"]["median"] > 0


def test_superres_benchmark_scores_plain_and_x8_from_the_same_weights(tmp_path: Path):
    import numpy as np
    import torch
    from PIL import Image

    from benchmarks.superres import scores_on
    from tests.conftest import cpu_trainer
    from vision_lightning import SuperResModule

    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    torch.manual_seed(0)
    model = SuperResModule(arch="espcn", scale=4)
    scores = scores_on(cpu_trainer(), model, tmp_path, "Tiny", tta=True)
    assert set(scores) == {
        "Tiny_psnr_y_crop4", "Tiny_bicubic_psnr_y_crop4", "Tiny_ssim_y_crop4", "Tiny_bicubic_ssim_y_crop4",
        "Tiny_x8_psnr_y_crop4", "Tiny_x8_ssim_y_crop4",
    }  # fmt: skip
    assert scores["Tiny_x8_psnr_y_crop4"] != scores["Tiny_psnr_y_crop4"] and model.tta is False


def test_segmentation_benchmark_scores_a_recipe_with_and_without_tta(tmp_path: Path):
    """The ISBI benchmark on a tiny folder in ISBI's layout: the in-memory recipe trains for its
    budget, passes the arguments after `--` on, and scores the same weights with flip TTA too."""
    import numpy as np
    from PIL import Image

    from benchmarks import segmentation

    rng = np.random.default_rng(0)
    for folder in ("image", "label"):
        (tmp_path / "isbi2012/train" / folder).mkdir(parents=True)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(
            tmp_path / f"isbi2012/train/image/{i}.png"
        )
        label = (rng.random((40, 40)) > 0.3).astype(np.uint8) * 255
        Image.fromarray(label).save(tmp_path / f"isbi2012/train/label/{i}.png")
    (result,) = segmentation.main([
        "--data-root", str(tmp_path), "--budget", "2", "--recipes", "isbi_fast_unet_in_memory", "--tta",
        "--", "--data.init_args.image_size", "32", "--data.init_args.in_memory.cache_dir", str(tmp_path / "cache"),
    ])  # fmt: skip
    assert result["recipe"] == "isbi_fast_unet_in_memory" and result["epochs"] >= 1
    assert "--data.init_args.image_size" in result["extra"]
    for key in ("val_iou_membrane", "val_iou_membrane_tta", "val_dice", "val_dice_tta"):
        assert 0.0 <= result[key] <= 1.0


def test_detection_benchmark_scores_the_recipe_and_the_mean_box_baseline(tmp_path: Path):
    """The Penn-Fudan benchmark on a tiny set in its YOLO layout (flat images/ and labels/, classes.txt):
    the recipe trains within its budget and is scored on the held-out images next to the baseline."""
    from benchmarks import detection
    from vision_lightning.data.detection_synthetic import write_yolo_dataset

    write_yolo_dataset(
        tmp_path / "pennfudan", samples=10, val_samples=0, num_classes=1, image_size=48, data_yaml=False
    )
    for folder in ("images", "labels"):  # flat, as ../shared/data/pennfudan: validation is split off
        for path in (tmp_path / "pennfudan" / folder / "train").iterdir():
            path.rename(tmp_path / "pennfudan" / folder / path.name)
        (tmp_path / "pennfudan" / folder / "train").rmdir()
    (result,) = detection.main([
        "--data-root", str(tmp_path), "--budget", "3",
        "--", "--data.init_args.image_size", "64", "--trainer.max_epochs", "1",
    ])  # fmt: skip
    assert result["recipe"] == "pennfudan_fcos" and result["epochs"] >= 1 and result["held_out_images"] == 2
    for value in (result["val_map_50"], result["val_map"], *result["baseline_mean_box"].values()):
        assert 0.0 <= value <= 1.0
    assert result["baseline_mean_box"]["map"] <= result["baseline_mean_box"]["map_50"]
