"""A one-stage detector's dense outputs, for export: every box and every class score, before NMS.

YOLO's exporters do the same by default: the network ends where torchvision's `postprocess_detections`
starts (a score threshold, the best candidates per level, per-class non-maximum suppression),
because those steps keep a number of boxes that depends on the data, which torch.export and ONNX
with dynamic shapes cannot follow. torchvision's own parts compute everything here (the feature
pyramid, the head, the anchor generator on the feature maps' sizes, the box coder), so the anchors
follow the input's batch and image size inside the exported graph.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import boxes as box_ops


class DenseDetector(nn.Module):
    """torchvision's FCOS or RetinaNet as a plain network: normalised images (N, 3, H, W) ->
    `boxes` (N, A, 4) xyxy in input pixels (clipped to the image, as torchvision clips), decoded at
    every location (FCOS) or anchor (RetinaNet) of every pyramid level, and `scores` (N, A, K) per
    class: FCOS sqrt(sigmoid(class) * sigmoid(centerness)), RetinaNet sigmoid(class), the scores
    torchvision's postprocessing thresholds. Levels are in order (P3 first), locations row by row."""

    def __init__(self, net: FCOS | RetinaNet) -> None:
        super().__init__()
        if not isinstance(net, FCOS | RetinaNet):
            raise TypeError(f"DenseDetector takes torchvision's FCOS or RetinaNet, got {type(net).__name__}")
        self.backbone = net.backbone
        self.head = net.head
        self.anchor_generator = net.anchor_generator
        self.box_coder = net.box_coder
        self.centerness = isinstance(net, FCOS)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = list(self.backbone(images).values())
        if all(side > 1 for feature in features for side in feature.shape[-2:]):
            # torch.export: maps of 2x2 and more for every size, else a 1x1 map of the example ties
            # the program to sizes that give 1x1 maps (the export's smallest side becomes known)
            for feature in features:
                torch._check(feature.shape[-2] > 1)
                torch._check(feature.shape[-1] > 1)
        outputs = self.head(features)
        height, width = images.shape[-2], images.shape[-1]
        # the same anchors for every image: one image's worth (A, 4), from the feature maps' sizes
        anchors = self.anchor_generator(ImageList(images, [(height, width)]), features)[0]
        regression = outputs["bbox_regression"]  # (N, A, 4)
        if self.centerness:  # FCOS's coder broadcasts the anchors over the batch
            boxes = self.box_coder.decode(regression, anchors)
            scores = torch.sqrt(torch.sigmoid(outputs["cls_logits"]) * torch.sigmoid(outputs["bbox_ctrness"]))
        else:  # RetinaNet's coder takes (A, 4) rows: the anchors repeated for each image
            rows = self.box_coder.decode_single(regression.flatten(0, 1), anchors.repeat(images.shape[0], 1))
            boxes = rows.view_as(regression)
            scores = torch.sigmoid(outputs["cls_logits"])
        return box_ops.clip_boxes_to_image(boxes, (height, width)), scores
