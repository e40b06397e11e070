"""EmbeddingDataModule: train and evaluate on embeddings cached by FeatureExtractModule.

Seed 001 computes VGG16 features once and trains a linear classifier on the cache: an epoch then
costs a matrix product instead of a VGG16 forward pass per image. The cache is what `predict`
with FeatureExtractModule and `predict_splits: [train, val]` writes under its output folder:
`embeddings_<split>.npy` (or `embeddings_<layer>_<split>.npy` for several layers), the index
`embeddings_<split>.csv` (row, path, label) and `embeddings_<split>.json` (class names, widths).

Batches are `{"image": (N, D) float32 embeddings, "label": class ids, "path": image paths}`: the
embedding goes under "image" so ClassifierModule (`backbone: identity`) trains, validates and
predicts on it unchanged, and KNNClassifierModule reads the same batches. The `.npy` files are
memory-mapped, so a cache larger than RAM is read row by row from disk; `setup` reads each file once,
in chunks, to refuse one holding a NaN or infinite value (naming the file and the row).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vision_lightning.data.base import LoaderOptions, VisionDataModule
from vision_lightning.outputs.embeddings import embedding_file_name
from vision_lightning.utils.errors import InputError, MissingInputError

EXTRACT_COMMAND = (
    "python -m vision_lightning predict --config configs/features/cats_dogs_vgg16_extract.yaml "
    "--prediction_writer.output_dir {root}"
)


class EmbeddingDataset(Dataset):
    """Rows of an `.npy` file with their labels and paths. The file is opened (memory-mapped) in
    each process that reads it, so loader workers share the page cache instead of copies."""

    def __init__(self, path: Path, labels: list[int] | None, paths: list[str]) -> None:
        self.path, self.labels, self.paths = path, labels, paths
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}  # a memmap pickles as a full in-memory copy

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            "image": torch.from_numpy(np.array(self.array[index])),
            "path": self.paths[index],
        }
        if self.labels is not None:
            item["label"] = torch.tensor(self.labels[index])
        return item


class EmbeddingDataModule(VisionDataModule):
    """Cached embeddings by split, with the labels of their index CSVs.

    Args:
        root: the folder `predict` wrote the embeddings to (`--prediction_writer.output_dir`).
        layer: which layer's embeddings to read when several were extracted (`embeddings_<layer>_*.npy`).
        train_split / val_split / test_split: the split names in the file names (`embeddings_train.npy`);
            `""` reads the files of a single-loader run (`embeddings.npy`). `val_split: null` trains
            without validation; `test_split` is optional.
        class_names: the classes in id order; by default those the extraction recorded, else the
            sorted label names of the training index (ids when the labels are numbers).
        batch_size: rows per batch.
        loader: worker processes and memory pinning of every loader.
        predict_splits: predict these splits (one loader each) instead of test, else validation.

    `num_features`, `num_classes` and `class_names` are known right after construction (the CLI
    links them into the model). There is no `image_size` to choose: the attribute exists, as on every
    data module, but nothing reads it (progressive resizing does not apply to vectors).
    """

    def __init__(
        self,
        root: str,
        layer: str | None = None,
        train_split: str = "train",
        val_split: str | None = "val",
        test_split: str | None = None,
        class_names: list[str] | None = None,
        batch_size: int = 256,
        loader: LoaderOptions = LoaderOptions(),
        predict_splits: list[str] | None = None,
    ) -> None:
        super().__init__(1, batch_size, loader, predict_splits=predict_splits)
        self.root = Path(root)
        self.layer = layer
        self.split_names = {"train": train_split, "val": val_split, "test": test_split}
        self.split_names = {key: name for key, name in self.split_names.items() if name is not None}
        if not self.root.is_dir():
            raise MissingInputError(
                f"embedding folder {self.root} does not exist: write it with `{EXTRACT_COMMAND.format(root=self.root)}`"
            )
        meta = self._meta(train_split)
        self.class_names = list(class_names or meta.get("class_names") or self._label_names(train_split))
        self._index = {key: self._read_index(name) for key, name in self.split_names.items()}
        self.num_features = int(np.load(self._array_path(train_split), mmap_mode="r").shape[1])
        self._sources: dict[str, EmbeddingDataset] = {}
        # class_names are the model's (the CLI links them): Lightning refuses to log data and model
        # hyperparameters that disagree, as a model built in Python without them would.
        self.save_hyperparameters(ignore=["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # ----------------------------------------------------------------- files
    def _file(self, name: str) -> Path:
        path = self.root / name
        if not path.is_file():
            raise MissingInputError(
                f"embedding file {path} does not exist: write it with "
                f"`{EXTRACT_COMMAND.format(root=self.root)}` (predict_splits naming the split)"
            )
        return path

    def _meta(self, split: str) -> dict[str, Any]:
        path = self.root / f"embeddings{_suffix(split)}.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _array_path(self, split: str) -> Path:
        suffix = _suffix(split)
        layers = list(self._meta(split).get("layers", {}))
        if self.layer is not None:
            if len(layers) == 1 and layers[0] == self.layer:
                return self._file(embedding_file_name(None, suffix))
            if layers and self.layer not in layers:
                raise InputError(f"layer {self.layer!r} was not extracted to {self.root}; it has {layers}")
            return self._file(embedding_file_name(self.layer, suffix))
        if len(layers) > 1:
            raise InputError(
                f"{self.root} holds embeddings of several layers {layers}: choose one with layer"
            )
        return self._file(embedding_file_name(None, suffix))

    def _read_index(self, split: str) -> tuple[list[str], list[str]]:
        """(paths, label texts) of a split's index CSV."""
        path = self._file(f"embeddings{_suffix(split)}.csv")
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        if rows and not {"path", "label"} <= set(rows[0]):
            raise InputError(f"{path} is not an embedding index (columns row, path, label)")
        return [row["path"] for row in rows], [row["label"] for row in rows]

    def _label_names(self, split: str) -> list[str]:
        labels = {label for label in self._read_index(split)[1] if label}
        if labels and all(label.isdigit() for label in labels):
            return [str(i) for i in range(max(int(label) for label in labels) + 1)]
        return sorted(labels)

    def _labels(self, split: str, required: bool) -> list[int] | None:
        """Class ids of a split's rows; None for an unlabelled split that may be (predict)."""
        texts = self._index[split][1]
        if not required and not all(texts):
            return None
        index = {name: i for i, name in enumerate(self.class_names)}
        ids = []
        for row, text in enumerate(texts):
            label = index.get(text, int(text) if text.isdigit() else None)
            if label is None or not 0 <= label < self.num_classes:
                problem = (
                    "has no label" if not text else f"has label {text!r}, not one of {self.class_names[:8]}"
                )
                raise InputError(
                    f"{self.root / f'embeddings{_suffix(self.split_names[split])}.csv'} row {row} {problem}"
                )
            ids.append(label)
        return ids

    # ----------------------------------------------------------------- loaders
    def setup(self, stage: str | None = None) -> None:
        if self._sources:
            return
        for split, name in self.split_names.items():
            paths = self._index[split][0]
            array = self._array_path(name)
            rows = np.load(array, mmap_mode="r").shape
            if len(rows) != 2 or rows[0] != len(paths) or rows[1] != self.num_features:
                raise InputError(
                    f"{array} has shape {tuple(rows)} but its index lists {len(paths)} rows of "
                    f"{self.num_features} features (the training width)"
                )
            _check_finite(array)
            labels = self._labels(split, required=split != "test")
            self._sources[split] = EmbeddingDataset(array, labels, paths)

    def _dataset(self, split: str, train: bool = False) -> EmbeddingDataset:
        self.setup()
        key = self._available_split(self._sources, split)
        if key not in self._sources:
            raise InputError(f"there is no {split} split: set {split}_split to the name of its embeddings")
        return self._sources[key]

    def val_dataloader(self):
        """Validation embeddings; `[]` (Lightning: no validation) with `val_split: null`."""
        self.setup()
        return self._loader(self._dataset("val")) if "val" in self._sources else []


def _check_finite(path: Path, chunk_bytes: int = 64 * 2**20) -> None:
    """Every value of the `.npy` file at `path` is finite, else an error naming the file and the first
    bad row; read in chunks of about `chunk_bytes` (the file may be larger than memory)."""
    array = np.load(path, mmap_mode="r")
    if not np.issubdtype(array.dtype, np.floating) or array.size == 0:
        return
    rows = max(1, chunk_bytes // max(1, array[0].nbytes))
    for start in range(0, len(array), rows):
        finite = np.isfinite(np.asarray(array[start : start + rows])).reshape(
            min(rows, len(array) - start), -1
        )
        bad = np.flatnonzero(~finite.all(axis=1))
        if bad.size:
            raise InputError(
                f"{path} row {start + int(bad[0])} holds a NaN or infinite value: extract the embeddings again"
            )


def _suffix(split: str) -> str:
    return f"_{split}" if split else ""
