"""Feature pyramids from the one backbone factory, and the detectors' no-resize transform."""

from __future__ import annotations

import pytest
import torch

from vision_lightning.models.detection import BatchOnly, create_detector
from vision_lightning.models.factory import create_feature_pyramid
from vision_lightning.utils.errors import InputError


@pytest.mark.parametrize(
    "name, levels",
    [
        ("mobilenet_v3_small", ["0", "1", "2", "p6", "p7"]),  # torchvision `features` blocks
        ("timm:mobilenetv3_small_050", ["0", "1", "2", "p6", "p7"]),  # timm features_only
    ],
)
def test_pyramids_give_every_level_at_its_stride(name, levels):
    pyramid = create_feature_pyramid(name, out_channels=64)
    maps = pyramid(torch.zeros(1, 3, 96, 96))
    assert list(maps) == levels and pyramid.out_channels == 64
    assert [m.shape[-1] for m in maps.values()] == [12, 6, 3, 2, 1]  # strides 8, 16, 32, then P6, P7
    assert all(m.shape[1] == 64 for m in maps.values())


def test_faster_rcnn_pyramid_starts_at_stride_4_with_a_pool_level():
    pyramid = create_feature_pyramid("resnet18", top="pool", from_stride=4, out_channels=64)
    maps = pyramid(torch.zeros(1, 3, 64, 64))
    assert [m.shape[-1] for m in maps.values()] == [16, 8, 4, 2, 1] and list(maps)[-1] == "pool"


def test_unsupported_backbones_and_incomplete_weights_are_named(tmp_path):
    with pytest.raises(InputError, match="squeezenet1_1.*no feature pyramid.*use a timm name"):
        create_feature_pyramid("squeezenet1_1")
    path = tmp_path / "partial.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(InputError, match="partial.pth does not fit.*missing key"):
        create_feature_pyramid("resnet18", weights=str(path))


def test_batch_only_keeps_sizes_and_values():
    transform = BatchOnly()
    images = torch.randn(2, 3, 64, 96)
    batched, targets = transform(images, [{"boxes": torch.ones(1, 4)}] * 2)
    assert batched.tensors is images and batched.image_sizes == [(64, 96), (64, 96)]
    uneven, _ = transform([torch.randn(3, 64, 64), torch.randn(3, 40, 50)])
    assert uneven.tensors.shape == (2, 3, 64, 64) and uneven.image_sizes == [(64, 64), (40, 50)]
    detector = create_detector("fcos", "resnet18", 2, fpn_channels=64, options={"max_detections": 5})
    assert detector.net.detections_per_img == 5 and detector.net.transform is not None
    assert isinstance(detector.net.transform, BatchOnly)


def test_coco_detector_gets_a_classification_layer_for_the_data(monkeypatch):
    """torchvision's COCO FCOS, its download replaced by the state of an untrained one (no network)."""
    import torchvision
    from torchvision.models._api import WeightsEnum

    build = torchvision.models.get_model
    calls = []

    def state(self, *args, **kwargs):
        calls.append((type(self).__name__, kwargs.get("weights_only")))
        return build("fcos_resnet50_fpn", weights=None, weights_backbone=None).state_dict()

    monkeypatch.setattr(WeightsEnum, "get_state_dict", state)
    detector = create_detector("fcos", "resnet50", 3, pretrained="coco")
    assert calls[0] == ("FCOS_ResNet50_FPN_Weights", True)  # read with weights_only first
    head = detector.net.head.classification_head
    assert head.cls_logits.out_channels == 3 and head.num_classes == 3
    detector.train()
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0]]), "labels": torch.tensor([2])}] * 2
    assert set(detector(torch.randn(2, 3, 64, 64), targets)) == {
        "classification",
        "bbox_regression",
        "bbox_ctrness",
    }
