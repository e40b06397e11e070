from vision_lightning.data.base import VisionDataModule
from vision_lightning.data.classification import ImageClassificationDataModule
from vision_lightning.data.splits import stratified_folds, stratified_split, write_folds
from vision_lightning.data.synthetic import SyntheticShapes, write_image_folder

__all__ = [
    "ImageClassificationDataModule",
    "SyntheticShapes",
    "VisionDataModule",
    "stratified_folds",
    "stratified_split",
    "write_folds",
    "write_image_folder",
]
