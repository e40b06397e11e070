from vision_lightning.callbacks.prediction_writer import CsvSink, PredictionWriter

__all__ = ["CsvSink", "PredictionWriter"]
