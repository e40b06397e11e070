from vision_lightning.data.base import LoaderOptions, VisionDataModule
from vision_lightning.data.classification import ImageClassificationDataModule
from vision_lightning.data.classification_sources import (
    ClassificationSource,
    CsvLabels,
    ImageFolder,
    TorchvisionDataset,
)
from vision_lightning.data.detection import DetectionDataModule
from vision_lightning.data.detection_sources import (
    CocoJson,
    DetectionSource,
    SyntheticBoxes,
    VocXml,
    YoloFolders,
)
from vision_lightning.data.detection_synthetic import write_yolo_dataset
from vision_lightning.data.detection_transforms import BoxAugment
from vision_lightning.data.embeddings import EmbeddingDataModule
from vision_lightning.data.segmentation import SegmentationDataModule
from vision_lightning.data.segmentation_sources import MaskFolders, PaletteMasks, RleCsv, SegmentationSource
from vision_lightning.data.splits import group_split, stratified_folds, stratified_split, write_folds
from vision_lightning.data.streaming_sources import StreamingClassification, StreamingSegmentation
from vision_lightning.data.style import StyleTransferDataModule
from vision_lightning.data.style_sources import ContentFolders, ContentSource, SyntheticTextureContent
from vision_lightning.data.superres import SuperResDataModule
from vision_lightning.data.superres_sources import SuperResFolders, SuperResSource, SyntheticTextureImages
from vision_lightning.data.synthetic import ShapeImages, write_image_folder
from vision_lightning.data.textures import SyntheticTextures

__all__ = [
    "ClassificationSource",
    "ContentFolders",
    "ContentSource",
    "CsvLabels",
    "EmbeddingDataModule",
    "ImageClassificationDataModule",
    "ImageFolder",
    "LoaderOptions",
    "MaskFolders",
    "PaletteMasks",
    "RleCsv",
    "SegmentationDataModule",
    "SegmentationSource",
    "ShapeImages",
    "StreamingClassification",
    "StreamingSegmentation",
    "StyleTransferDataModule",
    "SuperResDataModule",
    "SuperResFolders",
    "SuperResSource",
    "SyntheticTextureContent",
    "SyntheticTextureImages",
    "SyntheticTextures",
    "TorchvisionDataset",
    "VisionDataModule",
    "group_split",
    "stratified_folds",
    "stratified_split",
    "write_folds",
    "write_image_folder",
    "BoxAugment",
    "CocoJson",
    "DetectionDataModule",
    "DetectionSource",
    "SyntheticBoxes",
    "VocXml",
    "YoloFolders",
    "write_yolo_dataset",
]
