"""A small fast CIFAR-10 network after the public ideas of Keller Jordan's airbench94 (our own code).

`airbench` in the model factory (32x32 RGB input, 256 pooled features; with the classifier's linear
head and 10 classes 1,971,650 parameters, all but the 288 whitening weights trained):

    WhiteningConv 2x2, 3 -> 24 (12 patch eigenvectors and their negatives) - GELU
    3 x [conv3x3 -> maxpool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU], widths 64, 256, 256
    maxpool 3 (4x4 -> 1x1) - flatten - x 1/9

- Convolutions have no bias; each starts as the identity on its first input channels (a Dirac
  kernel), so the deep path starts close to a shallow one.
- BatchNorm has no learned scale (fixed at 1), eps 1e-12 and momentum 0.4 (airbench's 0.6 in its
  own convention); its shift trains at 64 times the learning rate (airbench's `bias_scaler`),
  stored divided by 8 and multiplied back in the forward pass: with SGD this is the same step as a
  64-fold rate, and the task's parameter groups need no special case.
- The features are multiplied by 1/9 before the head: airbench's temperature on the logits (for the
  bias-free head it has, the same thing; ours keeps its bias).
- `WhiteningConv.whiten_from(images)` sets the first layer from the training images' 2x2 patches
  (`vision_lightning.callbacks.PatchWhitening` calls it on the first training batch): each output
  channel then has unit second moment over those patches, and the weights are frozen.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

WIDTHS = (64, 256, 256)
FEATURE_SCALE = 1 / 9


class WhiteningConv(nn.Conv2d):
    """A 2x2 convolution to be initialised as a patch-whitening transform: its `2 * C * 4` outputs are
    the eigenvectors of the patches' second-moment matrix scaled by `1 / sqrt(eigenvalue + eps)`, and
    their negatives (so the GELU after it keeps both signs). Until `whiten_from` it is a plain
    (trainable) convolution; `whitened` (saved in checkpoints) says whether it was set."""

    def __init__(self, in_channels: int = 3, kernel_size: int = 2) -> None:
        super().__init__(in_channels, 2 * in_channels * kernel_size**2, kernel_size, bias=True)
        nn.init.zeros_(self.bias)
        self.register_buffer("whitened", torch.tensor(False))

    @torch.no_grad()
    def whiten_from(self, images: Tensor, eps: float = 5e-4, chunk: int = 256) -> None:
        """Set the weights from the `kernel_size` patches of `images` (N, C, H, W), normalised as the
        network sees them; the second moment is summed in float64, `chunk` images at a time."""
        k = self.kernel_size[0]
        size = self.in_channels * k * k
        moment = torch.zeros(size, size, dtype=torch.float64, device=images.device)
        count = 0
        for part in images.split(chunk):
            patches = F.unfold(part.double(), k)  # (n, C*k*k, L)
            moment += torch.einsum("nil,njl->ij", patches, patches)
            count += patches.shape[0] * patches.shape[2]
        eigenvalues, eigenvectors = torch.linalg.eigh(moment / count)  # ascending
        filters = (eigenvectors / torch.sqrt(eigenvalues + eps)).T.flip(0)  # largest first, one per row
        filters = filters.reshape(size, self.in_channels, k, k).to(self.weight.dtype)
        self.weight.copy_(torch.cat([filters, -filters]))
        self.bias.zero_()
        self.whitened.fill_(True)


class ShiftOnlyBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d without a learned scale, whose shift trains at `shift_lr_factor` times the rate."""

    def __init__(
        self, channels: int, momentum: float = 0.4, eps: float = 1e-12, shift_lr_factor: float = 64
    ) -> None:
        super().__init__(channels, eps=eps, momentum=momentum, affine=False)
        self.shift_multiplier = math.sqrt(shift_lr_factor)
        self.shift = nn.Parameter(torch.zeros(channels))  # the BN bias / shift_multiplier

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            None,
            self.shift * self.shift_multiplier,
            self.training,
            self.momentum,
            self.eps,
        )


def _conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding="same", bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(in_channels, out_channels)])
    return conv


class ConvBlock(nn.Sequential):
    """conv - maxpool 2 - BN - GELU - conv - BN - GELU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            _conv(in_channels, out_channels),
            nn.MaxPool2d(2),
            ShiftOnlyBatchNorm(out_channels),
            nn.GELU(),
            _conv(out_channels, out_channels),
            ShiftOnlyBatchNorm(out_channels),
            nn.GELU(),
        )


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:.4g}"


def airbench_layers(in_channels: int = 3, widths: tuple[int, int, int] = WIDTHS) -> list[nn.Module]:
    """The layers of the `airbench` backbone (32x32 input, `widths[-1]` pooled features)."""
    whitening = WhiteningConv(in_channels)
    blocks, width = [], whitening.out_channels
    for out in widths:
        blocks.append(ConvBlock(width, out))
        width = out
    return [whitening, nn.GELU(), *blocks, nn.MaxPool2d(3), nn.Flatten(), Scale(FEATURE_SCALE)]
