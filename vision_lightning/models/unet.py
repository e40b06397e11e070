"""The two classic U-Nets of the seeds, split like segmentation-models-pytorch models.

`UNet` is the U-Net of the milesial/Pytorch-UNet tutorial (seed 003): 3x3 convs are *padded* and
followed by BatchNorm, so the output has the input's size (odd sizes are handled by padding the
upsampled map to its skip's size). By default it upsamples with parameter-free bilinear
interpolation and the bottom level keeps 512 channels, which makes it lighter than the paper's
(13,394,177 parameters for one input channel and one class); `bilinear=False` learns 2x2 transposed
convs instead (1,393,600 parameters more).

`PaperUNet` is the original U-Net of Ronneberger et al. 2015 (seed 000): *unpadded* 3x3 convs without
BatchNorm, transposed-conv upsampling and centre-cropped skips, so every conv trims 2 pixels and
the output is smaller than the input (572x572 -> 388x388); only some input sizes are valid, see
`PaperUNet.output_size` and `PaperUNet.valid_input_size`.

Both have `encoder` (returns the 5 feature maps), `decoder` (feature maps -> last feature map) and
`segmentation_head` (1x1 conv to the class logits), so a task can freeze the encoder alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision_lightning.utils.errors import InputError


class DoubleConv(nn.Sequential):
    """(3x3 conv -> [BatchNorm] -> ReLU) x 2; padded with BatchNorm, or unpadded without (paper)."""

    def __init__(self, in_channels: int, out_channels: int, padded: bool = True) -> None:
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers.append(nn.Conv2d(c_in, out_channels, kernel_size=3, padding=1 if padded else 0))
            if padded:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class Down(nn.Sequential):
    """2x2 max pooling, then a double conv."""

    def __init__(self, in_channels: int, out_channels: int, padded: bool = True) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, padded))


class Encoder(nn.Module):
    """A double conv and 4 downsamplings; returns the 5 feature maps, finest first."""

    def __init__(self, in_channels: int, channels: list[int], padded: bool = True) -> None:
        super().__init__()
        self.inc = DoubleConv(in_channels, channels[0], padded)
        self.down1 = Down(channels[0], channels[1], padded)
        self.down2 = Down(channels[1], channels[2], padded)
        self.down3 = Down(channels[2], channels[3], padded)
        self.down4 = Down(channels[3], channels[4], padded)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = [self.inc(x)]
        for down in (self.down1, self.down2, self.down3, self.down4):
            features.append(down(features[-1]))
        return features


class Up(nn.Module):
    """Tutorial up step: upsample x2, pad to the skip's size, cat([skip, upsampled]), double conv."""

    def __init__(self, in_channels: int, out_channels: int, bilinear: bool = True) -> None:
        super().__init__()
        if bilinear:
            self.up: nn.Module = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        else:
            self.up = nn.ConvTranspose2d(in_channels // 2, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        dy, dx = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
        x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([skip, x], dim=1))


class UNetDecoder(nn.Module):
    """The tutorial decoder: 4 up steps from the bottom feature map back to full resolution."""

    def __init__(self, base_channels: int, bilinear: bool = True) -> None:
        super().__init__()
        b = base_channels
        self.up1 = Up(16 * b, 4 * b, bilinear)
        self.up2 = Up(8 * b, 2 * b, bilinear)
        self.up3 = Up(4 * b, b, bilinear)
        self.up4 = Up(2 * b, b, bilinear)

    def forward(self, features: list[Tensor]) -> Tensor:
        x1, x2, x3, x4, x = features
        for up, skip in ((self.up1, x4), (self.up2, x3), (self.up3, x2), (self.up4, x1)):
            x = up(x, skip)
        return x


class UNet(nn.Module):
    """The padded U-Net of the milesial/Pytorch-UNet tutorial (seed 003): logits of the input's size."""

    output_stride = 16  # input sides that are multiples of this need no padding

    def __init__(
        self, in_channels: int = 1, classes: int = 1, bilinear: bool = True, base_channels: int = 64
    ) -> None:
        super().__init__()
        b = base_channels
        self.encoder = Encoder(in_channels, [b, 2 * b, 4 * b, 8 * b, 8 * b])
        self.decoder = UNetDecoder(b, bilinear)
        self.segmentation_head = nn.Conv2d(b, classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[2:]) < self.output_stride:
            raise InputError(
                f"UNet needs images of at least {self.output_stride}x{self.output_stride} pixels "
                f"but got {x.shape[2]}x{x.shape[3]}"
            )
        return self.segmentation_head(self.decoder(self.encoder(x)))


def _center_crop(x: Tensor, height: int, width: int) -> Tensor:
    top, left = (x.shape[2] - height) // 2, (x.shape[3] - width) // 2
    return x[:, :, top : top + height, left : left + width]


def _paper_output_side(side: int) -> int | None:
    """The paper U-Net's output side for an input side, or None if some layer cannot take it."""
    for _ in range(4):  # encoder: double conv (-4), then 2x2 pooling of an even side
        side -= 4
        if side < 2 or side % 2:
            return None
        side //= 2
    side -= 4  # bottom double conv
    for _ in range(4):  # decoder: 2x2 up-conv (x2), double conv (-4)
        if side < 1:
            return None
        side = 2 * side - 4
    return side if side >= 1 else None


class PaperUNetDecoder(nn.Module):
    """The paper decoder: 2x2 up-conv halving the channels, cat([upsampled, cropped skip]), double conv."""

    def __init__(self, base_channels: int) -> None:
        super().__init__()
        channels = [
            16 * base_channels,
            8 * base_channels,
            4 * base_channels,
            2 * base_channels,
            base_channels,
        ]
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2)
            for c_in, c_out in zip(channels, channels[1:])
        )
        self.convs = nn.ModuleList(
            DoubleConv(c_in, c_out, padded=False) for c_in, c_out in zip(channels, channels[1:])
        )

    def forward(self, features: list[Tensor]) -> Tensor:
        *skips, x = features
        for up, conv, skip in zip(self.ups, self.convs, reversed(skips)):
            x = up(x)
            x = conv(torch.cat([x, _center_crop(skip, x.shape[2], x.shape[3])], dim=1))
        return x


class PaperUNet(nn.Module):
    """The unpadded U-Net of Ronneberger et al. 2015 (seed 000): 572x572 in, 388x388 out."""

    output_stride = 16  # valid input sides are 16 apart

    def __init__(self, in_channels: int = 1, classes: int = 2, base_channels: int = 64) -> None:
        super().__init__()
        b = base_channels
        self.encoder = Encoder(in_channels, [b, 2 * b, 4 * b, 8 * b, 16 * b], padded=False)
        self.decoder = PaperUNetDecoder(b)
        self.segmentation_head = nn.Conv2d(b, classes, kernel_size=1)

    @staticmethod
    def output_size(input_size: int) -> int:
        """The output side for an input side; raises `InputError` if the side is invalid."""
        output = _paper_output_side(input_size)
        if output is None:
            raise InputError(
                f"PaperUNet cannot take an input side of {input_size} (a feature map side is odd before a "
                f"pooling, or the input is too small): use {PaperUNet.valid_input_size(input_size)}; valid "
                f"sides are {PaperUNet.output_stride} apart"
            )
        return output

    @staticmethod
    def valid_input_size(at_least: int) -> int:
        """The smallest valid input side >= `at_least` (572 for 570)."""
        side = at_least
        while _paper_output_side(side) is None:
            side += 1
        return side

    def forward(self, x: Tensor) -> Tensor:
        for side in x.shape[2:]:
            self.output_size(side)
        return self.segmentation_head(self.decoder(self.encoder(x)))
