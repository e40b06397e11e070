"""torchvision's detectors by name, on a backbone of the project's one factory.

- `fcos` (default): one-stage, anchor-free (FCOS); stands in for YOLOv8-style detectors without
  depending on AGPL code. Pyramid P3-P7.
- `retinanet`: one-stage with anchors and focal loss. Pyramid P3-P7.
- `faster_rcnn`: two-stage (RPN + RoI heads). Pyramid P2-P5 + a max-pool level.
- `ssdlite`: torchvision's SSDlite on MobileNetV3-Large only (its feature extractor is built for it).

The data module resizes and normalises: each detector's `transform` is `BatchOnly`, which neither
resizes nor normalises, so boxes stay in input pixels. Classes are 0..K-1 in the data; Faster R-CNN
and SSDlite keep class 0 for the background, which `DetectorNet` adds and removes, so outside it
labels are always the data's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from vision_lightning.models.factory import _download_error, create_feature_pyramid
from vision_lightning.models.narrow_conv import guard_narrow_convs
from vision_lightning.utils.errors import DownloadError, InputError
from vision_lightning.utils.hparams import from_plain
from vision_lightning.utils.weights import load_weights

DetectorName = Literal["fcos", "retinanet", "faster_rcnn", "ssdlite"]
DETECTORS = ("fcos", "retinanet", "faster_rcnn", "ssdlite")
#: detectors whose class 0 is the background
WITH_BACKGROUND = ("faster_rcnn", "ssdlite")
#: torchvision's COCO-trained detectors: (model name, the backbone it is built on)
COCO_MODELS = {
    "fcos": ("fcos_resnet50_fpn", "resnet50"),
    "retinanet": ("retinanet_resnet50_fpn_v2", "resnet50"),
    "faster_rcnn": ("fasterrcnn_resnet50_fpn_v2", "resnet50"),
    "ssdlite": ("ssdlite320_mobilenet_v3_large", "mobilenet_v3_large"),
}


@dataclass(frozen=True)
class DetectorOptions:
    """How detections are kept: scores at least `score_threshold`, non-maximum suppression at IoU
    `nms_iou` (per class), at most `max_detections` per image. mAP wants a low threshold (0.05);
    predictions meant to be looked at, a higher one."""

    score_threshold: float = 0.05
    nms_iou: float = 0.5
    max_detections: int = 100

    def __post_init__(self) -> None:
        if not 0.0 <= self.score_threshold < 1.0:
            raise InputError(f"detector score_threshold must be in [0, 1), got {self.score_threshold}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise InputError(f"detector nms_iou must be in (0, 1], got {self.nms_iou}")
        if not (isinstance(self.max_detections, int) and self.max_detections >= 1):
            raise InputError(f"detector max_detections must be a positive integer, got {self.max_detections}")


def detector_options(value: DetectorOptions | dict | None) -> DetectorOptions:
    """Options from a mapping (`{score_threshold: 0.3}`, or the `{class_path, init_args}` that saved
    hyperparameters hold), an instance, or None (the defaults)."""
    if value is None:
        return DetectorOptions()
    if isinstance(value, dict):
        unknown = set(value) - {"score_threshold", "nms_iou", "max_detections", "class_path", "init_args"}
        if unknown:
            raise InputError(
                f"detector options are score_threshold, nms_iou and max_detections, got {sorted(unknown)}"
            )
        value = from_plain(value, DetectorOptions, "detector options")
    if not isinstance(value, DetectorOptions):
        raise InputError(f"detector options must be a mapping, got {type(value).__name__}")
    return value


class BatchOnly(GeneralizedRCNNTransform):
    """torchvision's detection transform without its resizing and normalisation (the data module
    did both): images are batched (padded to a multiple of 32 when they differ) and boxes kept."""

    def __init__(self) -> None:
        super().__init__(min_size=1, max_size=1, image_mean=[0.0], image_std=[1.0], size_divisible=32)

    def forward(self, images, targets=None):
        if isinstance(images, Tensor):
            batch = images
        elif len({tuple(image.shape) for image in images}) == 1:
            batch = torch.stack(list(images))
        else:
            batch = self.batch_images(list(images), self.size_divisible)
        sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        return ImageList(batch, sizes), targets

    def postprocess(self, result, image_shapes, original_image_sizes):
        return result

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _new_logits(conv: nn.Conv2d, outputs: int) -> nn.Conv2d:
    """A classification conv with `outputs` channels, initialised as torchvision's (prior 0.01)."""
    new = nn.Conv2d(conv.in_channels, outputs, conv.kernel_size, conv.stride, conv.padding)
    nn.init.normal_(new.weight, std=0.01)
    nn.init.constant_(new.bias, -math.log((1 - 0.01) / 0.01))
    return new


def _coco_detector(detector: str, num_classes: int) -> nn.Module:
    """torchvision's COCO-trained detector with a new classification layer for `num_classes`."""
    model_name, _ = COCO_MODELS[detector]
    try:
        weights = torchvision.models.get_model_weights(model_name).DEFAULT
        # read the download with weights_only first: torchvision's own read is not
        weights.get_state_dict(progress=True, check_hash=True, weights_only=True)
        model = torchvision.models.get_model(model_name, weights=weights)
    except Exception as error:  # noqa: BLE001
        raise DownloadError(
            f"could not download torchvision's COCO detector {model_name!r} ({type(error).__name__}: {error}); "
            "without internet access set pretrained: false, or weights: a local backbone file"
        ) from None
    if detector in ("fcos", "retinanet"):
        head = model.head.classification_head
        anchors = head.num_anchors if hasattr(head, "num_anchors") else 1
        head.cls_logits = _new_logits(head.cls_logits, anchors * num_classes)
        head.num_classes = num_classes
    elif detector == "faster_rcnn":
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

        predictor = model.roi_heads.box_predictor
        model.roi_heads.box_predictor = FastRCNNPredictor(predictor.cls_score.in_features, num_classes + 1)
    else:
        from torchvision.models.detection.ssdlite import SSDLiteClassificationHead

        in_channels = [block[0][0].in_channels for block in model.head.classification_head.module_list]
        anchors = model.anchor_generator.num_anchors_per_location()
        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)  # as torchvision's SSDlite
        model.head.classification_head = SSDLiteClassificationHead(
            in_channels, anchors, num_classes + 1, norm
        )
    return model


def _ssdlite(backbone: str, num_classes: int, pretrained: bool) -> nn.Module:
    from torchvision.models import MobileNet_V3_Large_Weights
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    if backbone.removeprefix("torchvision:") != "mobilenet_v3_large":
        raise InputError(
            f"detector ssdlite is torchvision's SSDlite on mobilenet_v3_large only, got backbone {backbone!r}: "
            "set backbone: mobilenet_v3_large, or use fcos, retinanet or faster_rcnn for other backbones"
        )
    weights_backbone = None
    if pretrained:
        try:
            weights_backbone = MobileNet_V3_Large_Weights.IMAGENET1K_V1
            weights_backbone.get_state_dict(progress=True, check_hash=True, weights_only=True)
        except Exception as error:  # noqa: BLE001
            raise _download_error(backbone, error) from None
    return ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=weights_backbone, num_classes=num_classes + 1
    )


def _build(
    detector: str, backbone: str, num_classes: int, pretrained: bool, weights: str | None, fpn_channels: int
) -> nn.Module:
    from torchvision.models import detection as tvd

    if detector == "ssdlite":
        model = _ssdlite(backbone, num_classes, pretrained)
        if weights:
            load_weights(model.backbone.features, weights, strict=True, prefix="backbone.", ignore=("",))
        return model
    if detector == "faster_rcnn":
        pyramid = create_feature_pyramid(backbone, pretrained, weights, "pool", 4, fpn_channels)
        return tvd.FasterRCNN(pyramid, num_classes=num_classes + 1)
    pyramid = create_feature_pyramid(backbone, pretrained, weights, "p6p7", 8, fpn_channels)
    if detector == "fcos":
        anchors = tvd.anchor_utils.AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((1.0,),) * 5)
        return tvd.FCOS(pyramid, num_classes, anchor_generator=anchors)
    sizes = tuple((x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))) for x in (32, 64, 128, 256, 512))
    anchors = tvd.anchor_utils.AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    return tvd.RetinaNet(pyramid, num_classes, anchor_generator=anchors)


class DetectorNet(nn.Module):
    """A torchvision detector whose `transform` keeps the data module's sizes and normalisation and
    whose labels are the data's 0..K-1 (shifted inside for detectors with a background class).
    Its strided convolutions are `guard_narrow_convs`'s: bf16-mixed training on the CPU keeps
    finite gradients on the 1-pixel-wide top pyramid levels of small images.

    `forward(images, targets)`: in training the loss dict; otherwise one dict per image with
    `boxes` (k, 4) xyxy in input pixels, `scores` (k,) and `labels` (k,)."""

    def __init__(self, net: nn.Module, name: str, num_classes: int, options: DetectorOptions) -> None:
        super().__init__()
        net.transform = BatchOnly()
        self.net = guard_narrow_convs(net)
        self.name = name
        self.num_classes = num_classes
        self.shift = 1 if name in WITH_BACKGROUND else 0
        self.set_options(options)

    @property
    def body(self) -> nn.Module:
        """The backbone proper (ImageNet-pretrainable): what freezing and feature extraction use."""
        backbone = self.net.backbone
        return backbone.features if self.name == "ssdlite" else backbone.body

    def set_options(self, options: DetectorOptions) -> None:
        self.options = options
        target = self.net.roi_heads if self.name == "faster_rcnn" else self.net
        target.score_thresh = options.score_threshold
        target.nms_thresh = options.nms_iou
        target.detections_per_img = options.max_detections

    def set_mode(self, training: bool) -> None:
        """The training flag of the wrappers only (this module, the torchvision detector and its
        backbone wrapper), leaving the parts' own modes (a frozen backbone stays in eval)."""
        self.training = self.net.training = self.net.backbone.training = training

    def forward(self, images: Tensor, targets: list[dict[str, Tensor]] | None = None):
        if targets is not None and self.shift:
            targets = [{**t, "labels": t["labels"] + self.shift} for t in targets]
        output = self.net(images, targets)
        if self.training or not self.shift:
            return output
        return [{**o, "labels": o["labels"] - self.shift} for o in output]


def create_detector(
    name: DetectorName = "fcos",
    backbone: str = "resnet18",
    num_classes: int = 1,
    pretrained: bool | Literal["coco"] = False,
    weights: str | None = None,
    options: DetectorOptions | dict | None = None,
    fpn_channels: int | None = None,
) -> DetectorNet:
    """A detector for `num_classes` classes (ids 0..K-1).

    `pretrained: true` downloads the backbone's ImageNet weights; `pretrained: coco` starts from
    torchvision's whole COCO-trained detector (backbone resnet50, or mobilenet_v3_large for ssdlite)
    with a new classification layer for the data's classes. `weights` loads a local file into the
    backbone (a classifier's, or a checkpoint of this project: its `backbone.` part). `fpn_channels`
    (default 256, torchvision's) is the width of the feature pyramid and the heads: 64 or 128 make a
    detector several times cheaper on a CPU (a multiple of 32 from 64 up, for FCOS's GroupNorm)."""
    if name not in DETECTORS:
        raise InputError(f"detector must be one of {', '.join(DETECTORS)}, got {name!r}")
    if pretrained not in (True, False, "coco"):
        raise InputError(
            f"pretrained must be true (ImageNet backbone), false or coco (COCO detector), got {pretrained!r}"
        )
    coco = pretrained == "coco"
    if fpn_channels is not None:
        if name == "ssdlite" or coco:
            what = "ssdlite has no feature pyramid" if name == "ssdlite" else "COCO detectors have 256"
            raise InputError(f"fpn_channels: {what}; leave it out")
        # FCOS's GroupNorm has 32 groups: with 32 channels a 1x1 top level of one image has one value per group
        if not (isinstance(fpn_channels, int) and fpn_channels >= 64 and fpn_channels % 32 == 0):
            raise InputError(f"fpn_channels must be a multiple of 32 from 64 up, got {fpn_channels!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise InputError(f"num_classes must be a positive integer, got {num_classes!r}")
    if coco:
        model_name, needed = COCO_MODELS[name]
        if backbone.removeprefix("torchvision:") != needed:
            raise InputError(
                f"pretrained: coco is torchvision's {model_name}, built on {needed}, but the backbone is "
                f"{backbone!r}: set backbone: {needed}, or pretrained: true (ImageNet backbone weights)"
            )
        if weights:
            raise InputError("pretrained: coco gives every weight: leave out weights")
        net = _coco_detector(name, num_classes)
    else:
        net = _build(name, backbone, num_classes, bool(pretrained), weights, fpn_channels or 256)
    return DetectorNet(net, name, num_classes, detector_options(options))


def head_parts(model: DetectorNet) -> dict[str, nn.Module]:
    """Every part of the detector with weights other than the body, by name: the FPN (or SSDlite's
    extra layers) and the detector's heads (FCOS / RetinaNet `head`; Faster R-CNN `rpn`, `roi_heads`)."""
    body, net = model.body, model.net
    parts = {name: child for name, child in net.backbone.named_children() if child is not body}
    parts.update(
        (name, child) for name, child in net.named_children() if name not in ("backbone", "transform")
    )
    return {
        name: part
        for name, part in parts.items()
        if any(True for _ in part.parameters()) or any(True for _ in part.buffers())
    }
