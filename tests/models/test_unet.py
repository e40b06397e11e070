"""The two classic U-Nets: the tutorial's parameter count, output sizes, the paper U-Net's valid sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vision_lightning.models.unet import PaperUNet, UNet
from vision_lightning.utils.errors import InputError


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_unet_parameter_count_is_the_tutorials() -> None:
    assert count(UNet(in_channels=1, classes=1, bilinear=True)) == 13_394_177


def test_unet_with_transposed_convs_runs_and_has_more_parameters() -> None:
    model = UNet(bilinear=False, base_channels=8).eval()
    # the 4 learned 2x2 up-convs (512, 256, 128 and 64 channels) add 1,393,600 parameters
    assert count(UNet(bilinear=False)) == 13_394_177 + 1_393_600
    with torch.no_grad():
        assert model(torch.randn(1, 1, 63, 65)).shape == (1, 1, 63, 65)


@pytest.mark.parametrize("size", [(64, 64), (63, 65)])
def test_unet_output_has_the_input_size(size: tuple[int, int]) -> None:
    model = UNet(base_channels=8).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, *size)).shape == (2, 1, *size)


def test_unet_channels_and_classes() -> None:
    model = UNet(in_channels=3, classes=5, base_channels=8).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 48)).shape == (1, 5, 32, 48)


def test_unet_too_small_input_is_an_input_error() -> None:
    with pytest.raises(InputError, match="8x32"):
        UNet(base_channels=8)(torch.randn(1, 1, 8, 32))


def test_unet_encoder_returns_five_maps() -> None:
    model = UNet().eval()
    with torch.no_grad():
        features = model.encoder(torch.randn(1, 1, 32, 32))
    assert [f.shape[1] for f in features] == [64, 128, 256, 512, 512]
    assert [f.shape[2] for f in features] == [32, 16, 8, 4, 2]


def test_paper_unet_572_gives_388_with_default_channels() -> None:
    model = PaperUNet().eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 572, 572)).shape == (1, 2, 388, 388)


def test_paper_unet_shapes_with_few_channels() -> None:
    model = PaperUNet(in_channels=3, classes=4, base_channels=8).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 572, 188)).shape == (1, 4, 388, 4)


def test_paper_unet_sizes() -> None:
    assert PaperUNet.output_size(572) == 388
    assert PaperUNet.valid_input_size(570) == 572
    assert PaperUNet.valid_input_size(572) == 572
    assert PaperUNet.valid_input_size(1) == 188  # the smallest valid side
    assert PaperUNet.output_size(188) == 4
    assert PaperUNet.output_size(572 + PaperUNet.output_stride) == 388 + PaperUNet.output_stride


@pytest.mark.parametrize("size", [570, 573, 100])
def test_paper_unet_invalid_size_is_an_input_error(size: int) -> None:
    with pytest.raises(InputError, match=str(size)):
        PaperUNet.output_size(size)


def test_paper_unet_forward_rejects_an_invalid_size() -> None:
    with pytest.raises(InputError, match="570"):
        PaperUNet(base_channels=8)(torch.randn(1, 1, 572, 570))


@pytest.mark.parametrize("model_class", [UNet, PaperUNet])
def test_encoder_decoder_and_head_hold_all_parameters(model_class: type[nn.Module]) -> None:
    model = model_class()
    parts = (model.encoder, model.decoder, model.segmentation_head)
    part_params = {id(p) for part in parts for p in part.parameters()}
    assert part_params == {id(p) for p in model.parameters()}
    assert sum(count(part) for part in parts) == count(model)


@pytest.mark.parametrize(("model_class", "size"), [(UNet, 16), (PaperUNet, 188)])
def test_gradients_flow_to_every_parameter(model_class: type[nn.Module], size: int) -> None:
    torch.manual_seed(0)
    model = model_class(base_channels=4)
    model(torch.randn(2, 1, size, size)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
