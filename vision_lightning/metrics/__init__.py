from vision_lightning.metrics.segmentation import SegmentationScores

__all__ = ["SegmentationScores"]
