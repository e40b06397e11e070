"""What every DataModule of the project shares: `image_size`, `batch_size` and the loader settings.

`image_size` and `batch_size` are plain attributes that callbacks (progressive resizing) may change
between epochs; transforms are built when a loader is built, so a new loader sees the new size.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset

from vision_lightning.data.datasets import collate
from vision_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vision_lightning.utils.errors import InputError


class VisionDataModule(pl.LightningDataModule):
    def __init__(
        self,
        image_size: int = 224,
        batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if image_size < 1 or batch_size < 1:
            raise InputError(f"image_size and batch_size must be positive, got {image_size} and {batch_size}")
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.mean = mean
        self.std = std

    def _loader(self, dataset: Dataset, train: bool = False) -> DataLoader:
        size = len(dataset)  # type: ignore[arg-type]
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            collate_fn=collate,
            shuffle=train,
            # A last batch of one sample breaks BatchNorm in training; drop the ragged end then.
            drop_last=train and size > self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory
            and self.trainer is not None
            and self.trainer.strategy.root_device.type == "cuda",
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )
