"""Feed-forward style-transfer networks (Johnson et al. 2016): one forward pass stylises an image.

Both networks map (N, 3, H, W) in [0, 1] to (N, 3, H, W), unclamped, for H and W multiples of 4
(two stride-2 convs down, two x2 upsamplings up; the task pads other sizes). Both have the parts
`encoder` (downsampling convs), `residuals` (residual blocks at quarter resolution) and `decoder`
(upsampling and the final conv).

- `TransformerNet`: the network of pytorch/examples `fast_neural_style`: reflection-padded convs and
  InstanceNorm (Ulyanov et al.), which is what makes the style independent of the batch.
- `StyleResnet`: seed 004's network (fast.ai lesson 14) as in Johnson et al.'s paper: BatchNorm,
  a 40-pixel reflection pad at the input and *unpadded* residual blocks whose identity is cropped,
  so no zero padding touches the residual path and the output still has the input's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision_lightning.models.superres import build_by_name, check_positive


class ReflectionPad(nn.Module):
    """`nn.ReflectionPad2d(padding)` that also works when `padding` >= the image side.

    Reflection needs a pad smaller than the side (a 40-pixel pad fails on a 32x32 crop), so a large
    pad is applied in steps, each reflecting the image padded so far; when the pad is smaller than
    the side this is exactly `nn.ReflectionPad2d`. A side of 1 pixel is replicated.
    """

    def __init__(self, padding: int) -> None:
        super().__init__()
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_exporting():  # no loop over the sizes: export keeps them dynamic
            return F.pad(x, [self.padding] * 4, mode="reflect")
        left_h = left_w = self.padding
        while left_h or left_w:
            height, width = x.shape[-2:]
            if height == 1 or width == 1:
                return F.pad(x, [left_w, left_w, left_h, left_h], mode="replicate")
            step_h, step_w = min(left_h, height - 1), min(left_w, width - 1)
            x = F.pad(x, [step_w, step_w, step_h, step_h], mode="reflect")
            left_h, left_w = left_h - step_h, left_w - step_w
        return x

    def extra_repr(self) -> str:
        return str(self.padding)


class ConvLayer(nn.Sequential):
    """Reflection pad k // 2 -> Conv2d: 'same' size at stride 1, half at stride 2 (pytorch/examples).

    `ReflectionPad` instead of `nn.ReflectionPad2d` only so tiny images (side <= k // 2) work too.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> None:
        super().__init__(
            ReflectionPad(kernel_size // 2), nn.Conv2d(in_channels, out_channels, kernel_size, stride)
        )


class UpsampleConvLayer(nn.Sequential):
    """Nearest x2 upsampling -> ConvLayer: learned upsampling without transposed-conv checkerboards."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"), ConvLayer(in_channels, out_channels, kernel_size)
        )


def _norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=True)


class InstanceNormResidualBlock(nn.Module):
    """x + (ConvLayer 3x3 -> IN -> ReLU -> ConvLayer 3x3 -> IN)(x), as in pytorch/examples."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvLayer(channels, channels, 3), _norm(channels), nn.ReLU(inplace=True),
            ConvLayer(channels, channels, 3), _norm(channels),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class TransformerNet(nn.Module):
    """Johnson et al.'s transformation network as in pytorch/examples `fast_neural_style`.

    encoder: ConvLayer 9x9 3->c, IN, ReLU; 3x3 c->2c stride 2, IN, ReLU; 3x3 2c->4c stride 2, IN, ReLU.
    residuals: `blocks` x (ConvLayer-IN-ReLU-ConvLayer-IN + identity) at 4c channels.
    decoder: 2 x (nearest x2, ConvLayer 3x3, IN, ReLU) 4c->2c->c; ConvLayer 9x9 c->3.
    InstanceNorm2d(affine=True) throughout; c = `channels` (32). pytorch/examples works on 0..255
    images; here values are in [0, 1], which changes no layer.
    """

    arch = "transformer_net"

    def __init__(self, channels: int = 32, blocks: int = 5) -> None:
        super().__init__()
        check_positive(channels=channels, blocks=blocks)
        c = channels
        self.encoder = nn.Sequential(
            ConvLayer(3, c, 9), _norm(c), nn.ReLU(inplace=True),
            ConvLayer(c, 2 * c, 3, stride=2), _norm(2 * c), nn.ReLU(inplace=True),
            ConvLayer(2 * c, 4 * c, 3, stride=2), _norm(4 * c), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.residuals = nn.Sequential(*[InstanceNormResidualBlock(4 * c) for _ in range(blocks)])
        self.decoder = nn.Sequential(
            UpsampleConvLayer(4 * c, 2 * c), _norm(2 * c), nn.ReLU(inplace=True),
            UpsampleConvLayer(2 * c, c), _norm(c), nn.ReLU(inplace=True),
            ConvLayer(c, 3, 9),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.residuals(self.encoder(x)))


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class CroppedResidualBlock(nn.Module):
    """x[..., 2:-2, 2:-2] + (conv3x3 -> BN -> ReLU -> conv3x3 -> BN)(x), both convs unpadded.

    Each unpadded conv trims one pixel per side, so the identity is centre-cropped by 2 per side to
    match (seed 004's `ResSequentialCenter`): the block shrinks its input by 4 in each dimension.
    """

    crop = 2

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn_relu(channels, channels, 3),
            nn.Conv2d(channels, channels, 3, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        c = self.crop
        return x[:, :, c:-c, c:-c] + self.body(x)


class StyleResnet(nn.Module):
    """Seed 004's style network (fast.ai lesson 14), laid out as in Johnson et al. 2016.

    encoder: ReflectionPad(8 * blocks) -> conv 9x9 3->c (pad 4) -> BN -> ReLU -> 2 x [conv 3x3
    stride 2 (pad 1) -> BN -> ReLU] (c->2c->4c). residuals: `blocks` x `CroppedResidualBlock`.
    decoder: 2 x [nearest x2 -> conv 3x3 (pad 1) -> BN -> ReLU] (4c->2c->c) -> conv 9x9 c->3 (pad 4).

    Size arithmetic: the input pad of 8*blocks pixels per side (40 for the seed's 5 blocks) is
    2*blocks per side at quarter resolution, which is exactly what the blocks' 2*blocks unpadded
    convs remove, so for H, W multiples of 4 the output is H x W.

    Differences from the seed's code, following Johnson et al.'s paper as the seed's lecture does:
    BN after the conv and before ReLU (the seed's `conv` applies ReLU, then BN), the residual body
    ends in BN without ReLU (conv-BN-ReLU-conv-BN), and the output conv has a bias and no BN (the
    seed's ends in BatchNorm2d(3), which suited its ImageNet-normalised outputs, not [0, 1] images).
    """

    arch = "style_resnet"

    def __init__(self, channels: int = 32, blocks: int = 5) -> None:
        super().__init__()
        check_positive(channels=channels, blocks=blocks)
        c = channels
        self.encoder = nn.Sequential(
            ReflectionPad(8 * blocks),
            *_conv_bn_relu(3, c, 9, padding=4),
            *_conv_bn_relu(c, 2 * c, 3, stride=2, padding=1),
            *_conv_bn_relu(2 * c, 4 * c, 3, stride=2, padding=1),
        )
        self.residuals = nn.Sequential(*[CroppedResidualBlock(4 * c) for _ in range(blocks)])
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            *_conv_bn_relu(4 * c, 2 * c, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="nearest"),
            *_conv_bn_relu(2 * c, c, 3, padding=1),
            nn.Conv2d(c, 3, 9, padding=4),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.residuals(self.encoder(x)))


STYLE_ARCHS: dict[str, type[nn.Module]] = {
    "transformer_net": TransformerNet,
    "style_resnet": StyleResnet,
}


def create_style_model(arch: str = "transformer_net", **arch_args) -> nn.Module:
    """A style-transfer network by name: `transformer_net` (pytorch/examples) or `style_resnet` (seed
    004); `arch_args` are `channels` (32) and `blocks` (5)."""
    return build_by_name(STYLE_ARCHS, "style-transfer", arch, **arch_args)
