"""Strided convolutions on 1-pixel-wide maps stay finite in bfloat16 on the CPU (oneDNN's bf16
backward reads unwritten memory there) and compute as before elsewhere."""

from __future__ import annotations

import torch
from torch import nn

from vision_lightning.models.narrow_conv import NarrowInputSafeConv2d, guard_narrow_convs


def dirty_memory() -> None:
    """Leave NaN in freed memory, where a kernel that reads what it never wrote finds it."""
    for n in (128, 4096, 8192, 36864, 100_000):
        torch.full((n,), float("nan"), dtype=torch.bfloat16)
        torch.full((n,), float("nan"))


def test_strided_convs_of_narrow_maps_keep_finite_bf16_gradients():
    torch.manual_seed(0)
    conv = guard_narrow_convs(nn.Sequential(nn.Conv2d(64, 64, 3, 2, 1)))[0]
    for height in (1, 1, 2, 3, 4, 1, 2, 5) * 3:  # unguarded, about every third of these gave NaN
        x = torch.randn(2, 64, height, 1).relu()
        dirty_memory()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = conv(x)
        assert out.dtype == torch.bfloat16  # as autocast's own convolution
        conv.zero_grad()
        out.float().sum().backward()
        assert torch.isfinite(conv.weight.grad).all() and torch.isfinite(conv.bias.grad).all()
    x = torch.randn(2, 64, 1, 1, dtype=torch.bfloat16, requires_grad=True)  # bf16-true: no autocast
    weight = conv.weight.detach().bfloat16()
    conv.weight.data = weight.clone()
    conv.bias.data = conv.bias.data.bfloat16()
    dirty_memory()
    out = conv(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert torch.isfinite(conv.weight.grad).all() and torch.isfinite(x.grad).all()


def test_guard_swaps_strided_convs_only_and_keeps_weights_and_results():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.Conv2d(8, 8, 3, 1, 1), nn.Conv2d(8, 8, 1, 2))
    keys = list(model.state_dict())
    guard_narrow_convs(model)
    assert [type(m) for m in model] == [NarrowInputSafeConv2d, nn.Conv2d, nn.Conv2d]
    assert list(model.state_dict()) == keys
    x = torch.randn(1, 3, 8, 1)
    plain = nn.Conv2d(3, 8, 3, 2, 1)
    plain.load_state_dict(model[0].state_dict())
    assert torch.equal(model[0](x), plain(x))  # float32: the plain convolution
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model[0](x)
    assert low.dtype == torch.bfloat16 and torch.allclose(low.float(), plain(x), atol=0.02, rtol=0.02)
    wide = torch.randn(1, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(model[0](wide), plain(wide))  # wide enough: autocast's own convolution
