"""A small embedding cache written by the real sink, for tests of what reads caches."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vision_lightning.outputs.embeddings import EmbeddingSink


def write_embedding_cache(
    root: Path,
    splits: Sequence[str] = ("train", "val"),
    num_classes: int = 2,
    dim: int = 8,
    rows: int = 24,
    layers: Sequence[str] = ("output",),
    class_names: Sequence[str] | None = ("cat", "dog"),
    spread: float = 0.3,
    batch: int = 5,
) -> np.ndarray:
    """Per split `rows` embeddings of `dim` values around one centre per class (label = row %
    num_classes), written in batches of `batch` as `predict` writes them; returns the centres."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(num_classes, dim)).astype(np.float32) * 3
    for split in splits:
        sink = EmbeddingSink(root, f"_{split}" if split else "", layers, class_names)
        labels = np.arange(rows) % num_classes
        values = centres[labels] + spread * rng.normal(size=(rows, dim)).astype(np.float32)
        for start in range(0, rows, batch):
            part = slice(start, start + batch)
            sink.write({
                "path": [f"{split}/img{i}.png" for i in range(rows)][part],
                "label": torch.as_tensor(labels[part]),
                "features": {layer: torch.as_tensor(values[part]) * (j + 1) for j, layer in enumerate(layers)},
            })  # fmt: skip
        sink.close()
    return centres
