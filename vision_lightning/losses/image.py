"""The losses of the image-to-image tasks, built from a name and arguments in YAML.

Every loss here returns `(total, parts)`: the parts are the weighted terms, logged one by one so a
user can balance them (seed 004 prints them). The feature losses' network is frozen and never enters
an optimizer; its ImageNet weights come by download (`feature_pretrained`) or from a local file
(`feature_weights`).
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import Tensor, nn

from vision_lightning.losses.feature import FeatureLoss, StyleLoss
from vision_lightning.losses.pixel import build_pixel_loss
from vision_lightning.utils.errors import DownloadError, InputError
from vision_lightning.utils.precision import in_float32

SUPERRES_LOSSES = ("l1", "mse", "charbonnier", "feature")


class PixelLoss(nn.Module):
    """A pixel loss (`l1`, `mse`, `charbonnier`) in the `(total, parts)` form of the feature losses."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__()
        self.name = name
        self.loss = build_pixel_loss(name, **kwargs)

    @in_float32
    def forward(self, prediction: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        loss = self.loss(prediction, target)
        return loss, {self.name: loss}


def build_feature_loss(
    loss_class: type[FeatureLoss] | type[StyleLoss], pretrained: bool, weights: str | None, **kwargs: Any
) -> nn.Module:
    """`loss_class(**kwargs)` with the network weights named the task's way; the warning about random
    features is kept on the loss (`random_features_warning`) for the task to give when it trains, not
    when a checkpoint is loaded only to predict."""
    network = kwargs.get("network", "the default network")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            loss = loss_class(pretrained=pretrained, weights=weights, **kwargs)
    except DownloadError:
        raise DownloadError(
            f"could not download ImageNet weights for the feature loss's network {network!r}; without "
            "internet access pass feature_weights: path/to/weights.pth (a torchvision state dict of it), "
            "or feature_pretrained: false for random features (tests only)"
        ) from None
    except TypeError as error:
        raise InputError(f"loss_args do not fit {loss_class.__name__}: {error}") from None
    for warning in caught:
        if "random" in str(warning.message):
            loss.random_features_warning = str(warning.message)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return loss


def warn_if_random_features(loss: nn.Module) -> None:
    message = getattr(loss, "random_features_warning", None)
    if message:
        warnings.warn(message, UserWarning, stacklevel=2)


def build_superres_loss(
    name: str, loss_args: dict[str, Any] | None, feature_pretrained: bool, feature_weights: str | None
) -> nn.Module:
    args = dict(loss_args or {})
    if name == "feature":
        return build_feature_loss(FeatureLoss, feature_pretrained, feature_weights, **args)
    if name not in SUPERRES_LOSSES:
        raise InputError(f"loss must be one of {', '.join(SUPERRES_LOSSES)}, got {name!r}")
    try:
        return PixelLoss(name, **args)
    except TypeError as error:
        raise InputError(f"loss_args do not fit the {name} loss: {error}") from None
