from vision_lightning.callbacks.backbone_freeze_unfreeze import BackboneFreezeUnfreeze
from vision_lightning.callbacks.batch_mixing import BatchMixing
from vision_lightning.callbacks.checkpoint import ModelCheckpoint
from vision_lightning.callbacks.feature_maps import FeatureMapLogger
from vision_lightning.callbacks.lr_finder import LRFinder
from vision_lightning.callbacks.patch_whitening import PatchWhitening
from vision_lightning.callbacks.prediction_writer import PredictionWriter
from vision_lightning.callbacks.progress_bar import ThrottledProgressBar
from vision_lightning.callbacks.progressive_resizing import ProgressiveResizing, ResizeStage

__all__ = [
    "BackboneFreezeUnfreeze",
    "BatchMixing",
    "FeatureMapLogger",
    "LRFinder",
    "ModelCheckpoint",
    "PatchWhitening",
    "PredictionWriter",
    "ProgressiveResizing",
    "ResizeStage",
    "ThrottledProgressBar",
]
