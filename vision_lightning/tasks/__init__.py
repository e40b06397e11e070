from vision_lightning.tasks.base import BaseTask, NetworkTask
from vision_lightning.tasks.classification import ClassifierModule
from vision_lightning.tasks.detection import DetectionModule
from vision_lightning.tasks.features import FeatureExtractModule
from vision_lightning.tasks.knn import KNNClassifierModule
from vision_lightning.tasks.segmentation import SegmentationModule
from vision_lightning.tasks.style import StyleTransferModule
from vision_lightning.tasks.superres import SuperResModule

__all__ = [
    "BaseTask",
    "ClassifierModule",
    "DetectionModule",
    "FeatureExtractModule",
    "KNNClassifierModule",
    "NetworkTask",
    "SegmentationModule",
    "StyleTransferModule",
    "SuperResModule",
]
