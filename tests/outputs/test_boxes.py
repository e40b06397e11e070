"""Predicted boxes written in original pixels: COCO-style JSON (pycocotools loads it), CSV, drawn images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import DataLoader

from tests.conftest import cpu_trainer
from tests.detection_batches import CLASS_NAMES, collate, contract_item
from vision_lightning.callbacks import PredictionWriter
from vision_lightning.outputs.boxes import BoxSink
from vision_lightning.outputs.run import OutputRun, write_run
from vision_lightning.tasks.detection import DetectionModule
from vision_lightning.utils.errors import InputError

ORIGINAL_BOX = [20.0, 10.0, 120.0, 60.0]  # in a 200 x 100 (W x H) image


def test_boxes_come_back_in_original_pixels_through_the_prediction_writer(tmp_path: Path):
    # 200 x 100 letterboxed to 64: scale 0.32, the image 64 x 32 at pad_y 16.
    image = np.full((100, 200, 3), 100, dtype=np.uint8)
    item = contract_item(image, np.array([ORIGINAL_BOX]), np.array([1]), 64, "photos/wide.jpg")
    assert item["scale"].tolist() == pytest.approx([0.32, 0.32, 0.0, 16.0])
    input_box = item["boxes"][0]
    assert input_box.tolist() == pytest.approx([6.4, 19.2, 38.4, 35.2])
    del item["boxes"], item["labels"]
    task = DetectionModule(num_classes=2, class_names=CLASS_NAMES, fpn_channels=64, save_images=True)
    task.preprocessing = {"image_size": 64, "resize": "letterbox", "mean": [0.5] * 3, "std": [0.25] * 3}
    task.detect = lambda images: [
        {"boxes": input_box[None], "scores": torch.tensor([0.875]), "labels": torch.tensor([1])}
    ]  # what the detector found, in input pixels
    out = tmp_path / "predictions"
    trainer = cpu_trainer(callbacks=[PredictionWriter(str(out))])
    trainer.predict(task, DataLoader([item], batch_size=1, collate_fn=collate), return_predictions=False)

    with (out / "detections.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["path"] for r in rows] == ["photos/wide.jpg"] and rows[0]["class_name"] == "blue"
    assert [float(rows[0][k]) for k in ("x1", "y1", "x2", "y2")] == pytest.approx(ORIGINAL_BOX, abs=0.01)
    assert float(rows[0]["score"]) == 0.875
    document = json.loads((out / "detections.json").read_text())
    assert document["images"] == [{"id": 0, "file_name": "photos/wide.jpg", "height": 100, "width": 200}]
    assert document["categories"] == [{"id": 0, "name": "red"}, {"id": 1, "name": "blue"}]
    (result,) = document["annotations"]
    assert result["bbox"] == pytest.approx([20.0, 10.0, 100.0, 50.0], abs=0.01) and result["category_id"] == 1
    drawn = Image.open(out / "images/wide.png")
    assert drawn.size == (200, 100)  # the letterbox padding cut off, back at the original size
    assert np.asarray(drawn)[10, 70].tolist() != [100, 100, 100]  # the box's top edge is drawn
    record = json.loads((out / "prediction_run.json").read_text())
    assert {f["path"] for f in record["files"]} == {"detections.csv", "detections.json", "images/wide.png"}

    with pytest.raises(InputError, match="is not empty"):  # the `existing` policy holds for boxes too
        cpu_trainer(callbacks=[PredictionWriter(str(out))]).predict(
            task, DataLoader([item], batch_size=1, collate_fn=collate), return_predictions=False
        )


def test_the_json_loads_in_pycocotools_and_as_results(tmp_path: Path):
    outputs = {
        "path": ["a.png", "b.png"],
        "size": [(40, 50), (30, 30)],
        "boxes": [torch.tensor([[1.0, 2.0, 11.0, 22.0], [5.0, 5.0, 9.0, 9.0]]), torch.zeros(0, 4)],
        "scores": [torch.tensor([0.9, 0.4]), torch.zeros(0)],
        "labels": [torch.tensor([0, 1]), torch.zeros(0, dtype=torch.int64)],
    }
    path = write_run(OutputRun(tmp_path), lambda: BoxSink(tmp_path, "", CLASS_NAMES), [outputs])
    document = json.loads(path.read_text())
    coco = COCO(str(path))  # a self-contained COCO file
    assert sorted(coco.getImgIds()) == [0, 1] and coco.loadCats(1)[0]["name"] == "blue"
    results = coco.loadRes(document["annotations"])  # and a result list for a ground truth's loadRes
    assert len(results.getAnnIds(imgIds=[0])) == 2
    assert results.loadAnns(1)[0]["bbox"] == [1.0, 2.0, 10.0, 20.0]
    with (tmp_path / "detections.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 2  # an image without boxes has no row (it is in the JSON)
