"""vision_lightning: computer-vision training with PyTorch Lightning."""

from vision_lightning.callbacks import (
    BackboneFreezeUnfreeze,
    BatchMixing,
    FeatureMapLogger,
    LRFinder,
    PatchWhitening,
    PredictionWriter,
    ProgressiveResizing,
    ResizeStage,
)
from vision_lightning.data import (
    EmbeddingDataModule,
    ImageClassificationDataModule,
    SegmentationDataModule,
    ShapeImages,
    StyleTransferDataModule,
    SuperResDataModule,
    SyntheticTextures,
    VisionDataModule,
)
from vision_lightning.export import export_task
from vision_lightning.losses import FeatureLoss, FeatureNetwork, StyleLoss
from vision_lightning.models import (
    create_backbone,
    create_segmentation_model,
    create_style_model,
    create_superres_model,
)
from vision_lightning.optim import OneCycleLR, WarmupCosineLR, parameter_groups
from vision_lightning.tasks import (
    BaseTask,
    ClassifierModule,
    FeatureExtractModule,
    KNNClassifierModule,
    SegmentationModule,
    StyleTransferModule,
    SuperResModule,
)
from vision_lightning.utils.errors import CheckpointError, DownloadError, InputError, MissingInputError

__version__ = "0.1.0"

__all__ = [
    "BackboneFreezeUnfreeze",
    "BaseTask",
    "BatchMixing",
    "CheckpointError",
    "ClassifierModule",
    "EmbeddingDataModule",
    "DownloadError",
    "FeatureExtractModule",
    "FeatureMapLogger",
    "FeatureLoss",
    "FeatureNetwork",
    "ImageClassificationDataModule",
    "OneCycleLR",
    "WarmupCosineLR",
    "parameter_groups",
    "InputError",
    "KNNClassifierModule",
    "LRFinder",
    "MissingInputError",
    "PatchWhitening",
    "PredictionWriter",
    "ProgressiveResizing",
    "ResizeStage",
    "SegmentationDataModule",
    "SegmentationModule",
    "ShapeImages",
    "StyleLoss",
    "StyleTransferDataModule",
    "StyleTransferModule",
    "SuperResDataModule",
    "SuperResModule",
    "SyntheticTextures",
    "VisionDataModule",
    "create_backbone",
    "create_segmentation_model",
    "create_style_model",
    "create_superres_model",
    "export_task",
]
