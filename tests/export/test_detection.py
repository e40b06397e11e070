"""Detection exports without NMS (as YOLO's exporters do by default): the ONNX and torch.export files
give `boxes` (N, A, 4) and `scores` (N, A, K) at every anchor, for any batch and image size, and the
score threshold + torchvision's batched_nms on them give the task's own detections.

One tiny FCOS (resnet18, fpn_channels 64, head perturbed so scores differ) exported once, at 160 px:
sides of 129 px and more keep every pyramid map (stride 128 at the top) 2x2 or larger."""

from __future__ import annotations

import json

import onnxruntime
import pytest
import torch
from torchvision.ops import batched_nms

from vision_lightning import DetectionModule, export_task
from vision_lightning.export import ATOL, RTOL
from vision_lightning.utils.errors import InputError

CLASSES = ["person", "car"]
PREPROCESSING = {
    "image_size": 160,
    "mean": [0.5] * 3,
    "std": [0.25] * 3,
    "resize": "letterbox",
    "channels": 3,
}


def detection_task(detector: str = "fcos", noise: float = 0.05) -> DetectionModule:
    torch.manual_seed(0)
    task = DetectionModule(
        detector=detector, num_classes=2, class_names=CLASSES, fpn_channels=64,
        inference={"score_threshold": 0.1, "nms_iou": 0.5, "max_detections": 20},
    )  # fmt: skip
    with torch.no_grad():  # untrained heads give one score everywhere: spread them
        for parameter in task.head.parameters():
            parameter.add_(torch.randn_like(parameter) * noise)
    task.preprocessing = dict(PREPROCESSING, class_names=CLASSES)
    return task.eval()


def postprocess(boxes: torch.Tensor, scores: torch.Tensor, task: DetectionModule) -> list[dict]:
    """The recipe of export_info: per image, (box, class) pairs above the threshold, per-class NMS,
    the first max_detections."""
    options = task.export_info
    results = []
    for image_boxes, image_scores in zip(torch.as_tensor(boxes), torch.as_tensor(scores)):
        anchor, label = torch.nonzero(image_scores > options["score_threshold"], as_tuple=True)
        kept_boxes, kept_scores = image_boxes[anchor], image_scores[anchor, label]
        keep = batched_nms(kept_boxes, kept_scores, label, options["nms_iou"])[: options["max_detections"]]
        results.append({"boxes": kept_boxes[keep], "scores": kept_scores[keep], "labels": label[keep]})
    return results


def assert_same_detections(got: list[dict], want: list[dict]) -> None:
    assert sum(len(theirs["scores"]) for theirs in want) > 0
    for mine, theirs in zip(got, want, strict=True):
        # detections by falling score: compare in a canonical order (scores are distinct)
        a, b = mine["scores"].argsort(descending=True), theirs["scores"].argsort(descending=True)
        torch.testing.assert_close(mine["scores"][a], theirs["scores"][b], atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(mine["boxes"][a], theirs["boxes"][b], atol=1e-3, rtol=RTOL)
        assert torch.equal(mine["labels"][a], theirs["labels"][b])


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    task = detection_task()
    paths = export_task(task, tmp_path_factory.mktemp("fcos"), check=False)  # the tests compare
    return task, paths


def test_the_files_are_checked_dynamic_and_say_nms_is_not_included(exported):
    task, paths = exported
    document = json.loads(paths["preprocessing"].read_text())
    assert (
        document["input"]["batch"] == document["input"]["height"] == document["input"]["width"] == "dynamic"
    )
    assert document["input"]["min_size"] == {"height": 129, "width": 129}
    info = json.dumps(document)
    assert '"nms_included": false' in info and "batched_nms" in info


def test_onnx_and_torch_export_match_pytorch_and_give_the_tasks_detections(exported):
    task, paths = exported
    images = torch.randn(3, 3, 141, 173, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        boxes, scores = task.export_network()(images)
        detections = task.detect(images)
    anchors = 18 * 22 + 9 * 11 + 5 * 6 + 3 * 3 + 2 * 2  # FCOS: one location per cell of P3-P7
    assert boxes.shape == (3, anchors, 4) and scores.shape == (3, anchors, 2)
    session = onnxruntime.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    onnx_boxes, onnx_scores = session.run(None, {"image": images.numpy()})
    program = torch.export.load(paths["torch_export"]).module()
    with torch.no_grad():
        pt2_boxes, pt2_scores = program(images)
    for got_boxes, got_scores in ((onnx_boxes, onnx_scores), (pt2_boxes, pt2_scores)):
        torch.testing.assert_close(torch.as_tensor(got_boxes), boxes, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(torch.as_tensor(got_scores), scores, atol=ATOL, rtol=RTOL)
        assert_same_detections(postprocess(got_boxes, got_scores, task), detections)


def test_retinanet_dense_outputs_give_the_tasks_detections():
    task = detection_task("retinanet", noise=0.03)  # no norm layers: scores about 0.003-0.017
    task.set_inference_options({"score_threshold": 0.013, "nms_iou": 0.5, "max_detections": 20})
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        boxes, scores = task.export_network()(images)
        detections = task.detect(images)
    assert boxes.shape[:2] == scores.shape[:2] and boxes.shape[-1] == 4 and scores.shape[-1] == 2
    assert_same_detections(postprocess(boxes, scores, task), detections)


@pytest.mark.parametrize("detector", ["faster_rcnn"])
def test_a_two_stage_detector_refuses_in_one_sentence(detector):
    task = DetectionModule(detector=detector, num_classes=2, fpn_channels=64)
    with pytest.raises(InputError, match="two-stage"):
        task.export_network()
