"""Super-resolution networks: output sizes, ICNR init, SrResnet as in seed 004, growing x2 -> x4."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from vision_lightning.models.superres import (
    SUPERRES_ARCHS,
    EdsrBaseline,
    Espcn,
    ResidualBlock,
    SrResnet,
    SubPixelUpsample,
    create_superres_model,
    icnr_,
    load_for_scale,
)
from vision_lightning.utils.errors import InputError

CASES = [(arch, scale) for arch in SUPERRES_ARCHS for scale in (2, 3, 4)]


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small(arch: str, scale: int) -> nn.Module:
    """The network with fewer blocks (and channels) where it has them, to keep the tests fast."""
    args = {} if arch == "espcn" else {"channels": 16, "blocks": 2}
    return create_superres_model(arch, scale, **args)


def subpixels_are_equal(image: torch.Tensor, r: int) -> bool:
    """True when each r x r cell of `image` (N, C, H*r, W*r) holds one value per channel."""
    n, c, h, w = image.shape
    cells = image.reshape(n, c, h // r, r, w // r, r)
    return torch.allclose(cells, cells[:, :, :, :1, :, :1].expand_as(cells), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("arch", "scale"), CASES)
def test_output_is_scale_times_an_odd_lr_size(arch: str, scale: int) -> None:
    model = create_superres_model(arch, scale).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 7, 9))
    assert out.shape == (2, 3, 7 * scale, 9 * scale)
    assert model.scale == scale
    assert isinstance(model.upsample, nn.Sequential)
    assert isinstance(model.features, nn.Module) and isinstance(model.tail, nn.Module)


@pytest.mark.parametrize(("arch", "scale"), CASES)
def test_upsample_stages_per_scale(arch: str, scale: int) -> None:
    stages = list(create_superres_model(arch, scale).upsample)
    assert all(isinstance(stage, SubPixelUpsample) for stage in stages)
    expected = [scale] if arch == "espcn" or scale == 3 else [2] * (scale // 2)
    assert [stage.scale for stage in stages] == expected


def test_pixel_shuffle_puts_channel_c_r_r_plus_i_at_subpixel_i_of_channel_c() -> None:
    r, out_channels = 2, 3
    channel_ids = torch.arange(out_channels * r * r, dtype=torch.float32).view(1, -1, 1, 1)
    shuffled = nn.PixelShuffle(r)(channel_ids)  # (1, 3, 2, 2)
    for c in range(out_channels):
        for i in range(r * r):
            assert shuffled[0, c, i // r, i % r] == c * r * r + i


def test_icnr_repeats_one_kernel_per_output_channel() -> None:
    weight = torch.empty(3 * 9, 4, 3, 3)
    assert icnr_(weight, scale=3) is weight
    groups = weight.view(3, 9, 4, 3, 3)
    assert torch.equal(groups, groups[:, :1].expand_as(groups))
    assert not torch.equal(groups[0, 0], groups[1, 0])  # different output channels differ
    assert weight.abs().sum() > 0


def test_icnr_takes_the_init_function() -> None:
    weight = icnr_(torch.empty(8, 2, 3, 3), scale=2, init=nn.init.ones_)
    assert torch.equal(weight, torch.ones(8, 2, 3, 3))


def test_icnr_needs_output_channels_divisible_by_scale_squared() -> None:
    with pytest.raises(InputError, match="divide by 4"):
        icnr_(torch.empty(10, 4, 3, 3), scale=2)


@pytest.mark.parametrize(("arch", "scale"), CASES)
def test_every_subpixel_conv_starts_checkerboard_free(arch: str, scale: int) -> None:
    model = small(arch, scale)
    stages = [m for m in model.modules() if isinstance(m, SubPixelUpsample)]
    assert stages
    for stage in stages:
        assert torch.count_nonzero(stage.conv.bias) == 0
        with torch.no_grad():
            image = stage.shuffle(stage.conv(torch.randn(1, stage.conv.in_channels, 5, 6)))
        assert subpixels_are_equal(image, stage.scale)


def test_srresnet_is_the_seeds_network() -> None:
    model = SrResnet(scale=4)
    blocks = [m for m in model.features if isinstance(m, ResidualBlock)]
    assert len(blocks) == 8
    assert all(block.res_scale == 0.1 for block in blocks)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.features.modules())
    # seed: conv(3, 64) without activation, 8 res blocks, conv(64, 64); BatchNorm2d(64) + conv(64, 3) at the end
    assert isinstance(model.features[0], nn.Conv2d) and isinstance(model.features[-1], nn.Conv2d)
    assert isinstance(model.tail[0], nn.BatchNorm2d) and isinstance(model.tail[1], nn.Conv2d)
    assert [type(m) for m in blocks[0].body] == [nn.Conv2d, nn.ReLU, nn.Conv2d]
    assert all(isinstance(stage.activation, nn.Identity) for stage in model.upsample)


def test_residual_block_adds_a_scaled_residual() -> None:
    block = SrResnet(scale=2, channels=8, blocks=1).features[1]
    x = torch.randn(1, 8, 5, 7)
    with torch.no_grad():
        assert torch.allclose(block(x), x + 0.1 * block.body(x), atol=1e-6)


def test_parameter_counts() -> None:
    # conv 3->64 (1,792), 8 blocks (73,856 each), conv 64->64 (36,928), per x2 conv 64->256 (147,712),
    # BatchNorm (128), conv 64->3 (1,731)
    assert count(SrResnet(scale=4)) == 1_792 + 8 * 73_856 + 36_928 + 2 * 147_712 + 128 + 1_731
    # the published EDSR-baseline sizes: 1.37M at x2, 1.52M at x4 (16 blocks instead of 8, no BN)
    assert count(EdsrBaseline(scale=2)) == 1_369_859
    assert count(EdsrBaseline(scale=4)) == 1_517_571
    # ESPCN x3: 5x5 3->64, 3x3 64->32, 3x3 32->27
    assert count(Espcn(scale=3)) == 4_864 + 18_464 + 7_803


def test_edsr_long_skip_and_mean_shift_are_not_in_the_state_dict() -> None:
    model = EdsrBaseline(scale=2, channels=8, blocks=1)
    assert all("shift" not in key for key in model.state_dict())
    assert set(model.features.state_dict()) >= {"1.head.weight", "1.body.0.body.0.weight"}


def perturbed_x2(arch: str = "srresnet") -> nn.Module:
    model = small(arch, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


def test_grow_x2_to_x4_from_a_lightning_checkpoint(tmp_path, caplog) -> None:
    x2 = perturbed_x2()
    path = tmp_path / "x2.ckpt"
    torch.save({"state_dict": {"model." + k: v for k, v in x2.state_dict().items()}, "epoch": 3}, path)
    x4 = small("srresnet", 4)
    with caplog.at_level(logging.INFO, logger="vision_lightning.models.superres"):
        report = load_for_scale(x4, path)
    assert report["new"] == ["upsample.1.conv.weight", "upsample.1.conv.bias"]
    assert report["skipped"] == [] and report["kept_init"] == report["new"]
    assert set(report["loaded"]) == set(x2.state_dict())
    own = x4.state_dict()
    for key, value in x2.state_dict().items():
        assert torch.equal(own[key], value), key
    assert "x2.ckpt" in caplog.text and "upsample.1.conv.weight" in caplog.text
    stage = x4.upsample[1]
    with torch.no_grad():
        assert subpixels_are_equal(stage.shuffle(stage.conv(torch.randn(1, 16, 4, 5))), 2)


def test_grow_x2_to_x3_skips_the_upsampling_stage() -> None:
    x2 = perturbed_x2("edsr_baseline")
    x3 = small("edsr_baseline", 3)
    report = load_for_scale(x3, x2.state_dict())
    assert sorted(report["skipped"]) == ["upsample.0.conv.bias", "upsample.0.conv.weight"]
    assert report["new"] == [] and report["kept_init"] == ["upsample.0.conv.weight", "upsample.0.conv.bias"]
    assert torch.equal(x3.tail[0].weight, x2.tail[0].weight)
    assert not torch.equal(x3.upsample[0].conv.bias, x2.upsample[0].conv.bias)


def test_checkpoint_keys_outside_the_model_are_ignored() -> None:
    x2 = perturbed_x2()
    state = {"model." + k: v for k, v in x2.state_dict().items()} | {"loss.vgg.weight": torch.ones(1)}
    report = load_for_scale(small("srresnet", 2), state)
    assert report["new"] == [] and report["skipped"] == []


def test_weights_that_fit_nothing_are_an_input_error() -> None:
    with pytest.raises(InputError, match="does not fit a srresnet x4 model: no tensor matches"):
        load_for_scale(small("srresnet", 4), {"other.weight": torch.ones(3)})


def test_factory_errors() -> None:
    with pytest.raises(InputError, match="srresnet, edsr_baseline, espcn"):
        create_superres_model("srgan")
    with pytest.raises(InputError, match="scale must be one of 2, 3, 4, got 5"):
        create_superres_model("srresnet", scale=5)
    with pytest.raises(InputError, match="'depth'"):
        create_superres_model("edsr_baseline", scale=2, depth=3)
    with pytest.raises(InputError, match="blocks must be a positive integer"):
        create_superres_model("srresnet", scale=2, blocks=0)
