"""Detection batches of the batch contract for the task's tests: generated images with filled
rectangles (class 0 red, class 1 blue) letterboxed to `image_size`, and a small data module whose
loaders follow its `image_size` (as ProgressiveResizing changes it)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vision_lightning.utils.letterbox import to_input

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
CLASS_NAMES = ["red", "blue"]
COLOURS = [(230, 40, 40), (40, 60, 230)]


def rectangle_image(
    seed: int, height: int = 60, width: int = 80
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(HWC uint8 image, boxes (k, 4) xyxy original pixels, labels (k,)) with 1-2 rectangles."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, 3))):
        w, h = int(rng.integers(width // 4, width // 2)), int(rng.integers(height // 4, height // 2))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        label = int(rng.integers(0, 2))
        image[y : y + h, x : x + w] = COLOURS[label]
        boxes.append([x, y, x + w, y + h])
        labels.append(label)
    return image, np.array(boxes, dtype=np.float32), np.array(labels, dtype=np.int64)


def contract_item(
    image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, image_size: int, path: str
) -> dict:
    """One item of the detection contract: the image letterboxed to `image_size`, its boxes mapped
    into input pixels."""
    tensor, _, scale = to_input(image, image_size, "letterbox", MEAN, STD)
    sx, sy, pad_x, pad_y = scale.tolist()
    moved = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4) * torch.tensor([sx, sy, sx, sy])
    moved += torch.tensor([pad_x, pad_y, pad_x, pad_y])
    return {
        "image": tensor,
        "boxes": moved,
        "labels": torch.as_tensor(labels, dtype=torch.int64),
        "path": path,
        "size": torch.tensor(image.shape[:2]),
        "scale": scale,
    }


def collate(items: list[dict]) -> dict:
    batch = {
        "image": torch.stack([item["image"] for item in items]),
        "path": [item["path"] for item in items],
        "size": torch.stack([item["size"] for item in items]),
        "scale": torch.stack([item["scale"] for item in items]),
    }
    if "boxes" in items[0]:
        batch["boxes"] = [item["boxes"] for item in items]
        batch["labels"] = [item["labels"] for item in items]
    return batch


class Rectangles(Dataset):
    def __init__(self, count: int, image_size: int, seed: int = 0, predict: bool = False) -> None:
        self.count, self.image_size, self.seed, self.predict = count, image_size, seed, predict

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        image, boxes, labels = rectangle_image(self.seed + index)
        item = contract_item(image, boxes, labels, self.image_size, f"rect_{self.seed + index:03d}.png")
        if self.predict:
            del item["boxes"], item["labels"]
        return item

    def save(self, folder: Path) -> list[Path]:
        """The original images as PNG files (for `predict_images`)."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for index in range(self.count):
            path = folder / f"rect_{self.seed + index:03d}.png"
            Image.fromarray(rectangle_image(self.seed + index)[0]).save(path)
            paths.append(path)
        return paths


class RectangleData(pl.LightningDataModule):
    """A detection data module of the contract, in miniature."""

    def __init__(self, image_size: int = 64, batch_size: int = 4, train: int = 8, val: int = 4) -> None:
        super().__init__()
        self.image_size, self.batch_size = image_size, batch_size
        self.resize = "letterbox"
        self.mean, self.std = MEAN, STD
        self.class_names, self.num_classes = list(CLASS_NAMES), len(CLASS_NAMES)
        self.sizes, self.train_count, self.val_count = [], train, val

    def preprocessing(self) -> dict:
        return {"image_size": self.image_size, "resize": self.resize, "mean": MEAN, "std": STD}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            Rectangles(self.train_count, self.image_size), batch_size=self.batch_size, collate_fn=collate
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            Rectangles(self.val_count, self.image_size, seed=100),
            batch_size=self.batch_size,
            collate_fn=collate,
        )

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        dataset = Rectangles(self.val_count, self.image_size, seed=100, predict=True)
        return DataLoader(dataset, batch_size=self.batch_size, collate_fn=collate)
