from vision_lightning.tasks.base import BaseTask
from vision_lightning.tasks.classification import ClassifierModule
from vision_lightning.tasks.segmentation import SegmentationModule

__all__ = ["BaseTask", "ClassifierModule", "SegmentationModule"]
