from vision_lightning.data.base import VisionDataModule
from vision_lightning.data.classification import ImageClassificationDataModule
from vision_lightning.data.segmentation import SegmentationDataModule
from vision_lightning.data.splits import group_split, stratified_folds, stratified_split, write_folds
from vision_lightning.data.synthetic import SyntheticShapes, write_image_folder

__all__ = [
    "ImageClassificationDataModule",
    "SegmentationDataModule",
    "SyntheticShapes",
    "VisionDataModule",
    "group_split",
    "stratified_folds",
    "stratified_split",
    "write_folds",
    "write_image_folder",
]
