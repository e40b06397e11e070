"""DetectionModule: the four detectors, losses and mAP logged, TensorBoard boxes, freezing, multi-scale
training, prediction in original pixels, checkpoints, feature extraction from a detector's body."""

from __future__ import annotations

import urllib.error
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from tests.conftest import cpu_trainer, optimizer
from tests.detection_batches import CLASS_NAMES, RectangleData, Rectangles
from vision_lightning.callbacks import BackboneFreezeUnfreeze, ProgressiveResizing
from vision_lightning.models.factory import create_backbone
from vision_lightning.tasks.detection import DetectionModule
from vision_lightning.tasks.features import FeatureExtractModule
from vision_lightning.tasks.loading import load_task
from vision_lightning.utils.errors import DownloadError, InputError


def small(**kwargs) -> DetectionModule:
    arguments = {
        "num_classes": 2, "class_names": CLASS_NAMES, "backbone": "resnet18", "log_images": 2, "fpn_channels": 64,
    }  # fmt: skip
    return DetectionModule(**{**arguments, **kwargs})


def contract_batch(size: int = 64, count: int = 2) -> dict:
    from tests.detection_batches import collate

    return collate([Rectangles(count, size)[i] for i in range(count)])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> SimpleNamespace:
    """FCOS on resnet18 trained one epoch (2 steps) on 64 px rectangles, with TensorBoard and a checkpoint."""
    folder = tmp_path_factory.mktemp("detection")
    pl.seed_everything(0)
    task = small(
        draw_score_threshold=0.0, optimizer=optimizer("AdamW", lr=1e-3), inference={"max_detections": 50}
    )
    trainer = cpu_trainer(
        logger=TensorBoardLogger(folder, name="", version=""),
        enable_checkpointing=True,
        callbacks=[ModelCheckpoint(folder / "checkpoints", monitor="val/map_50", mode="max", save_last=True)],
        limit_train_batches=2,
    )
    trainer.fit(task, datamodule=RectangleData())
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return SimpleNamespace(
        task=task, folder=folder, metrics=metrics, checkpoint=folder / "checkpoints/last.ckpt"
    )


def test_fit_logs_each_loss_and_map_per_epoch(run):
    for key in (
        "train/loss_epoch", "train/loss_classification", "train/loss_bbox_regression", "train/loss_bbox_ctrness",
        "val/map", "val/map_50", "val/map_75", "val/map_class/red", "val/map_class/blue",
    ):  # fmt: skip
        assert key in run.metrics, key
    assert 0.0 <= run.metrics["val/map"] <= run.metrics["val/map_50"] <= 1.0
    assert DetectionModule.monitor == "val/map_50"


def test_tensorboard_shows_true_and_predicted_boxes(run):
    files = sorted(Path(run.folder).rglob("events.out.tfevents.*"))
    events = EventAccumulator(str(files[0].parent), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    images = events.Images("val/boxes")
    assert len(images) == 1  # once per epoch, not in the sanity check
    assert images[0].width >= 2 * 64 and images[0].height >= 2 * 64  # 2 samples x (true, predicted)
    assert {"val/map_50", "val/map_class/red", "train/loss_classification"} <= set(events.Tags()["scalars"])


@pytest.mark.parametrize(
    "detector, backbone, parts",
    [
        ("retinanet", "resnet18", {"classification", "bbox_regression"}),
        (
            "faster_rcnn",
            "resnet18",
            {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"},
        ),
        ("ssdlite", "mobilenet_v3_large", {"classification", "bbox_regression"}),
        ("fcos", "timm:mobilenetv3_small_050", {"classification", "bbox_regression", "bbox_ctrness"}),
    ],
)
def test_each_detector_trains_a_step_and_detects_data_class_ids(detector, backbone, parts):
    task = small(detector=detector, backbone=backbone, fpn_channels=None if detector == "ssdlite" else 64)
    batch = contract_batch()
    task.train()
    seen = []  # what torchvision's detector gets: class 0 is the background for Faster R-CNN and SSDlite
    net_forward = task.detector.net.forward
    task.detector.net.forward = lambda images, targets=None: (
        seen.append(targets) or net_forward(images, targets)
    )
    losses = task(batch["image"], task._targets(batch))
    shift = 1 if detector in ("faster_rcnn", "ssdlite") else 0
    assert [t["labels"].tolist() for t in seen[0]] == [
        (labels + shift).tolist() for labels in batch["labels"]
    ]
    assert set(losses) == parts
    sum(losses.values()).backward()
    assert any(p.grad is not None for p in task.backbone.parameters())
    assert any(p.grad is not None for p in task.head.parameters())
    task.eval()
    found = task.detect(torch.randn(2, 3, 96, 96))  # another size, a multiple of 32
    assert len(found) == 2
    labels = torch.cat([f["labels"] for f in found])
    assert ((labels >= 0) & (labels < 2)).all()  # background ids never come out
    assert all(f["boxes"].shape[1] == 4 for f in found)


def test_checkpoint_keys_are_backbone_and_head(run):
    keys = set(torch.load(run.checkpoint, weights_only=True)["state_dict"])
    assert "backbone.conv1.weight" in keys and "backbone.layer4.1.bn2.running_var" in keys
    assert any(k.startswith("head.fpn.") for k in keys) and any(k.startswith("head.head.") for k in keys)
    assert not any(k.startswith(("backbone.fc", "detector.")) for k in keys)


def test_bad_targets_and_arguments_are_named():
    task = small()
    batch = contract_batch()
    batch["labels"][0] = torch.full_like(batch["labels"][0], 5)
    with pytest.raises(InputError, match=r"rect_000.png: class ids \[5"):
        task.training_step(batch, 0)
    batch = contract_batch()
    batch["boxes"][1][0, 2] = batch["boxes"][1][0, 0]
    with pytest.raises(InputError, match="rect_001.png: boxes .* no width or height"):
        task.training_step(batch, 0)
    with pytest.raises(InputError, match="ssdlite is torchvision's SSDlite on mobilenet_v3_large only"):
        small(detector="ssdlite", fpn_channels=None)
    with pytest.raises(InputError, match="fpn_channels: ssdlite has no feature pyramid"):
        small(detector="ssdlite", backbone="mobilenet_v3_large")
    with pytest.raises(InputError, match="detector must be one of fcos, retinanet, faster_rcnn, ssdlite"):
        small(detector="yolo")
    with pytest.raises(
        InputError, match="pretrained: coco is torchvision's fcos_resnet50_fpn, built on resnet50"
    ):
        small(pretrained="coco", fpn_channels=None)
    with pytest.raises(InputError, match="pretrained must be true .*, false or coco"):
        small(pretrained="imagenet")
    with pytest.raises(InputError, match="fpn_channels must be a multiple of 32 from 64 up"):
        small(fpn_channels=32)
    with pytest.raises(InputError, match="nms_iou"):
        small(inference={"nms_iou": 0})
    with pytest.raises(InputError, match="classic classifier without a feature pyramid"):
        small(backbone="lenet5")


def test_plateau_schedule_must_maximise_map():
    import functools

    task = small(lr_scheduler=functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="min"))
    with pytest.raises(InputError, match="val/map_50, which grows .* mode: max"):
        task.configure_optimizers()


def test_checkpoints_must_follow_map_upwards():
    task = small()
    for callback in (ModelCheckpoint(monitor="val/loss"), ModelCheckpoint(monitor="val/map_50", mode="min")):
        with pytest.raises(InputError, match="set checkpoint monitor: val/map_50, mode: max"):
            task._check_checkpoint_monitor([callback])
    task._check_checkpoint_monitor([ModelCheckpoint(monitor="val/map_50", mode="max"), ModelCheckpoint()])


def test_coco_and_imagenet_downloads_fail_offline_in_one_sentence(monkeypatch):
    from torchvision.models._api import WeightsEnum

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(
        DownloadError,
        match="COCO detector 'fcos_resnet50_fpn'.*without internet access set pretrained: false",
    ):
        small(backbone="resnet50", pretrained="coco", fpn_channels=None)
    with pytest.raises(DownloadError, match="mobilenet_v3_large.*without internet access"):
        small(detector="ssdlite", backbone="mobilenet_v3_large", pretrained=True, fpn_channels=None)


def test_local_backbone_weights_load_through_the_one_loader(tmp_path):
    classifier, _ = create_backbone("resnet18")
    path = tmp_path / "classifier.pth"
    torch.save({f"backbone.{k}": v for k, v in classifier.state_dict().items()}, path)
    task = small(weights=str(path))
    assert torch.equal(task.backbone.layer3[0].conv1.weight, classifier.layer3[0].conv1.weight)


def test_frozen_backbone_stays_fixed_then_trains_after_unfreezing():
    pl.seed_everything(0)
    task = small(optimizer=optimizer("SGD", lr=0.05))
    snapshots = []

    class Snapshot(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            snapshots.append((
                {k: v.clone() for k, v in pl_module.backbone.state_dict().items()},
                {k: v.clone() for k, v in pl_module.head.state_dict().items()},
            ))  # fmt: skip

    start = ({k: v.clone() for k, v in task.backbone.state_dict().items()},
             {k: v.clone() for k, v in task.head.state_dict().items()})  # fmt: skip
    trainer = cpu_trainer(
        max_epochs=2, limit_train_batches=1, limit_val_batches=0,
        callbacks=[BackboneFreezeUnfreeze(unfreeze_at_epoch=1, backbone_lr_factor=1.0), Snapshot()],
    )  # fmt: skip
    trainer.fit(task, datamodule=RectangleData(batch_size=2))
    (frozen_body, head_0), (trained_body, _) = snapshots
    assert all(torch.equal(start[0][k], frozen_body[k]) for k in start[0])  # weights and BN statistics
    assert not all(torch.equal(start[1][k], head_0[k]) for k in start[1])
    assert not torch.equal(frozen_body["layer1.0.conv1.weight"], trained_body["layer1.0.conv1.weight"])


def test_freeze_backbone_argument_freezes_the_body():
    task = small(freeze_backbone=True)
    assert task.backbone_frozen
    assert all(p.requires_grad for p in task.head.parameters())


def test_progressive_resizing_trains_the_detector_at_each_size():
    sizes = []

    class Sizes(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            sizes.append(batch["image"].shape[-1])

    stages = [{"epoch": 0, "image_size": 64}, {"epoch": 1, "image_size": 96}]
    trainer = cpu_trainer(
        max_epochs=2, limit_train_batches=1, limit_val_batches=0,
        callbacks=[ProgressiveResizing(stages), Sizes()],
    )  # fmt: skip
    data = RectangleData(batch_size=2, val=2)
    trainer.fit(small(), datamodule=data)
    assert sizes == [64, 96] and data.image_size == 96


def test_predict_images_from_the_checkpoint_alone(run, tmp_path):
    task = load_task(run.checkpoint)
    assert task.inference_options.max_detections == 50 and task.detector.net.detections_per_img == 50
    assert task.preprocessing["image_size"] == 64 and task.preprocessing["resize"] == "letterbox"
    paths = Rectangles(2, 64).save(tmp_path / "images")
    results = task.predict_images(tmp_path / "images")
    assert [Path(r["path"]).name for r in results] == [p.name for p in paths]
    for result in results:
        boxes = result["boxes"]
        assert boxes.shape[1] == 4 and len(result["scores"]) == len(boxes) == len(result["class_names"])
        assert (boxes[:, [0, 2]] <= 80).all() and (boxes[:, [1, 3]] <= 60).all()  # original 80 x 60 pixels
        assert set(result["class_names"]) <= set(CLASS_NAMES)


def test_feature_extraction_from_a_detection_checkpoint(run):
    images = torch.randn(2, 3, 64, 64)
    by_checkpoint = FeatureExtractModule(checkpoint=str(run.checkpoint))
    by_weights = FeatureExtractModule(backbone="resnet18", weights=str(run.checkpoint))
    trained = run.task.backbone.state_dict()
    for module in (by_checkpoint, by_weights):
        assert torch.equal(
            module.backbone.state_dict()["layer2.0.conv1.weight"], trained["layer2.0.conv1.weight"]
        )
    assert by_checkpoint(images)["output"].shape == by_weights(images)["output"].shape == (2, 512)
    torch.testing.assert_close(by_checkpoint(images)["output"], by_weights(images)["output"])


# ---------------------------------------------------------------- mAP against a hand computation
def _iou(a: list[float], b: list[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def _hand_ap(predictions: list[tuple], truths: dict[int, list[list[float]]], threshold: float) -> float:
    """COCO's AP of one class by hand: detections by falling score, each matched greedily to the
    best unmatched true box of its image with IoU >= threshold; precision made non-increasing and
    read at the 101 recall points 0, 0.01, ..., 1 (0 past the largest recall reached)."""
    matched, hits = set(), []
    for image, _, box in sorted(predictions, key=lambda p: -p[1]):
        candidates = [
            (_iou(box, truth), (image, j))
            for j, truth in enumerate(truths[image])
            if (image, j) not in matched and _iou(box, truth) >= threshold
        ]
        if candidates:
            matched.add(max(candidates)[1])
        hits.append(bool(candidates))
    total = sum(len(boxes) for boxes in truths.values())
    recall, precision, tp = [], [], 0
    for rank, hit in enumerate(hits, start=1):
        tp += hit
        recall.append(tp / total)
        precision.append(tp / rank)
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    points = [r / 100 for r in range(101)]
    return sum(next((p for r, p in zip(recall, precision) if r >= point), 0.0) for point in points) / 101


def test_map_matches_a_hand_computation():
    # Image 0: one true box, found exactly (0.9) and again, half-covered (0.8: a duplicate, a false
    # positive at every threshold). Image 1: one true box found with IoU 0.68 (0.7): a true positive
    # at thresholds 0.50-0.65, a false positive from 0.70. By hand: AP@0.5 = (51 + 50 * 2/3) / 101
    # = 0.83498; AP@0.7+ = 51 / 101 = 0.50495; mAP@0.5:0.95 = (4 * 0.83498 + 6 * 0.50495) / 10.
    truths = {0: [[0.0, 0.0, 10.0, 10.0]], 1: [[0.0, 0.0, 20.0, 20.0]]}
    predictions = [
        (0, 0.9, [0.0, 0.0, 10.0, 10.0]),
        (0, 0.8, [0.0, 0.0, 10.0, 5.0]),
        (1, 0.7, [0.0, 0.0, 20.0, 13.6]),
    ]
    batch = {
        "image": torch.zeros(2, 3, 32, 32),
        "boxes": [torch.tensor(truths[0]), torch.tensor(truths[1])],
        "labels": [torch.tensor([0]), torch.tensor([0])],
        "path": ["a.png", "b.png"],
        "size": torch.tensor([[32, 32], [32, 32]]),
        "scale": torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 2),
    }
    task = small(log_images=0)

    def detect(images):
        return [
            {
                "boxes": torch.tensor([p[2] for p in predictions if p[0] == i]),
                "scores": torch.tensor([p[1] for p in predictions if p[0] == i]),
                "labels": torch.zeros(sum(p[0] == i for p in predictions), dtype=torch.int64),
            }
            for i in range(len(images))
        ]

    task.detect = detect
    logged = cpu_trainer().validate(task, DataLoader([batch], batch_size=None), verbose=False)[0]
    thresholds = [0.5 + 0.05 * i for i in range(10)]
    by_hand = [_hand_ap(predictions, truths, t) for t in thresholds]
    assert by_hand[0] == pytest.approx((51 + 50 * 2 / 3) / 101) and by_hand[-1] == pytest.approx(51 / 101)
    assert logged["val/map_50"] == pytest.approx(by_hand[0], abs=1e-4)
    assert logged["val/map"] == pytest.approx(sum(by_hand) / 10, abs=1e-4)
    assert logged["val/map_75"] == pytest.approx(by_hand[5], abs=1e-4)
    assert logged["val/map_class/red"] == pytest.approx(logged["val/map"], abs=1e-6)
    assert "val/map_class/blue" not in logged  # no true blue box: no AP
