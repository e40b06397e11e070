"""Synthetic boxes: a few filled shapes on a noisy background, each shape's kind its class, with the
exact box of its pixels. No download, any machine: the detection quickstart and the tests.

A sample depends only on (seed, index, image size), so a data set is the same in every worker.
Shapes do not overlap (placement is retried), so every box bounds its whole, visible object.
`write_yolo_dataset` writes such a set in the YOLO layout (images/ + labels/, classes.txt, data.yaml).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from vision_lightning.utils.errors import InputError

BOX_SHAPES = ("rectangle", "ellipse", "triangle", "diamond", "cross", "ring", "hexagon", "frame")


def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Pixels of `kind` for coordinates (u, v) normalised to [-1, 1] across its box."""
    au, av = np.abs(u), np.abs(v)
    inside = (au <= 1) & (av <= 1)
    if kind == "rectangle":
        return inside
    if kind == "ellipse":
        return u**2 + v**2 <= 1
    if kind == "triangle":  # apex up
        return inside & (au <= (v + 1) / 2)
    if kind == "diamond":
        return au + av <= 1
    if kind == "cross":
        return inside & ((au <= 0.3) | (av <= 0.3))
    if kind == "ring":
        return (u**2 + v**2 <= 1) & (u**2 + v**2 >= 0.4)
    if kind == "hexagon":
        return inside & (au + 0.5 * av <= 1)
    if kind == "frame":
        return inside & ~((au <= 0.6) & (av <= 0.6))
    raise ValueError(kind)


def render_boxes(
    seed: int, index: int, image_size: int, num_classes: int, max_objects: int = 3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 HxWx3 image, float (k, 4) xyxy boxes, int64 (k,) classes) of sample `index` of set `seed`:
    1 to `max_objects` shapes of 15-45% of the side, bright on a dark noisy background."""
    rng = np.random.default_rng([seed, index, 7])
    size = image_size
    image = rng.uniform(0, 100, size=3) + rng.normal(0, 15, size=(size, size, 3))
    boxes, labels = [], []
    taken = np.zeros((size, size), dtype=bool)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(10):
            w, h = (rng.uniform(0.15, 0.45, size=2) * size).astype(int).clip(3, size)
            x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            if not taken[max(y0 - 1, 0) : y0 + h + 1, max(x0 - 1, 0) : x0 + w + 1].any():
                break
        else:
            continue  # no room left
        kind = int(rng.integers(num_classes))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
        mask = _shape_mask(BOX_SHAPES[kind], xx / w * 2 - 1, yy / h * 2 - 1)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        colour = rng.uniform(140, 255, size=3)
        region = image[y0 : y0 + h, x0 : x0 + w]
        region[mask] = colour + rng.normal(0, 10, size=(int(mask.sum()), 3))
        taken[y0 : y0 + h, x0 : x0 + w] = True
        boxes.append([x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1])
        labels.append(kind)
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image, np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(labels, dtype=np.int64)


def check_box_classes(num_classes: int) -> None:
    if not 1 <= num_classes <= len(BOX_SHAPES):
        raise InputError(
            f"synthetic boxes have 1 to {len(BOX_SHAPES)} classes, got num_classes={num_classes}"
        )


class SyntheticBoxSamples:
    """`samples` generated images with their boxes, as a detection sample source."""

    def __init__(
        self, samples: int, image_size: int, num_classes: int, max_objects: int, seed: int, name: str
    ) -> None:
        self.samples, self.image_size, self.num_classes = samples, image_size, num_classes
        self.max_objects, self.seed, self.name = max_objects, seed, name

    def __len__(self) -> int:
        return self.samples

    def files(self, index: int) -> list[str]:
        return []

    def problem(self, index: int) -> str | None:
        return None

    def load(self, index: int) -> tuple[np.ndarray, dict[str, Any], str]:
        if not 0 <= index < self.samples:
            raise IndexError(index)
        image, boxes, labels = render_boxes(
            self.seed, index, self.image_size, self.num_classes, self.max_objects
        )
        return image, {"boxes": boxes, "labels": labels}, f"{self.name}/{index:06d}"


def _write_split(root: Path, split: str, samples: SyntheticBoxSamples, extension: str) -> None:
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    size = samples.image_size
    for index in range(len(samples)):
        image, target, _ = samples.load(index)
        Image.fromarray(image).save(images / f"{index:05d}{extension}")
        lines = []
        for (x1, y1, x2, y2), label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            cx, cy, w, h = (x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size
            lines.append(f"{label} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
        (labels / f"{index:05d}.txt").write_text("".join(line + "\n" for line in lines))


def write_yolo_dataset(
    root: str | Path,
    samples: int = 40,
    num_classes: int = 3,
    image_size: int = 64,
    val_samples: int | None = None,
    class_names: list[str] | None = None,
    data_yaml: bool = True,
    max_objects: int = 3,
    seed: int = 0,
    extension: str = ".png",
) -> Path:
    """Write synthetic boxes in the YOLO layout: `root/images/{train,val}/*.png`, `root/labels/{train,val}/
    *.txt` (`class cx cy w h`, normalised), `root/classes.txt` and, with `data_yaml`, `root/data.yaml`
    (`path`, `train`, `val`, `nc`, `names`). `class_names` renames the shapes' classes (their count is
    `num_classes`); `val_samples` defaults to a quarter of `samples`. Returns data.yaml's path (or root)."""
    root = Path(root)
    if class_names is not None:
        num_classes = len(class_names)
    check_box_classes(num_classes)
    names = list(class_names or BOX_SHAPES[:num_classes])
    val_samples = max(1, samples // 4) if val_samples is None else val_samples
    _write_split(
        root, "train", SyntheticBoxSamples(samples, image_size, num_classes, max_objects, seed, ""), extension
    )
    if val_samples:
        val = SyntheticBoxSamples(val_samples, image_size, num_classes, max_objects, seed + 1, "")
        _write_split(root, "val", val, extension)
    (root / "classes.txt").write_text("".join(name + "\n" for name in names))
    if not data_yaml:
        return root
    import yaml

    config = {"path": str(root.resolve()), "train": "images/train", "nc": num_classes, "names": names}
    if val_samples:
        config["val"] = "images/val"
    (root / "data.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root / "data.yaml"
