"""DetectionModule: object detection with torchvision's FCOS, RetinaNet, Faster R-CNN or SSDlite on
a backbone of the project's factory (seed 002's detector, without AGPL code).

Batches follow the detection contract (README): `image` (N, 3, S, S) resized and normalised by the
data module, `boxes` / `labels` lists in input pixels and class ids 0..K-1, `size` (original H, W)
and `scale` rows (sx, sy, pad_x, pad_y) that map input pixels back to the original image.

The module holds the detector's parts as `backbone` (the pretrainable body, which freezing,
parameter groups and feature extraction use) and `head` (FPN and detection heads): a checkpoint's
`backbone.` weights load into a classifier's backbone of the same name and the other way round.
torchvision's detector object is kept beside them (not a second copy: it is made of those parts).

torchvision detectors give losses only in training mode, so validation has no `val/loss`: the
monitored metric is `val/map_50` (higher is better: ModelCheckpoint `mode: max`, ReduceLROnPlateau
`mode: max`). mAP is computed on boxes mapped back to original pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from vision_lightning.models.dense_detector import DenseDetector
from vision_lightning.models.detection import (
    DetectorName,
    DetectorOptions,
    create_detector,
    detector_options,
    head_parts,
)
from vision_lightning.models.factory import backbone_data_config
from vision_lightning.outputs.boxes import BoxSink
from vision_lightning.tasks.base import BaseTask
from vision_lightning.utils.boxes import to_original
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.letterbox import predict_batch
from vision_lightning.utils.loggers import log_image
from vision_lightning.utils.transforms import IMAGENET_MEAN, IMAGENET_STD
from vision_lightning.utils.visualize import GREEN, RED, captioned_grid, draw_boxes, to_uint8_images

MAP_KEYS = ("map", "map_50", "map_75", "mar_100")
#: detectors whose dense outputs export (`DenseDetector`), and why the others do not
DENSE_EXPORT = ("fcos", "retinanet")
DENSE_EXPORT_LIMITS = {
    "faster_rcnn": "Faster R-CNN is two-stage, and its proposals need non-maximum suppression inside the "
    "network, which torch.export cannot trace with dynamic sizes",
    "ssdlite": "exporting SSDlite's dense outputs is not implemented",
}


class DetectionModule(BaseTask):
    """A torchvision detector + mAP.

    Args:
        detector: `fcos` (default; one-stage, anchor-free), `retinanet`, `faster_rcnn` or `ssdlite`
            (on mobilenet_v3_large only).
        backbone: a factory name (`resnet18`, `resnet50`, `mobilenet_v3_large`, `timm:convnext_atto`,
            `timm:efficientnet_b0`, ...) made into a feature pyramid.
        num_classes / class_names: linked from the data module by the CLI (classes 0..K-1, no
            background class: detectors that need one add it inside).
        pretrained: `true` downloads the backbone's ImageNet weights; `coco` starts from
            torchvision's COCO-trained detector (backbone resnet50; ssdlite: mobilenet_v3_large) with
            a new classification layer for the data's classes.
        weights: a local file for the backbone (a classifier's weights, or a checkpoint of this
            project: its `backbone.` part).
        inference: `{score_threshold, nms_iou, max_detections}` (`DetectorOptions`): the detections
            kept in validation, test and predict (a low threshold, 0.05, for mAP).
        fpn_channels: width of the feature pyramid and heads (default 256, torchvision's; 64 or 128
            train several times faster on a CPU; a multiple of 32 from 64 up).
        log_images: validation images shown in TensorBoard each epoch (true and predicted boxes).
        draw_score_threshold: predicted boxes drawn in TensorBoard and in `save_images` pictures
            have at least this score.
        save_images: `predict` also writes each image with its boxes drawn (`images/<name>.png`).
        optimizer / lr_scheduler: injected factories; the task builds the parameter groups.
        freeze_backbone: True freezes the whole body, an integer its first N children.
    """

    monitor = "val/map_50"
    monitor_mode = "max"

    def __init__(
        self,
        detector: DetectorName = "fcos",
        backbone: str = "resnet18",
        num_classes: int = 1,
        class_names: list[str] | None = None,
        pretrained: bool | Literal["coco"] = False,
        weights: str | None = None,
        inference: DetectorOptions | dict | None = None,
        fpn_channels: int | None = None,
        log_images: int = 4,
        draw_score_threshold: float = 0.3,
        save_images: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        freeze_backbone: bool | int = False,
        **kwargs: Any,
    ) -> None:
        if class_names is not None and len(class_names) != num_classes:
            raise InputError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
        if not 0.0 <= draw_score_threshold <= 1.0:
            raise InputError(f"draw_score_threshold is a score between 0 and 1, got {draw_score_threshold}")
        super().__init__(optimizer, lr_scheduler, freeze_backbone, **kwargs)
        self.inference_options = detector_options(inference)
        self.save_hyperparameters()

    @property
    def class_names(self) -> list[str]:
        names = self.hparams.class_names
        return list(names) if names else [str(i) for i in range(self.hparams.num_classes)]

    # ---------------------------------------------------------------- configure
    def configure_models(self) -> None:
        hp = self.hparams
        detector = create_detector(
            hp.detector, hp.backbone, hp.num_classes, hp.pretrained, hp.weights,
            self.inference_options, hp.fpn_channels,
        )  # fmt: skip
        self.__dict__["detector"] = detector  # outside the module tree: its parts are registered below
        self.backbone = detector.body
        self.head = nn.ModuleDict(head_parts(detector))

    def networks(self) -> list[nn.Module]:
        """`compile` / `channels_last` apply to the body (the heads take lists of maps)."""
        return [self.backbone]

    def configure_metrics(self) -> None:
        from torchmetrics.detection import MeanAveragePrecision

        for stage in ("val", "test"):
            metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True)
            setattr(self, f"{stage}_metrics", metric)
        self._samples: dict[str, Any] = {}

    @property
    def data_config(self) -> dict[str, Any] | None:
        """A timm backbone's pretrained mean / std (torchvision's: ImageNet's, the data's default)."""
        try:
            return backbone_data_config(self.hparams.backbone)
        except InputError:
            return None

    def chart_layout(self) -> dict[str, list[str]]:
        return {"loss": [r"train/loss_epoch"], "map": [r"val/map$", r"val/map_50$", r"val/map_75$"]}

    def set_inference_options(self, options: DetectorOptions | dict) -> None:
        """Change score threshold, NMS IoU or detections per image of a trained (loaded) task."""
        self.inference_options = detector_options(options)
        self.detector.set_options(self.inference_options)

    # ---------------------------------------------------------------- forward
    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None):
        """Training (with targets): the detector's loss dict. Otherwise one dict per image with
        `boxes` (k, 4) xyxy in input pixels, `scores` and `labels` (0..K-1)."""
        self.detector.set_mode(self.training and targets is not None)
        return self.detector(images, targets)

    def detect(self, images: Tensor) -> list[dict[str, Tensor]]:
        """Detections in input pixels (the detector in inference mode, whatever the task's mode)."""
        self.detector.set_mode(False)
        # In training mode (validation inside fit runs in eval) a frozen or BatchNorm-trained
        # body would update statistics: run the parts in eval for detection.
        was_training = self.training
        if was_training:
            super().train(False)
        try:
            return self.detector(images)
        finally:
            if was_training:
                self.train(True)

    #: dense outputs, before NMS (`DenseDetector`)
    export_outputs = ("boxes", "scores")

    def export_network(self) -> nn.Module:
        """The one-stage detector without its postprocessing, as YOLO exports by default:
        normalised images (N, 3, H, W) -> `boxes` (N, A, 4) xyxy in input pixels at every anchor
        or location, `scores` (N, A, K) per class (`DenseDetector`); batch and image size dynamic.
        Threshold and NMS (`export_info`) are left to the application: the number of boxes they keep
        depends on the data, which torch.export cannot follow."""
        name = self.hparams.detector
        if name not in DENSE_EXPORT:
            raise InputError(
                f"detector {name} cannot be exported: {DENSE_EXPORT_LIMITS[name]}; "
                f"export a {' or '.join(DENSE_EXPORT)} detector instead"
            )
        return DenseDetector(self.detector.net).eval()

    @property
    def export_info(self) -> dict[str, Any]:
        """What preprocessing.json says about the dense outputs and the steps left to the application."""
        options = self.inference_options
        score = (
            "sqrt(sigmoid(class logit) * sigmoid(centerness)) (FCOS)"
            if self.hparams.detector == "fcos"
            else "sigmoid(class logit)"
        )
        return {
            "outputs": {
                "boxes": "(N, A, 4) xyxy in input pixels (the letterboxed image_size input), one box per "
                "anchor or location of every pyramid level, clipped to the input; to the original image: "
                "(x - pad_x) / sx, (y - pad_y) / sy with the letterbox's scale and padding "
                "(vision_lightning.utils.boxes.to_original)",
                "scores": f"(N, A, K) per class, in the order of class_names: {score}",
            },
            "nms_included": False,
            "score_threshold": options.score_threshold,
            "nms_iou": options.nms_iou,
            "max_detections": options.max_detections,
            "postprocessing": (
                "per image: keep (box, class) pairs with score > score_threshold, then "
                "torchvision.ops.batched_nms(boxes, scores, classes, nms_iou) and the first max_detections: "
                "the detections predict gives (torchvision also keeps only the 1000 best of each pyramid "
                "level before NMS, which matters only when more pass the threshold on one level)"
            ),
        }

    # ---------------------------------------------------------------- batches
    def _targets(self, batch: dict[str, Any]) -> list[dict[str, Tensor]]:
        """The batch's boxes and labels as torchvision's targets, checked: class ids in range and
        boxes with positive width and height (torchvision stops on others with an assertion)."""
        if "boxes" not in batch or "labels" not in batch:
            raise InputError("a detection batch needs `boxes` and `labels` lists (see the batch contract)")
        targets, k = [], self.hparams.num_classes
        paths = batch.get("path") or [f"image {i}" for i in range(len(batch["boxes"]))]
        for boxes, labels, path in zip(batch["boxes"], batch["labels"], paths):
            boxes, labels = boxes.float().reshape(-1, 4), labels.long().reshape(-1)
            if len(boxes) != len(labels):
                raise InputError(f"{path}: {len(boxes)} boxes but {len(labels)} labels")
            bad = labels[(labels < 0) | (labels >= k)]
            if len(bad):
                raise InputError(f"{path}: class ids {bad.tolist()[:5]} out of range 0..{k - 1}")
            flat = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            if flat.any():
                raise InputError(
                    f"{path}: boxes {boxes[flat][:3].tolist()} have no width or height (x2 <= x1 or y2 <= y1)"
                )
            targets.append({"boxes": boxes, "labels": labels})
        return targets

    def _original(self, batch: dict[str, Any], index: int, boxes: Tensor) -> Tensor:
        """Boxes of image `index` in input pixels -> original pixels (kept as they are without `scale`)."""
        if "scale" not in batch or "size" not in batch:
            return boxes.float()
        return to_original(boxes, batch["scale"][index], batch["size"][index])

    # ---------------------------------------------------------------- steps
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        batch = self.unpack(batch)
        losses = self(batch["image"], self._targets(batch))
        loss = sum(losses.values())
        parts = {name.removeprefix("loss_"): value.detach() for name, value in losses.items()}
        self.log_loss("train", loss, len(batch["image"]), parts)
        return loss

    def _evaluate(self, batch: Any, stage: str) -> tuple[dict[str, Any], list[dict[str, Tensor]]]:
        batch = self.unpack(batch)
        targets = self._targets(batch)
        detections = self.detect(batch["image"])
        preds, truths = [], []
        for i, (found, target) in enumerate(zip(detections, targets)):
            preds.append({
                "boxes": self._original(batch, i, found["boxes"]), "scores": found["scores"].float(),
                "labels": found["labels"],
            })  # fmt: skip
            truths.append({"boxes": self._original(batch, i, target["boxes"]), "labels": target["labels"]})
        getattr(self, f"{stage}_metrics").update(preds, truths)
        return batch, detections

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        batch, detections = self._evaluate(batch, "val")
        if batch_idx == 0 and self.hparams.log_images and not self.trainer.sanity_checking:
            n = self.hparams.log_images
            self._samples = {
                "image": batch["image"][:n].detach().cpu(),
                "boxes": [b.cpu() for b in batch["boxes"][:n]],
                "labels": [c.cpu() for c in batch["labels"][:n]],
                "detections": [{k: v.detach().cpu() for k, v in d.items()} for d in detections[:n]],
            }

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_map("val")
        samples, self._samples = self._samples, {}
        if samples and not self.trainer.sanity_checking:
            log_image(self.trainer, "val/boxes", self._boxes_grid(samples))

    def on_test_epoch_end(self) -> None:
        self._log_map("test")

    def _log_map(self, stage: str) -> None:
        """`<stage>/map` (0.5:0.95), `map_50`, `map_75`, `mar_100` and `<stage>/map_class/<name>`
        (classes with true boxes in the data; others have no AP) from the epoch's detections."""
        metric = getattr(self, f"{stage}_metrics")
        if not metric.update_count:
            return
        values = metric.compute()
        self.log_dict(
            {f"{stage}/{key}": values[key].float() for key in MAP_KEYS}, prog_bar=True, sync_dist=True
        )
        classes = values["classes"].reshape(-1).tolist()
        per_class = values["map_per_class"].reshape(-1)
        if len(per_class) == len(classes):
            names = self.class_names
            logged = {
                f"{stage}/map_class/{names[c] if 0 <= c < len(names) else c}": per_class[i].float()
                for i, c in enumerate(classes)
                if per_class[i] >= 0
            }
            if logged:
                self.log_dict(logged, sync_dist=True)
        metric.reset()

    def _boxes_grid(self, samples: dict[str, Any]) -> np.ndarray:
        datamodule = getattr(self.trainer, "datamodule", None)
        mean = getattr(datamodule, "mean", None) or self.preprocessing.get("mean")
        std = getattr(datamodule, "std", None) or self.preprocessing.get("std")
        images = to_uint8_images(samples["image"], mean, std)
        # small inputs drawn larger, so that captions stay readable beside the boxes
        zoom = max(1, -(-192 // max(images.shape[1:3])))
        images = images.repeat(zoom, axis=1).repeat(zoom, axis=2)
        names, threshold = self.class_names, self.hparams.draw_score_threshold
        tiles, captions = [], []
        for i, image in enumerate(images):
            truth = draw_boxes(
                image, samples["boxes"][i] * zoom, [names[int(c)] for c in samples["labels"][i]], GREEN
            )
            found = samples["detections"][i]
            keep = found["scores"] >= threshold
            labels = [
                f"{names[int(c)]} {float(s):.2f}"
                for c, s in zip(found["labels"][keep], found["scores"][keep])
            ]
            tiles += [truth, draw_boxes(image, found["boxes"][keep] * zoom, labels, RED)]
            captions += [f"image {i}: true boxes", f"predicted (score >= {threshold:g})"]
        return captioned_grid(np.stack(tiles), captions, columns=2)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self._trainer is not None:
            self._check_checkpoint_monitor(self.trainer.checkpoint_callbacks)

    def _check_checkpoint_monitor(self, callbacks: list[Any]) -> None:
        """A ModelCheckpoint following `val/loss` (the CLI's default), which detection does not log,
        or keeping the lowest mAP, named in one sentence instead of failing after the first epoch."""
        for callback in callbacks:
            monitor, mode = getattr(callback, "monitor", None), getattr(callback, "mode", "min")
            if monitor == "val/loss" or (
                monitor and monitor.startswith(("val/map", "val/mar")) and mode != "max"
            ):
                raise InputError(
                    f"checkpoint monitors {monitor} (mode {mode}), but DetectionModule logs no val/loss "
                    "(torchvision detectors give losses only in training) and mAP grows as it improves: set "
                    f"checkpoint monitor: {self.monitor}, mode: max (and a filename without val/loss)"
                )

    # ---------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        config = super().configure_optimizers()
        scheduler = config.get("lr_scheduler", {}).get("scheduler") if isinstance(config, dict) else None
        if isinstance(scheduler, ReduceLROnPlateau) and scheduler.mode != "max":
            raise InputError(
                f"ReduceLROnPlateau follows {self.monitor}, which grows as the detector improves: "
                "give it mode: max"
            )
        return config

    # ---------------------------------------------------------------- predict
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """`{"path", "size", "boxes", "scores", "labels"}` per image, boxes xyxy in original pixels
        (`"images"` too, at the original size, when `save_images` is set)."""
        batch = self.unpack(batch)
        images = batch["image"]
        detections = self.detect(images)
        count = len(images)
        sizes = batch["size"].tolist() if "size" in batch else [list(images.shape[-2:])] * count
        output: dict[str, Any] = {
            "path": self.batch_names(batch, count, batch_idx),
            "size": [tuple(int(v) for v in size) for size in sizes],
            "boxes": [self._original(batch, i, d["boxes"]).cpu() for i, d in enumerate(detections)],
            "scores": [d["scores"].float().cpu() for d in detections],
            "labels": [d["labels"].cpu() for d in detections],
        }
        if self.hparams.save_images:
            output["images"] = self._original_images(batch, sizes)
        return output

    def _original_images(self, batch: dict[str, Any], sizes: list[list[int]]) -> list[np.ndarray]:
        """The input images with the letterbox padding cut off, at their original size (uint8 HWC)."""
        mean, std = self.preprocessing.get("mean"), self.preprocessing.get("std")
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        mean = mean or getattr(datamodule, "mean", None)
        std = std or getattr(datamodule, "std", None)
        result = []
        for i, (height, width) in enumerate(sizes):
            image = batch["image"][i : i + 1].float()
            if "scale" in batch:
                sx, sy, pad_x, pad_y = batch["scale"][i].tolist()
                top, left = round(pad_y), round(pad_x)
                image = image[
                    ..., top : top + max(1, round(height * sy)), left : left + max(1, round(width * sx))
                ]
            image = F.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)
            result.append(to_uint8_images(image, mean, std)[0])
        return result

    def predict_batches(self, images: list[Any], paths: list[str]) -> list[dict[str, Any]]:
        """One batch of the images brought to `image_size` as evaluation did (letterbox or stretch)."""
        prep = self.preprocessing
        if "image_size" not in prep:
            raise InputError(
                "this DetectionModule has no preprocessing (image_size, mean, std): load it from a "
                "checkpoint trained with a data module, or set task.preprocessing"
            )
        mode = prep.get("resize", "letterbox")
        if mode not in ("letterbox", "stretch"):
            raise InputError(f"preprocessing resize must be letterbox or stretch, got {mode!r}")
        prep = {
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            **{k: v for k, v in prep.items() if v is not None},
        }
        return [predict_batch(images, paths, prep)]

    def prediction_results(self, outputs: dict[str, Any]) -> list[dict[str, Any]]:
        """`{"path", "boxes": (k, 4) xyxy in original pixels, "scores", "labels", "class_names"}` per image."""
        names = self.class_names
        return [
            {
                "path": path,
                "boxes": boxes.numpy(),
                "scores": scores.numpy(),
                "labels": labels.numpy(),
                "class_names": [names[int(c)] for c in labels],
            }
            for path, boxes, scores, labels in zip(
                outputs["path"], outputs["boxes"], outputs["scores"], outputs["labels"]
            )
        ]

    def prediction_sink(self, output_dir: Path, suffix: str = "") -> BoxSink:
        threshold = self.hparams.draw_score_threshold if self.hparams.save_images else None
        return BoxSink(output_dir, suffix, self.class_names, threshold)
