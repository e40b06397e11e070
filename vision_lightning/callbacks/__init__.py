from vision_lightning.callbacks.checkpoint import ModelCheckpoint
from vision_lightning.callbacks.prediction_writer import CsvSink, PredictionWriter

__all__ = ["CsvSink", "ModelCheckpoint", "PredictionWriter"]
