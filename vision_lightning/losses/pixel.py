"""Pixel losses by name, for super-resolution and as the pixel term of the feature loss.

Every loss compares two image batches of the same shape and returns a scalar mean.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from vision_lightning.utils.errors import InputError
from vision_lightning.utils.precision import in_float32

PixelLossName = Literal["l1", "mse", "charbonnier"]
PIXEL_LOSSES = ("l1", "mse", "charbonnier")


class CharbonnierLoss(nn.Module):
    """mean(sqrt((x - y)^2 + eps^2)): L1 for errors much larger than `eps`, smooth (quadratic) near
    zero, so its gradient does not flip sign at every pixel that is already right (LapSRN, EDSR
    follow-ups). A perfect prediction scores `eps`, not 0."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        if eps <= 0:
            raise InputError(f"Charbonnier eps must be positive, got {eps}")
        self.eps = eps

    @in_float32
    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        return torch.sqrt((prediction - target).square() + self.eps**2).mean()

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


def build_pixel_loss(name: str, **kwargs: Any) -> nn.Module:
    """The pixel loss `name`: `l1`, `mse` or `charbonnier`; `kwargs` go to its class (`eps` for
    Charbonnier, default 1e-3; a wrong one raises torch's TypeError)."""
    losses = {"l1": nn.L1Loss, "mse": nn.MSELoss, "charbonnier": CharbonnierLoss}
    if name not in losses:
        raise InputError(f"unknown pixel loss {name!r}: choose from {', '.join(PIXEL_LOSSES)}")
    return losses[name](**kwargs)
