from vision_lightning.tasks.base import BaseTask
from vision_lightning.tasks.classification import ClassifierModule

__all__ = ["BaseTask", "ClassifierModule"]
