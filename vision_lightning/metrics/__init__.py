from vision_lightning.metrics.segmentation import SegmentationScores
from vision_lightning.metrics.superres import SuperResScores

__all__ = ["SegmentationScores", "SuperResScores"]
