"""vision_lightning: computer-vision training with PyTorch Lightning."""

from vision_lightning.callbacks import PredictionWriter
from vision_lightning.data import ImageClassificationDataModule, SyntheticShapes, VisionDataModule
from vision_lightning.models import create_backbone
from vision_lightning.tasks import BaseTask, ClassifierModule

__version__ = "0.1.0"

__all__ = [
    "BaseTask",
    "ClassifierModule",
    "ImageClassificationDataModule",
    "PredictionWriter",
    "SyntheticShapes",
    "VisionDataModule",
    "create_backbone",
]
