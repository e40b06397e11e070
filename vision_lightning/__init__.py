"""vision_lightning: computer-vision training with PyTorch Lightning."""

from vision_lightning.callbacks import PredictionWriter
from vision_lightning.data import (
    ImageClassificationDataModule,
    SegmentationDataModule,
    SyntheticShapes,
    VisionDataModule,
)
from vision_lightning.models import create_backbone, create_segmentation_model
from vision_lightning.tasks import BaseTask, ClassifierModule, SegmentationModule

__version__ = "0.1.0"

__all__ = [
    "BaseTask",
    "ClassifierModule",
    "ImageClassificationDataModule",
    "PredictionWriter",
    "SegmentationDataModule",
    "SegmentationModule",
    "SyntheticShapes",
    "VisionDataModule",
    "create_backbone",
    "create_segmentation_model",
]
