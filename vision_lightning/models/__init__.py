from vision_lightning.models.factory import available_backbones, create_backbone
from vision_lightning.models.heads import build_head
from vision_lightning.models.segmentation import (
    available_architectures,
    create_segmentation_model,
    predict_same_size,
)
from vision_lightning.models.unet import PaperUNet, UNet

__all__ = [
    "PaperUNet",
    "UNet",
    "available_architectures",
    "available_backbones",
    "build_head",
    "create_backbone",
    "create_segmentation_model",
    "predict_same_size",
]
