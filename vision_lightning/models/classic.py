"""The small classic networks of the seeds, each split into a backbone and a linear head.

The full network is `backbone -> Linear(num_features, num_classes)`; with 10 classes the parameter
counts are the seeds' own (tests check every one): MNIST perceptron 7,850, MLP 784-100-10 79,510,
one-conv 52,084, two-conv 8,490 (seed 001); CIFAR LeNet 59,386 (seed 001); LeNet-5 62,006 and
with BatchNorm 63,226 (seed 002). `airbench` is a fast CIFAR-10 network after airbench94's ideas
(1,971,650 parameters with 10 classes; `vision_lightning.models.airbench`). The seeds end in (log_)softmax: here the network returns logits
and the loss applies the softmax, which avoids the seeds' double softmax.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from vision_lightning.models.airbench import airbench_layers
from vision_lightning.utils.errors import InputError


class FixedInputBackbone(nn.Sequential):
    """A backbone whose flattened features fix its input size; checks the input with a clear error."""

    def __init__(self, name: str, input_size: tuple[int, int, int], *layers: nn.Module) -> None:
        super().__init__(*layers)
        self.backbone_name = name
        self.input_size = input_size

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.input_size:
            c, h, w = self.input_size
            raise InputError(
                f"backbone {self.backbone_name!r} takes {c}x{h}x{w} images but got "
                f"{'x'.join(map(str, x.shape[1:]))}: set data image_size: {h} and channels: {c}"
            )
        return super().forward(x)


@dataclass(frozen=True)
class ClassicNet:
    build: Callable[[int], list[nn.Module]]  # in_channels -> layers
    num_features: int
    input_size: tuple[int, int]  # H, W
    in_channels: int  # the seed's own


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(2)


CLASSIC_NETS: dict[str, ClassicNet] = {
    # seed 001: Flatten-Linear(784, 10)
    "mnist_perceptron": ClassicNet(lambda c: [nn.Flatten()], 784, (28, 28), 1),
    # seed 001: 784-100-10 with ReLU
    "mnist_mlp": ClassicNet(lambda c: [nn.Flatten(), nn.Linear(784 * c, 100), nn.ReLU()], 100, (28, 28), 1),
    # seed 001: nine 5x5 filters, ReLU, Linear(5184, 10)
    "mnist_conv1": ClassicNet(lambda c: [nn.Conv2d(c, 9, 5), nn.ReLU(), nn.Flatten()], 5184, (28, 28), 1),
    # seed 001: conv(10)-pool-conv(20)-pool, Linear(320, 10)
    "mnist_conv2": ClassicNet(
        lambda c: [
            nn.Conv2d(c, 10, 5), nn.ReLU(), _pool(),
            nn.Conv2d(10, 20, 5), nn.ReLU(), _pool(),
            nn.Flatten(),
        ],
        320, (28, 28), 1,
    ),
    # seed 001: CIFAR LeNet, conv 6-16-120, fc 64-10
    "cifar_lenet": ClassicNet(
        lambda c: [
            nn.Conv2d(c, 6, 5), nn.ReLU(), _pool(),
            nn.Conv2d(6, 16, 5), nn.ReLU(), _pool(),
            nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten(),
            nn.Linear(120, 64), nn.ReLU(),
        ],
        64, (32, 32), 3,
    ),
    # seed 002: LeNet-5, conv 6-16, fc 120-84-10
    "lenet5": ClassicNet(
        lambda c: [
            nn.Conv2d(c, 6, 5), nn.ReLU(), _pool(),
            nn.Conv2d(6, 16, 5), nn.ReLU(), _pool(),
            nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
        ],
        84, (32, 32), 3,
    ),
    # seed 002: LeNet-5 with BN2d after pool1, BN1d on the 400 flattened features and after fc120/fc84
    "lenet5_bn": ClassicNet(
        lambda c: [
            nn.Conv2d(c, 6, 5), nn.ReLU(), _pool(), nn.BatchNorm2d(6),
            nn.Conv2d(6, 16, 5), nn.ReLU(), _pool(),
            nn.Flatten(), nn.BatchNorm1d(400),
            nn.Linear(400, 120), nn.ReLU(), nn.BatchNorm1d(120),
            nn.Linear(120, 84), nn.ReLU(), nn.BatchNorm1d(84),
        ],
        84, (32, 32), 3,
    ),
    # airbench94's ideas: whitening 2x2 conv, three conv-BN-GELU blocks 64-256-256 (models/airbench.py)
    "airbench": ClassicNet(airbench_layers, 256, (32, 32), 3),
}  # fmt: skip


def create_classic_backbone(name: str, in_channels: int | None = None) -> tuple[nn.Module, int]:
    """(backbone, num_features) of a classic net; `in_channels` defaults to the seed's own."""
    spec = CLASSIC_NETS[name]
    channels = spec.in_channels if in_channels is None else in_channels
    num_features = spec.num_features * channels if name == "mnist_perceptron" else spec.num_features
    backbone = FixedInputBackbone(name, (channels, *spec.input_size), *spec.build(channels))
    return backbone, num_features
