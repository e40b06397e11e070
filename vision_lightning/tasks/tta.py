"""Test-time augmentation (`tta: true` on a task): `test` and `predict` (and `predict_images` /
`predict_to_folder`) average the network's outputs over geometric copies of each image, each output
transformed back exactly onto the original's pixel grid before averaging.

- classification: softmax / sigmoid probabilities over the image and its horizontal flip;
- segmentation: per-pixel probabilities over the image and its horizontal flip, each flipped back;
- super-resolution: EDSR's x8 self-ensemble ("+" models): the 4 rotations of the image and of its
  flip, each SR output rotated and flipped back, averaged as images;
- style transfer has none: a stylised image is a texture, not an estimate, and the mean of the
  stylisations of flipped copies is a blur of their brush strokes, with no figure it improves;
  features and KNN have none.

Validation stays plain (it runs every epoch; TTA costs 2x or 8x the forward passes), so checkpoint
selection follows the plain network. Test metrics are logged under their usual names: the run's
config (`model.init_args.tta`) says whether TTA was on. The loss of an averaged classification or
segmentation output is that of the averaged probabilities (they are turned back into logits whose
softmax / sigmoid gives them, so losses, metrics and thresholds apply unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

Transform = Callable[[Tensor], Tensor]
#: (transform of the input, the inverse applied to the output), on the last two dimensions (H, W)
Pair = tuple[Transform, Transform]


def _identity(x: Tensor) -> Tensor:
    return x


def _hflip(x: Tensor) -> Tensor:
    return x.flip(-1)


def flips(spatial_outputs: bool = True) -> list[Pair]:
    """The image and its horizontal flip (a flip is its own inverse). Outputs without a pixel grid
    (class scores: `spatial_outputs=False`) are left as they are."""
    return [(_identity, _identity), (_hflip, _hflip if spatial_outputs else _identity)]


def _dihedral(turns: int, flip: bool) -> Pair:
    def forward(x: Tensor) -> Tensor:
        return torch.rot90(x.flip(-1) if flip else x, turns, dims=(-2, -1))

    def inverse(y: Tensor) -> Tensor:
        y = torch.rot90(y, -turns, dims=(-2, -1))
        return y.flip(-1) if flip else y

    return forward, inverse


def dihedral() -> list[Pair]:
    """The 8 symmetries of the square: 4 rotations (by 90 degrees) of the image and of its flip."""
    return [_dihedral(turns, flip) for flip in (False, True) for turns in range(4)]


def augmented_mean(forward: Callable[[Tensor], Tensor], images: Tensor, pairs: Sequence[Pair]) -> Tensor:
    """The mean over `pairs` of `inverse(forward(transform(images)))`."""
    total = None
    for transform, inverse in pairs:
        output = inverse(forward(transform(images)).float())
        total = output if total is None else total + output
    return total / len(pairs)


Activation = Literal["softmax", "sigmoid"]


def averaged_logits(
    logits_of: Callable[[Tensor], Tensor], images: Tensor, pairs: Sequence[Pair], activation: Activation
) -> Tensor:
    """Logits whose softmax (over dim 1) / sigmoid is the mean over `pairs` of the probabilities of
    `logits_of`, each transformed back: log(p) for softmax, logit(p) for sigmoid (clamped off 0 and 1
    so that losses stay finite)."""

    def probabilities(x: Tensor) -> Tensor:
        logits = logits_of(x).float()
        return logits.softmax(dim=1) if activation == "softmax" else torch.sigmoid(logits)

    mean = augmented_mean(probabilities, images, pairs)
    tiny = torch.finfo(mean.dtype).tiny
    if activation == "softmax":
        return mean.clamp_min(tiny).log()
    eps = torch.finfo(mean.dtype).eps
    return torch.logit(mean, eps=eps)
