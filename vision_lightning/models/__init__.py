from vision_lightning.models.detection import DetectorOptions, create_detector
from vision_lightning.models.factory import (
    available_backbones,
    backbone_data_config,
    create_backbone,
    create_feature_pyramid,
)
from vision_lightning.models.heads import build_head
from vision_lightning.models.segmentation import (
    available_architectures,
    create_segmentation_model,
    predict_same_size,
    segmentation_data_config,
)
from vision_lightning.models.style import create_style_model
from vision_lightning.models.superres import create_superres_model, icnr_, load_for_scale
from vision_lightning.models.tiling import tiled_forward
from vision_lightning.models.unet import PaperUNet, UNet

__all__ = [
    "DetectorOptions",
    "PaperUNet",
    "UNet",
    "available_architectures",
    "available_backbones",
    "backbone_data_config",
    "build_head",
    "create_backbone",
    "create_detector",
    "create_feature_pyramid",
    "create_segmentation_model",
    "create_style_model",
    "create_superres_model",
    "icnr_",
    "load_for_scale",
    "predict_same_size",
    "segmentation_data_config",
    "tiled_forward",
]
