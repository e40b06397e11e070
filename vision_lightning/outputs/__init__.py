"""Prediction outputs: each task's `prediction_sink` returns one of these, and the PredictionWriter
callback feeds it every predict batch."""

from vision_lightning.outputs.boxes import BoxSink
from vision_lightning.outputs.embeddings import EmbeddingSink, embedding_file_name
from vision_lightning.outputs.files import BatchNames, CsvSink, PredictionSink, UniqueNames, save_png
from vision_lightning.outputs.images import ImageSink
from vision_lightning.outputs.masks import MaskSink

__all__ = [
    "BatchNames",
    "BoxSink",
    "CsvSink",
    "EmbeddingSink",
    "ImageSink",
    "MaskSink",
    "PredictionSink",
    "UniqueNames",
    "embedding_file_name",
    "save_png",
]
