"""FeatureMapLogger: first-layer filters and feature maps as pictures, during fit and predict, for
the feature extractor, the classifier and the segmenter; sizes checked on what the loggers get."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import cpu_trainer
from vision_lightning import (
    ClassifierModule,
    FeatureExtractModule,
    FeatureMapLogger,
    ImageClassificationDataModule,
    SegmentationDataModule,
    SegmentationModule,
)
from vision_lightning.callbacks.feature_maps import PAD, feature_map_grid, filter_grid, tile_scale
from vision_lightning.data import segmentation_sources as seg
from vision_lightning.data.classification_sources import SyntheticShapes
from vision_lightning.utils.errors import InputError


class ImageRecorder(Logger):
    """A logger that keeps every image it is sent, by tag."""

    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, list[np.ndarray]] = {}

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics, step=None) -> None:
        pass

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_image(self, key: str, images: list[np.ndarray], step: int | None = None) -> None:
        self.images.setdefault(key, []).append(images[0])


def _grid_size(rows: int, columns: int, tile: int) -> tuple[int, int, int]:
    return PAD + rows * (tile + PAD), PAD + columns * (tile + PAD), 3


def _shapes(count: int, image_size: int = 32) -> ImageClassificationDataModule:
    return ImageClassificationDataModule(
        SyntheticShapes(count, num_classes=2), image_size=image_size, batch_size=4
    )


def test_predict_logs_filters_and_maps_once(tmp_path: Path):
    recorder = ImageRecorder()
    callback = FeatureMapLogger(layers=["layer1", "layer3"], num_images=3, max_channels=4)
    model = FeatureExtractModule("resnet18")
    cpu_trainer(logger=recorder, callbacks=[callback]).predict(model, _shapes(12), return_predictions=False)

    assert sorted(recorder.images) == ["features/filters", "features/layer1", "features/layer3"]
    assert all(len(images) == 1 for images in recorder.images.values())  # the first batch only
    # 64 RGB 7x7 filters, 8 x 8 tiles of 7 * 4 = 28 px
    assert recorder.images["features/filters"][0].shape == _grid_size(8, 8, 28)
    # rows = 3 images; columns = the image + 4 channels; 32 px input: layer1 8x8 -> 48 px tiles, layer3 2x2 -> 48
    assert recorder.images["features/layer1"][0].shape == _grid_size(3, 5, 8 * tile_scale(8, 8, 48))
    assert recorder.images["features/layer3"][0].shape == _grid_size(3, 5, 2 * tile_scale(2, 2, 48))


def test_fit_logs_every_validation_epoch_but_not_the_sanity_check():
    recorder = ImageRecorder()
    callback = FeatureMapLogger(layers=["3"], num_images=2, max_channels=32)
    model = ClassifierModule("cifar_lenet", num_classes=2, log_images=0)
    trainer = cpu_trainer(logger=recorder, callbacks=[callback], max_epochs=2, num_sanity_val_steps=1)
    trainer.fit(model, _shapes(16))
    maps = recorder.images["features/3"]
    assert len(maps) == 2 and len(recorder.images["features/filters"]) == 2
    # conv2 of the LeNet: 16 maps of 10x10 for 32 px input, all shown (max_channels 32)
    assert maps[0].shape == _grid_size(2, 17, 10 * tile_scale(10, 10, 48))
    # 6 RGB 5x5 filters: 2 rows of 3
    assert recorder.images["features/filters"][0].shape == _grid_size(2, 3, 5 * tile_scale(5, 5, 24))


def test_segmentation_layers_resolve_in_the_encoder_then_the_module(tmp_path: Path):
    recorder = ImageRecorder()
    model = SegmentationModule("Unet", encoder="tu-test_resnet", log_images=0,
                               arch_args={"encoder_depth": 3, "decoder_channels": [16, 8, 4]})  # fmt: skip
    data = SegmentationDataModule(source=seg.SyntheticShapes(8), image_size=32, batch_size=4)
    callback = FeatureMapLogger(layers=["model.layer1", "model.decoder"], num_images=1, filters=False)
    cpu_trainer(logger=recorder, callbacks=[callback]).predict(model, data, return_predictions=False)
    assert sorted(recorder.images) == ["features/model.decoder", "features/model.layer1"]
    decoder = recorder.images["features/model.decoder"][0]  # 4 channels at full size (32 px)
    assert decoder.shape == _grid_size(1, 5, 32 * tile_scale(32, 32, 48))


def test_tensorboard_receives_the_pictures(tmp_path: Path):
    logger = TensorBoardLogger(str(tmp_path), name="run")
    callback = FeatureMapLogger(layers=["0"], num_images=1, max_channels=2)
    cpu_trainer(logger=logger, callbacks=[callback]).predict(
        FeatureExtractModule("cifar_lenet"), _shapes(4), return_predictions=False
    )
    events = EventAccumulator(str(tmp_path / "run/version_0"), size_guidance={"images": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == {"features/filters", "features/0"}
    image = events.Images("features/0")[0]
    assert (image.height, image.width) == _grid_size(1, 3, 28 * tile_scale(28, 28, 48))[:2]


def test_filter_and_map_grids_stretch_each_tile():
    weight = torch.randn(6, 1, 5, 5) * torch.arange(1, 7).view(6, 1, 1, 1)  # filters of different scales
    grid = filter_grid(weight, min_tile=5)
    assert grid.shape == _grid_size(2, 3, 5)
    tiles = [
        grid[PAD + r * 7 : PAD + r * 7 + 5, PAD + c * 7 : PAD + c * 7 + 5, 0]
        for r in range(2)
        for c in range(3)
    ]
    assert all(tile.min() == 0 and tile.max() == 255 for tile in tiles)  # grey, each on its own range
    maps = torch.rand(2, 3, 4, 4)
    grid = feature_map_grid(np.zeros((2, 8, 8, 3), np.uint8), maps, max_channels=2, min_tile=8)
    assert grid.shape == _grid_size(2, 3, 8)


def test_bad_layer_names_and_no_logger():
    model = FeatureExtractModule("cifar_lenet")
    trainer = cpu_trainer(logger=ImageRecorder(), callbacks=[FeatureMapLogger(layers=["conv9"])])
    with pytest.raises(
        InputError, match=r"layer 'conv9' is in neither the backbone nor FeatureExtractModule.*0, 1, 2"
    ):
        trainer.predict(model, _shapes(4), return_predictions=False)
    # no logger: nothing drawn, nothing fails
    cpu_trainer(callbacks=[FeatureMapLogger(layers=["0"])]).predict(
        model, _shapes(4), return_predictions=False
    )
