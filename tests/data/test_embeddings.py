"""The embedding cache: streaming `.npy` writer, EmbeddingSink files, the prediction writer's
per-split sinks, `predict_splits`, and EmbeddingDataModule reading the cache back."""

from __future__ import annotations

import csv
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import cpu_trainer
from tests.embedding_cache import write_embedding_cache
from vision_lightning import EmbeddingDataModule, FeatureExtractModule, ImageClassificationDataModule
from vision_lightning.callbacks import PredictionWriter
from vision_lightning.data.base import LoaderOptions
from vision_lightning.data.classification_sources import ImageFolder, SyntheticShapes
from vision_lightning.data.synthetic import write_image_folder
from vision_lightning.outputs.embeddings import HEADER_BYTES, EmbeddingSink, NpyRowWriter
from vision_lightning.utils.errors import InputError, MissingInputError


def _batch(i: int, rows: int = 64, width: int = 96) -> np.ndarray:
    return np.random.default_rng(i).normal(size=(rows, width)).astype(np.float32)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------- NpyRowWriter
def test_npy_writer_streams_rows_in_constant_memory(tmp_path: Path):
    """200 batches (4.9 MB of rows) go to disk as they come: the writer's own allocations stay far
    below one batch's size, it keeps no rows, and np.load reads back every row in order."""
    path = tmp_path / "big.npy"
    batches = 200
    writer = NpyRowWriter(path)
    batch = _batch(0)
    tracemalloc.start()
    for i in range(batches):
        batch[:] = i  # the same buffer each time: only the writer's allocations are measured
        writer.write(batch)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < batch.nbytes // 2  # nothing is accumulated (all rows: 200 x 24.6 KB)
    assert not [v for v in vars(writer).values() if isinstance(v, (list, np.ndarray, torch.Tensor))]
    assert writer.partial.exists() and not path.exists()  # in progress: only the .partial file
    assert writer.partial.stat().st_size >= HEADER_BYTES + (batches - 1) * batch.nbytes  # on disk already
    assert writer.close() == path
    assert path.exists() and not writer.partial.exists()

    loaded = np.load(path, mmap_mode="r")
    assert loaded.shape == (batches * 64, 96) and loaded.dtype == np.float32
    assert loaded.flags.c_contiguous and loaded.offset == HEADER_BYTES
    assert np.array_equal(loaded[::64, 0], np.arange(batches, dtype=np.float32))


def test_npy_writer_round_trip_of_tensors_and_dtypes(tmp_path: Path):
    writer = NpyRowWriter(tmp_path / "rows.npy")
    first = torch.randn(3, 5, dtype=torch.float64)
    second = torch.randn(4, 5).to(torch.bfloat16)
    third = np.asfortranarray(_batch(1, 2, 5))  # not C-ordered
    for rows in (first, second, third):
        writer.write(rows)
    loaded = np.load(writer.close())
    expected = np.concatenate([first.float().numpy(), second.float().numpy(), third])
    assert loaded.dtype == np.float32 and np.array_equal(loaded, expected)


def test_npy_writer_refuses_other_widths_and_closes_empty(tmp_path: Path):
    writer = NpyRowWriter(tmp_path / "rows.npy")
    writer.write(np.zeros((2, 4)))
    with pytest.raises(InputError, match="have 3 values, earlier rows 4"):
        writer.write(np.zeros((2, 3)))
    with pytest.raises(InputError, match="must be 2-D"):
        writer.write(np.zeros(4))
    assert np.load(writer.close()).shape == (2, 4)
    assert np.load(NpyRowWriter(tmp_path / "empty.npy", width=7).close()).shape == (0, 7)


# ---------------------------------------------------------------- EmbeddingSink
def test_sink_writes_one_file_per_layer_and_a_named_index(tmp_path: Path):
    sink = EmbeddingSink(tmp_path, "_val", ["output", "layer3"], class_names=["cat", "dog"])
    for start in (0, 3):
        sink.write({
            "path": [f"img{start + i}.png" for i in range(3)],
            "label": torch.tensor([0, 1, 1]),
            "features": {"output": torch.full((3, 4), float(start)), "layer3": torch.ones(3, 6)},
        })  # fmt: skip
    assert sink.close() == tmp_path / "embeddings_val.csv"
    output = np.load(tmp_path / "embeddings_output_val.npy")
    assert output.shape == (6, 4) and np.load(tmp_path / "embeddings_layer3_val.npy").shape == (6, 6)
    assert output[:, 0].tolist() == [0, 0, 0, 3, 3, 3]
    rows = _read_csv(tmp_path / "embeddings_val.csv")
    assert [r["row"] for r in rows] == [str(i) for i in range(6)]
    assert [r["path"] for r in rows] == [f"img{i}.png" for i in range(6)]
    assert [r["label"] for r in rows] == ["cat", "dog", "dog"] * 2
    meta = json.loads((tmp_path / "embeddings_val.json").read_text())
    assert meta["rows"] == 6 and meta["class_names"] == ["cat", "dog"]
    assert meta["layers"]["layer3"] == {"file": "embeddings_layer3_val.npy", "dim": 6}


def test_sink_labels_without_names_or_labels(tmp_path: Path):
    sink = EmbeddingSink(tmp_path, "", ["output"])
    sink.write({"path": ["a", "b"], "label": torch.tensor([3, 0]), "features": {"output": torch.ones(2, 2)}})
    sink.write({"path": ["c"], "features": {"output": torch.ones(1, 2)}})  # a predict folder: no labels
    sink.close()
    assert np.load(tmp_path / "embeddings.npy").shape == (3, 2)
    assert [r["label"] for r in _read_csv(tmp_path / "embeddings.csv")] == ["3", "0", ""]


# ---------------------------------------------------------------- predict_splits and the writer
def test_predict_splits_write_one_cache_per_split_with_labels(tmp_path: Path):
    data = ImageClassificationDataModule(
        SyntheticShapes(20, num_classes=3), image_size=32, batch_size=8, predict_splits=["train", "val"]
    )
    model = FeatureExtractModule("cifar_lenet", layers=["output", "3"])
    trainer = cpu_trainer(callbacks=[PredictionWriter(str(tmp_path))])
    trainer.predict(model, datamodule=data, return_predictions=False)

    sizes = {"train": 16, "val": 4}  # val_split 0.2 of 20
    for split, size in sizes.items():
        assert np.load(tmp_path / f"embeddings_output_{split}.npy").shape[0] == size
        assert np.load(tmp_path / f"embeddings_3_{split}.npy").shape == (size, 16)
        rows = _read_csv(tmp_path / f"embeddings_{split}.csv")
        assert len(rows) == size and {r["label"] for r in rows} <= set(data.class_names)
    dataset = data._dataset("train")  # same order as the data set, no shuffling
    paths = [r["path"] for r in _read_csv(tmp_path / "embeddings_train.csv")]
    assert paths == [dataset[i]["path"] for i in range(len(dataset))]


def test_several_unnamed_loaders_get_their_index(tmp_path: Path):
    data = ImageClassificationDataModule(SyntheticShapes(10, num_classes=2), image_size=32)
    model = FeatureExtractModule("cifar_lenet")
    loaders = [data.val_dataloader(), data.test_dataloader()]
    cpu_trainer(callbacks=[PredictionWriter(str(tmp_path))]).predict(model, loaders, return_predictions=False)
    assert np.load(tmp_path / "embeddings_0.npy").shape[0] == 2
    assert np.load(tmp_path / "embeddings_1.npy").shape[0] == 2


def test_predict_splits_refuses_unknown_and_missing_splits(tmp_path: Path):
    with pytest.raises(InputError, match=r"predict_splits .*unknown split\(s\) \['training'\]"):
        ImageClassificationDataModule(predict_splits=["training"])
    with pytest.raises(InputError, match="empty or repeated"):
        ImageClassificationDataModule(predict_splits=["val", "val"])
    write_image_folder(tmp_path / "train", per_class=3, num_classes=2, image_size=32)
    data = ImageClassificationDataModule(ImageFolder(str(tmp_path)), image_size=32, predict_splits=["test"])
    with pytest.raises(InputError, match="no test split.*it has train, val"):
        data.predict_dataloader()


# ---------------------------------------------------------------- EmbeddingDataModule
def test_embedding_data_module_reads_the_cache(tmp_path: Path):
    write_embedding_cache(tmp_path, splits=("train", "val", "test"), dim=8, rows=12)
    data = EmbeddingDataModule(str(tmp_path), test_split="test", batch_size=5)
    assert (data.num_features, data.num_classes, data.class_names) == (8, 2, ["cat", "dog"])
    batch = next(iter(data.val_dataloader()))
    assert batch["image"].shape == (5, 8) and batch["image"].dtype == torch.float32
    assert batch["label"].tolist() == [0, 1, 0, 1, 0] and batch["path"][0] == "val/img0.png"
    expected = np.load(tmp_path / "embeddings_val.npy")[:5]
    assert np.array_equal(batch["image"].numpy(), expected)
    dataset = data._dataset("train")
    assert isinstance(dataset.array, np.memmap)  # read from disk, not loaded
    assert sum(len(b["label"]) for b in data.train_dataloader()) == 10  # ragged end dropped in training
    assert len(data._dataset("predict")) == 12  # predict: the test split


def test_embedding_data_module_loader_options_and_plain_hyperparameters(tmp_path: Path):
    write_embedding_cache(tmp_path)
    data = EmbeddingDataModule(
        str(tmp_path), batch_size=4, loader=LoaderOptions(num_workers=1, pin_memory=False)
    )
    loader = data.train_dataloader()
    assert loader.num_workers == 1 and loader.persistent_workers and not loader.pin_memory
    assert data.hparams["root"] == str(tmp_path) and data.hparams["batch_size"] == 4
    # Linked into the model, which keeps them: a data module's copy could disagree with a model's.
    assert "class_names" not in data.hparams and data.class_names == ["cat", "dog"]
    assert data.hparams["loader"] == {
        "class_path": "vision_lightning.data.base.LoaderOptions",
        "init_args": {"num_workers": 1, "pin_memory": False, "persistent_workers": True},
    }


def test_embedding_data_module_split_names_and_a_single_loader_cache(tmp_path: Path):
    write_embedding_cache(tmp_path, splits=("fold0", "fold1", ""), rows=6)
    data = EmbeddingDataModule(str(tmp_path), train_split="fold0", val_split="fold1", test_split="")
    assert data._dataset("val")[0]["path"] == "fold1/img0.png"
    assert data._dataset("test")[0]["path"] == "/img0.png"  # embeddings.npy: a run without splits


def test_embedding_data_module_layers_and_class_names(tmp_path: Path):
    write_embedding_cache(tmp_path, layers=("output", "layer3"), class_names=None)
    with pytest.raises(InputError, match=r"several layers \['output', 'layer3'\]: choose one with layer"):
        EmbeddingDataModule(str(tmp_path))
    with pytest.raises(InputError, match="layer 'layer9' was not extracted"):
        EmbeddingDataModule(str(tmp_path), layer="layer9")
    data = EmbeddingDataModule(str(tmp_path), layer="layer3")
    assert data.class_names == ["0", "1"]  # ids in the index, no names recorded
    assert np.array_equal(
        data._dataset("val")[1]["image"].numpy(), np.load(tmp_path / "embeddings_layer3_val.npy")[1]
    )


def test_embedding_data_module_names_the_missing_file_and_the_command(tmp_path: Path):
    with pytest.raises(
        MissingInputError, match="embedding folder .*nope does not exist.*vision_lightning predict"
    ):
        EmbeddingDataModule(str(tmp_path / "nope"))
    write_embedding_cache(tmp_path, splits=("train",))
    with pytest.raises(
        MissingInputError, match=r"embeddings_val\.csv does not exist: write it with `python -m"
    ):
        EmbeddingDataModule(str(tmp_path))
    assert EmbeddingDataModule(str(tmp_path), val_split=None).val_dataloader() == []


def test_embedding_data_module_needs_training_labels(tmp_path: Path):
    write_embedding_cache(tmp_path)
    index = tmp_path / "embeddings_train.csv"
    rows = index.read_text().splitlines()
    rows[2] = rows[2].rsplit(",", 1)[0] + ",bird"
    index.write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError, match=r"embeddings_train\.csv row 1 has label 'bird'"):
        EmbeddingDataModule(str(tmp_path)).setup()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_embedding_data_module_refuses_non_finite_vectors_naming_file_and_row(tmp_path: Path, bad):
    write_embedding_cache(tmp_path, rows=12)
    path = tmp_path / "embeddings_val.npy"
    values = np.load(path)
    values[7, 3] = bad
    np.save(path, values)
    data = EmbeddingDataModule(str(tmp_path))
    with pytest.raises(InputError, match=r"embeddings_val\.npy row 7 holds a NaN or infinite value"):
        data.setup()


def test_the_finite_check_reads_large_caches_in_chunks(tmp_path: Path):
    from vision_lightning.data.embeddings import _check_finite

    values = np.zeros((50, 4), dtype=np.float32)
    values[41, 0] = np.nan
    np.save(tmp_path / "e.npy", values)
    with pytest.raises(InputError, match="row 41 holds"):
        _check_finite(tmp_path / "e.npy", chunk_bytes=64)  # 4 rows a chunk
    np.save(tmp_path / "ids.npy", np.arange(6).reshape(3, 2))  # integer rows are always finite
    _check_finite(tmp_path / "ids.npy")
