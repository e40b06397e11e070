"""Detection through the command line, as a user runs it: `fit` on data in the YOLO layout, `predict`
and `predict_images` from the checkpoint, the files in original pixels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli
from vision_lightning import DetectionModule
from vision_lightning.data.detection_synthetic import write_yolo_dataset

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def yolo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One epoch of the detection quickstart on 8 images written in the YOLO layout (data.yaml)."""
    tmp = tmp_path_factory.mktemp("detection_cli")
    data_yaml = write_yolo_dataset(tmp / "yolo", samples=8, val_samples=4, num_classes=2, image_size=48)
    run = tmp / "run"
    run_cli(
        "fit", "--config", ROOT / "configs/quickstart/detection.yaml",
        "--data.init_args.source", "vision_lightning.data.YoloFolders",
        "--data.init_args.source.init_args.root", data_yaml,
        "--data.init_args.image_size", "64", "--data.init_args.batch_size", "4",
        "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", run, "--checkpoint.dirpath", run / "checkpoints",
    )  # fmt: skip
    return data_yaml, run


def test_fit_keeps_the_best_by_map_without_a_checkpoint_section(yolo_run):
    _, run = yolo_run
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in names
    assert any(name.startswith("epoch000-val_map_50") for name in names), names
    task = DetectionModule.load_from_checkpoint(run / "checkpoints/last.ckpt")
    assert task.class_names == ["rectangle", "ellipse"]
    assert task.preprocessing["resize"] == "letterbox" and task.preprocessing["image_size"] == 64


def test_predict_writes_boxes_in_the_original_pixels(yolo_run, tmp_path: Path):
    data_yaml, run = yolo_run
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (120, 40), (40, 90, 200)).save(photos / "wide.png")  # letterboxed: 3x its height
    Image.new("RGB", (30, 90), (200, 40, 40)).save(photos / "tall.png")
    out = tmp_path / "predictions"
    run_cli(
        "predict", "--config", ROOT / "configs/quickstart/detection.yaml",
        "--data.init_args.source", "vision_lightning.data.YoloFolders",
        "--data.init_args.source.init_args.root", data_yaml,
        "--data.init_args.image_size", "64", "--data.init_args.predict_root", photos,
        "--model.init_args.inference.score_threshold", "0.0",
        "--ckpt_path", run / "checkpoints/last.ckpt", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--prediction_writer.output_dir", out,
    )  # fmt: skip
    with (out / "detections.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "class_name", "score", "x1", "y1", "x2", "y2"]
    sizes = {"wide.png": (120, 40), "tall.png": (30, 90)}
    assert {Path(row["path"]).name for row in rows} == set(sizes)  # score 0 keeps boxes for both
    for row in rows:
        width, height = sizes[Path(row["path"]).name]
        x1, y1, x2, y2 = (float(row[k]) for k in ("x1", "y1", "x2", "y2"))
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
        assert row["class_name"] in ("rectangle", "ellipse")
    coco = json.loads((out / "detections.json").read_text())
    assert {
        image["file_name"].rsplit("/", 1)[-1]: (image["width"], image["height"]) for image in coco["images"]
    } == sizes
    assert len(coco["annotations"]) == len(rows)


def test_predict_images_from_the_checkpoint_alone_gives_the_boxes_of_predict(yolo_run, tmp_path: Path):
    data_yaml, run = yolo_run
    images = sorted((data_yaml.parent / "images/val").iterdir())[:2]
    out = tmp_path / "predictions"
    run_cli(
        "predict", "--config", ROOT / "configs/quickstart/detection.yaml",
        "--data.init_args.source", "vision_lightning.data.YoloFolders",
        "--data.init_args.source.init_args.root", data_yaml,
        "--data.init_args.image_size", "64", "--data.init_args.predict_root", images[0].parent,
        "--ckpt_path", run / "checkpoints/last.ckpt", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--prediction_writer.output_dir", out,
    )  # fmt: skip
    with (out / "detections.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    task = DetectionModule.load_from_checkpoint(run / "checkpoints/last.ckpt")
    results = task.predict_images(images)
    assert [Path(r["path"]).name for r in results] == [p.name for p in images]
    assert rows, "no box above the default score threshold: the comparison would be empty"
    for image, result in zip(images, results):
        boxes, scores = np.asarray(result["boxes"]), np.asarray(result["scores"])
        assert boxes.shape == (len(scores), 4) and len(result["labels"]) == len(scores)
        written = [row for row in rows if Path(row["path"]).name == image.name]
        assert len(written) == len(scores)
        if written:  # the best box of the CLI's predict is predict_images' best box (CSV: 2 decimals)
            best = max(written, key=lambda row: float(row["score"]))
            expected = [float(best[k]) for k in ("x1", "y1", "x2", "y2")]
            np.testing.assert_allclose(boxes[scores.argmax()], expected, atol=0.01)
            assert 0 <= boxes.min() and boxes.max() <= 48  # the files are 48 x 48
