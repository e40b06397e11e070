"""Losses and metrics give float32 figures under bf16 autocast, equal to the float32 computation
on the same (half-precision) network outputs: the precision flag changes the network, not the scores."""

from __future__ import annotations

import pytest
import torch

from vision_lightning.losses.feature import StyleLoss, gram_matrix
from vision_lightning.losses.segmentation import LOSS_NAMES, build_segmentation_loss
from vision_lightning.metrics.segmentation import SegmentationScores
from vision_lightning.metrics.superres import SuperResScores
from vision_lightning.utils.precision import autocast_off, float32, in_float32

BF16 = torch.autocast("cpu", dtype=torch.bfloat16)


def _segmentation_case(name: str):
    mode = "multiclass" if name in ("ce", "lovasz") else "binary"
    classes = 3 if mode == "multiclass" else 1
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, classes, 16, 16, generator=generator).bfloat16()
    target = torch.randint(0, 3 if mode == "multiclass" else 2, (2, 16, 16), generator=generator)
    return mode, logits, target


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_segmentation_loss_is_float32_under_bf16_autocast(name: str):
    mode, logits, target = _segmentation_case(name)
    loss_fn = build_segmentation_loss(name, mode, 3 if mode == "multiclass" else 2)
    with BF16:
        loss, parts = loss_fn(logits, target)
    expected, _ = loss_fn(logits.float(), target)  # no autocast, float32 inputs
    assert loss.dtype == torch.float32 and all(p.dtype == torch.float32 for p in parts.values())
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, expected)


def test_multiclass_lovasz_with_bf16_logits_no_longer_fails():
    """smp's Lovasz took `dot` of bf16 and float32 tensors and raised."""
    logits = torch.randn(2, 4, 8, 8).bfloat16()
    loss, _ = build_segmentation_loss("lovasz", "multiclass", 4)(logits, torch.randint(0, 4, (2, 8, 8)))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_gram_matrices_and_style_loss_stay_float32():
    with BF16:
        assert gram_matrix(torch.rand(2, 8, 16, 16).bfloat16()).dtype == torch.float32
        loss_fn = StyleLoss(network="vgg16", pretrained=False)
        loss_fn.set_style(torch.rand(1, 3, 32, 32))
        loss, parts = loss_fn(torch.rand(2, 3, 32, 32).bfloat16(), torch.rand(2, 3, 32, 32))
    assert loss.dtype == torch.float32 and all(p.dtype == torch.float32 for p in parts.values())


def test_metrics_update_in_float32():
    prediction, target = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24)
    plain, mixed = SuperResScores(scale=2), SuperResScores(scale=2)
    plain.update(prediction.bfloat16().float(), target)
    with BF16:
        mixed.update(prediction.bfloat16(), target)
    for key, value in plain.compute().items():
        torch.testing.assert_close(mixed.compute()[key], value)
    scores = SegmentationScores(mode="binary", num_classes=2)
    with BF16:
        scores.update(torch.randint(0, 2, (2, 8, 8)), torch.randint(0, 2, (2, 8, 8)))
    assert all(v.dtype == torch.float32 for v in scores.compute().values())


def test_the_helpers():
    with BF16:
        assert torch.is_autocast_enabled("cpu")
        with autocast_off():
            assert not torch.is_autocast_enabled("cpu")
        assert in_float32(lambda a: (a @ a).dtype)(torch.rand(2, 2)) == torch.float32
    cast = float32({"a": [torch.zeros(1, dtype=torch.bfloat16)], "b": torch.zeros(1, dtype=torch.long)})
    assert cast["a"][0].dtype == torch.float32 and cast["b"].dtype == torch.long
