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


@pytest.mark.parametrize("name", ["fcos", "retinanet", "faster_rcnn", "ssdlite"])
def test_bf16_mixed_training_step_keeps_weights_finite_and_losses_as_float32(name):
    """64 px inputs: FCOS's and RetinaNet's P7 is a stride-2 convolution of a 1x1 map, whose bf16
    weight gradient oneDNN made NaN (see models/narrow_conv.py)."""
    from tests.detection_batches import Rectangles, collate
    from tests.models.test_narrow_conv import dirty_memory

    batch = collate([Rectangles(2, 64)[i] for i in range(2)])
    targets = [{"boxes": b, "labels": c} for b, c in zip(batch["boxes"], batch["labels"])]
    torch.manual_seed(0)
    backbone = "mobilenet_v3_large" if name == "ssdlite" else "resnet18"
    model = create_detector(name, backbone, 2, fpn_channels=None if name == "ssdlite" else 64).train()
    torch.manual_seed(1)  # Faster R-CNN and SSDlite sample proposals / negatives alike in both runs
    with torch.no_grad():
        reference = {k: float(v) for k, v in model(batch["image"], targets).items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    torch.manual_seed(1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(batch["image"], targets)
    for key, value in losses.items():  # bf16 has 8 bits of mantissa; sampled boxes may differ
        assert abs(float(value) - reference[key]) <= 0.05 + 0.05 * abs(reference[key]), key
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    dirty_memory()
    loss.backward()
    optimizer.step()
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    assert not bad, f"not finite after a bf16-mixed step: {bad[:3]}"
