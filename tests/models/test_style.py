"""Style-transfer networks: same-size output, StyleResnet's unpadded blocks and centred crop, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vision_lightning.models.style import (
    STYLE_ARCHS,
    CroppedResidualBlock,
    ReflectionPad,
    StyleResnet,
    TransformerNet,
    create_style_model,
)
from vision_lightning.utils.errors import InputError


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("arch", list(STYLE_ARCHS))
@pytest.mark.parametrize("size", [(32, 32), (48, 64)])
def test_output_has_the_input_size(arch: str, size: tuple[int, int]) -> None:
    model = create_style_model(arch, channels=8, blocks=2)
    with torch.no_grad():
        assert model(torch.rand(2, 3, *size)).shape == (2, 3, *size)
    for part in ("encoder", "residuals", "decoder"):
        assert isinstance(getattr(model, part), nn.Module)


def test_default_networks_keep_the_size() -> None:
    for arch in STYLE_ARCHS:
        with torch.no_grad():
            assert create_style_model(arch).eval()(torch.rand(1, 3, 32, 48)).shape == (1, 3, 32, 48)


def test_transformer_net_is_the_pytorch_examples_network() -> None:
    model = TransformerNet()
    assert len(model.residuals) == 5
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 3 + 5 * 2 + 2 and all(n.affine for n in norms)
    assert count(model) == 1_679_235


def test_style_resnet_blocks_are_unpadded_and_shrink_by_4() -> None:
    model = StyleResnet()
    assert len(model.residuals) == 5
    convs = [m for m in model.residuals.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 10 and all(c.padding == (0, 0) for c in convs)
    assert isinstance(model.encoder[0], ReflectionPad) and model.encoder[0].padding == 40
    with torch.no_grad():
        assert model.residuals[0](torch.rand(1, 128, 20, 24)).shape == (1, 128, 16, 20)


def test_style_resnet_identity_is_centre_cropped() -> None:
    block = CroppedResidualBlock(4).eval()
    with torch.no_grad():
        block.body[-1].weight.zero_()  # the last BatchNorm outputs 0: the block is its identity path
        block.body[-1].bias.zero_()
        x = torch.randn(1, 4, 11, 13)
        assert torch.equal(block(x), x[:, :, 2:-2, 2:-2])


def test_style_resnet_pad_follows_the_block_count() -> None:
    model = StyleResnet(channels=4, blocks=3)
    assert model.encoder[0].padding == 24
    with torch.no_grad():
        assert model(torch.rand(1, 3, 16, 20)).shape == (1, 3, 16, 20)


def test_reflection_pad_is_reflection_pad_2d_and_works_past_the_image_size() -> None:
    x = torch.rand(1, 3, 9, 12)
    assert torch.equal(ReflectionPad(5)(x), nn.ReflectionPad2d(5)(x))
    padded = ReflectionPad(40)(torch.rand(1, 3, 8, 12))
    assert padded.shape == (1, 3, 88, 92)


@pytest.mark.parametrize("arch", list(STYLE_ARCHS))
def test_gradients_reach_every_parameter_and_the_input(arch: str) -> None:
    model = create_style_model(arch, channels=8, blocks=2)
    image = torch.rand(2, 3, 16, 16, requires_grad=True)
    model(image).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert image.grad is not None and image.grad.abs().sum() > 0


def test_factory_errors() -> None:
    with pytest.raises(InputError, match="transformer_net, style_resnet"):
        create_style_model("cyclegan")
    with pytest.raises(InputError, match="'depth'"):
        create_style_model("style_resnet", depth=3)
    with pytest.raises(InputError, match="channels must be a positive integer"):
        create_style_model("transformer_net", channels=0)
