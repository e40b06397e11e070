"""Strided convolutions that stay finite in bfloat16 on the CPU when their input is narrower than
their kernel.

PyTorch's CPU (oneDNN) bfloat16 convolution gives NaN weight gradients, now and then, for a
strided 3x3 convolution whose input is one pixel wide: it reads memory it never wrote for a
padding tap (PyTorch 2.x, under autocast and in plain bfloat16 alike; float32 and stride 1 are
fine). Detectors meet such maps at every step on small images: FCOS's and RetinaNet's P7 is a
stride-2 3x3 convolution of a 1x1 P6 for inputs up to 64 px (up to 128 px, P7's own input is
1x1 or 2x1). `guard_narrow_convs` makes a model's strided convolutions run those tiny maps in
float32 (free: they are a few pixels), and everything else as before.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

LOW_PRECISION = (torch.bfloat16, torch.float16)


class NarrowInputSafeConv2d(nn.Conv2d):
    """`nn.Conv2d` (same weights, same state_dict keys) that computes in float32 on the CPU when the
    input is narrower or shorter than the kernel and the computation would be in low precision."""

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if input.device.type == "cpu":
            autocast = torch.is_autocast_enabled("cpu")
            dtype = torch.get_autocast_dtype("cpu") if autocast else input.dtype
            if dtype in LOW_PRECISION and (
                input.shape[-1] < self.kernel_size[-1] or input.shape[-2] < self.kernel_size[-2]
            ):
                with torch.autocast("cpu", enabled=False):
                    out = super()._conv_forward(
                        input.float(), weight.float(), None if bias is None else bias.float()
                    )
                return out.to(dtype)
        return super()._conv_forward(input, weight, bias)


def guard_narrow_convs(module: nn.Module) -> nn.Module:
    """Every strided `nn.Conv2d` of `module` (in place) becomes a `NarrowInputSafeConv2d`."""
    for child in module.modules():
        if type(child) is nn.Conv2d and max(child.stride) > 1 and max(child.kernel_size) > 1:
            child.__class__ = NarrowInputSafeConv2d
    return module
