"""Losses: segmentation losses by name, feature / perceptual and Gram losses, pixel losses."""

from vision_lightning.losses.feature import (
    FeatureLoss,
    FeatureNetwork,
    StyleLoss,
    gram_matrix,
    total_variation,
)
from vision_lightning.losses.pixel import CharbonnierLoss, build_pixel_loss

__all__ = [
    "CharbonnierLoss",
    "FeatureLoss",
    "FeatureNetwork",
    "StyleLoss",
    "build_pixel_loss",
    "gram_matrix",
    "total_variation",
]
