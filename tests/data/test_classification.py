"""ImageClassificationDataModule and its helpers: synthetic shapes, ImageFolder trees, CSV files,
torchvision data sets (faked, never downloaded), splits and folds, bad images and transforms.

Everything is generated under `tmp_path` with tiny images so the whole file runs in seconds.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import split_dataset, write_csv
from vision_lightning.data import torchvision_datasets
from vision_lightning.data.classification import ImageClassificationDataModule
from vision_lightning.data.classification_sources import (
    ClassificationSource,
    CsvLabels,
    ImageFolder,
    SyntheticShapes,
    TorchvisionDataset,
)
from vision_lightning.data.splits import stratified_folds, stratified_split, write_folds
from vision_lightning.data.synthetic import ShapeImages, write_image_folder
from vision_lightning.data.torchvision_datasets import CIFAR10_CLASSES, TorchvisionSpec
from vision_lightning.utils.errors import InputError, MissingInputError
from vision_lightning.utils.images import image_problem
from vision_lightning.utils.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform, channel_stats

ROOT = Path(__file__).resolve().parents[2]
SIZE = 16


# ----------------------------------------------------------------------------- helpers
def module(source: ClassificationSource | None = None, **kwargs) -> ImageClassificationDataModule:
    """A data module of `source` (default: synthetic shapes) with tiny defaults (image_size 16, raw
    [0, 1] pixels)."""
    defaults = {"image_size": SIZE, "batch_size": 4, "mean": [0.0], "std": [1.0]}
    return ImageClassificationDataModule(source or SyntheticShapes(), **{**defaults, **kwargs})


def split_items(dm: ImageClassificationDataModule, split: str) -> list[tuple[str, object]]:
    """(path, target) of every sample of `split`, from the loader's data set (no drop_last, no shuffle)."""
    dataset = split_dataset(dm, split)
    items = [dataset[i] for i in range(len(dataset))]
    return [(item["path"], item["label"].numpy() if "label" in item else None) for item in items]


def split_paths(dm: ImageClassificationDataModule, split: str) -> list[str]:
    return [path for path, _ in split_items(dm, split)]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def csv_images(tmp_path: Path, count: int, folder: str = "csv", start: int = 0) -> Path:
    """`count` PNG files `tmp_path/folder/id<n>.png` (n from `start`); returns the folder."""
    root = tmp_path / folder
    root.mkdir(exist_ok=True)
    shapes = ShapeImages(count, SIZE, 2, seed=start)
    for i in range(count):
        Image.fromarray(shapes.sample(i)[0]).save(root / f"id{start + i}.png")
    return root


def jpeg_bytes(size: int = 32, seed: int = 0) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG")
    return buffer.getvalue()


def assert_folds_stratified(labels: list[str], folds: list[int], k: int) -> None:
    assert sorted(set(folds)) == list(range(k))
    sizes = Counter(folds)
    assert max(sizes.values()) - min(sizes.values()) <= 1
    for label in set(labels):
        per_fold = Counter(f for f, lab in zip(folds, labels, strict=True) if lab == label)
        counts = [per_fold.get(f, 0) for f in range(k)]
        assert max(counts) - min(counts) <= 1, (label, counts)


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_shapes_deterministic_by_seed_and_index():
    a, b = ShapeImages(6, SIZE, 4, seed=3), ShapeImages(6, SIZE, 4, seed=3)
    for i in range(6):
        (ia, la, ma), (ib, lb, mb) = a.sample(i), b.sample(i)
        assert np.array_equal(ia, ib) and la == lb and np.array_equal(ma, mb)
    assert not np.array_equal(a.sample(0)[0], a.sample(1)[0])
    other = ShapeImages(6, SIZE, 4, seed=4)
    assert any(not np.array_equal(a.sample(i)[0], other.sample(i)[0]) for i in range(6))
    assert not np.array_equal(a.sample(0)[0], other.sample(0)[0])


def test_synthetic_labels_shapes_and_masks():
    shapes = ShapeImages(40, SIZE, 5, seed=1)
    assert shapes.labels == [shapes.sample(i)[1] for i in range(40)]
    assert set(shapes.labels) == set(range(5))
    assert shapes.class_names == ["circle", "square", "triangle", "cross", "ring"]
    image, label, mask = shapes.sample(0)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert mask.shape == (SIZE, SIZE) and mask.dtype == bool and mask.any() and not mask.all()
    assert 0 <= label < 5
    gray = ShapeImages(2, SIZE, 5, channels=1, seed=1).sample(0)[0]
    assert gray.shape == (SIZE, SIZE, 1) and gray.dtype == np.uint8
    with pytest.raises(IndexError):
        shapes.sample(40)


@pytest.mark.parametrize("num_classes", [0, 1, 11])
def test_synthetic_num_classes_out_of_range(num_classes):
    with pytest.raises(InputError, match="num_classes"):
        ShapeImages(4, SIZE, num_classes)
    with pytest.raises(InputError):
        ImageClassificationDataModule(SyntheticShapes(num_classes=num_classes))


@pytest.mark.parametrize("num_classes", [2, 10])
def test_synthetic_num_classes_bounds_accepted(num_classes):
    assert len(ShapeImages(4, SIZE, num_classes).class_names) == num_classes
    assert module(SyntheticShapes(num_classes=num_classes)).num_classes == num_classes


@pytest.mark.parametrize("channels", [3, 1])
def test_synthetic_datamodule_batches(channels):
    dm = module(SyntheticShapes(20), channels=channels, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert dm.class_names == ["circle", "square", "triangle", "cross"]
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        batch = next(iter(loader))
        assert set(batch) == {"image", "label", "path"}
        n = len(batch["label"])
        assert batch["image"].dtype == torch.float32
        assert batch["image"].shape == (n, channels, SIZE, SIZE)
        assert batch["label"].dtype == torch.long and batch["label"].shape == (n,)
        assert ((batch["label"] >= 0) & (batch["label"] < 4)).all()
        assert isinstance(batch["path"], list) and len(batch["path"]) == n
        assert all(isinstance(p, str) for p in batch["path"])
    train, val = split_paths(dm, "train"), split_paths(dm, "val")
    assert len(train) + len(val) == 20 and not set(train) & set(val)


# ----------------------------------------------------------------------------- ImageFolder
def test_folder_flat_layout_seeded_stratified_split(tmp_path):
    root = tmp_path / "flat"
    paths = write_image_folder(root, per_class=5, num_classes=4, image_size=SIZE)
    dm = module(ImageFolder(str(root)), val_split=0.4, split_seed=1)
    # class names are the sorted folder names, not the order the shapes were written in
    assert dm.class_names == ["circle", "cross", "square", "triangle"]
    train, val = split_items(dm, "train"), split_items(dm, "val")
    assert sorted(p for p, _ in train + val) == sorted(str(p) for p in paths)
    assert not {p for p, _ in train} & {p for p, _ in val}
    for path, label in train + val:
        assert Path(path).parent.name == dm.class_names[int(label)]
    assert Counter(int(label) for _, label in val) == dict.fromkeys(range(4), 2)
    assert Counter(int(label) for _, label in train) == dict.fromkeys(range(4), 3)

    val_paths = [p for p, _ in val]
    assert split_paths(module(ImageFolder(str(root)), val_split=0.4, split_seed=1), "val") == val_paths
    assert split_paths(module(ImageFolder(str(root)), val_split=0.4, split_seed=2), "val") != val_paths


def test_folder_train_val_test_layout(tmp_path):
    root = tmp_path / "data"
    train = write_image_folder(root / "train", per_class=3, num_classes=2, image_size=SIZE)
    val = write_image_folder(root / "val", per_class=2, num_classes=2, image_size=SIZE, seed=1)
    test = write_image_folder(root / "test", per_class=1, num_classes=2, image_size=SIZE, seed=2)
    dm = module(ImageFolder(str(root)))
    assert dm.class_names == ["circle", "square"]
    for split, written in (("train", train), ("val", val), ("test", test)):
        items = split_items(dm, split)
        assert sorted(p for p, _ in items) == sorted(str(p) for p in written)
        for path, label in items:
            assert Path(path).parent.name == dm.class_names[int(label)]


def test_folder_test_root_elsewhere(tmp_path):
    root = tmp_path / "full"
    write_image_folder(root / "train", per_class=3, num_classes=2, image_size=SIZE)
    elsewhere = write_image_folder(
        tmp_path / "small/test", per_class=1, num_classes=2, image_size=SIZE, seed=2
    )
    dm = module(ImageFolder(str(root), test_root=str(tmp_path / "small/test")))
    assert sorted(split_paths(dm, "test")) == sorted(str(p) for p in elsewhere)
    with pytest.raises(MissingInputError, match="test_root"):
        ImageFolder(str(root), test_root=str(tmp_path / "missing"))


def test_folder_valid_alias_for_val(tmp_path):
    root = tmp_path / "data"
    write_image_folder(root / "train", per_class=2, num_classes=2, image_size=SIZE)
    valid = write_image_folder(root / "valid", per_class=1, num_classes=2, image_size=SIZE, seed=1)
    dm = module(ImageFolder(str(root)))
    assert sorted(split_paths(dm, "val")) == sorted(str(p) for p in valid)
    assert len(split_paths(dm, "train")) == 4


def test_folder_grayscale_files_become_rgb(tmp_path):
    root = tmp_path / "gray"
    paths = write_image_folder(root, per_class=3, num_classes=2, image_size=SIZE, channels=1)
    assert Image.open(paths[0]).mode == "L"
    dm = module(ImageFolder(str(root)), channels=3, batch_size=16)
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape[1:] == (3, SIZE, SIZE)
    image = batch["image"][0]
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_folder_val_class_missing_from_train(tmp_path):
    root = tmp_path / "data"
    write_image_folder(root / "train", per_class=2, num_classes=2, image_size=SIZE)
    write_image_folder(root / "val", per_class=1, num_classes=3, image_size=SIZE)
    dm = module(ImageFolder(str(root)))
    with pytest.raises(InputError, match="triangle"):
        dm.setup()


# ----------------------------------------------------------------------------- CSV
def test_csv_string_labels(tmp_path):
    root = csv_images(tmp_path, 8)
    names = ["dog", "cat", "bird", "dog", "cat", "bird", "dog", "cat"]
    rows = [{"image": f"id{i}", "label": name} for i, name in enumerate(names)]
    csv_path = write_csv(root / "train.csv", rows)
    dm = module(CsvLabels(str(csv_path), path_format="{}.png"), val_split=0.34)
    assert dm.class_names == ["bird", "cat", "dog"]
    items = split_items(dm, "train") + split_items(dm, "val")
    expected = {str(root / f"id{i}.png"): dm.class_names.index(name) for i, name in enumerate(names)}
    assert {path: int(label) for path, label in items} == expected
    assert len(items) == 8
    assert {int(label) for _, label in split_items(dm, "val")} == {0, 1, 2}


def test_csv_integer_labels(tmp_path):
    root = csv_images(tmp_path, 6)
    rows = [{"image": f"id{i}.png", "label": i % 3} for i in range(6)]
    csv_path = write_csv(tmp_path / "labels.csv", rows)
    dm = module(CsvLabels(str(csv_path), root=str(root)), val_split=0.5)
    assert dm.class_names == ["0", "1", "2"]
    items = split_items(dm, "train") + split_items(dm, "val")
    assert {path: int(label) for path, label in items} == {str(root / f"id{i}.png"): i % 3 for i in range(6)}


def test_csv_label_beyond_num_classes(tmp_path):
    root = csv_images(tmp_path, 4)
    rows = [{"image": f"id{i}", "label": i} for i in range(4)]
    csv_path = write_csv(root / "train.csv", rows)
    with pytest.raises(InputError) as error:
        module(CsvLabels(str(csv_path), path_format="{}.png", num_classes=3)).setup()
    message = str(error.value)
    assert str(csv_path) in message and "'label'" in message and "3" in message


def test_csv_missing_column(tmp_path):
    csv_path = write_csv(tmp_path / "train.csv", [{"image": "a.png", "target": 0}])
    with pytest.raises(InputError) as error:
        module(CsvLabels(str(csv_path)))
    message = str(error.value)
    assert str(csv_path) in message and "'label'" in message and "image, target" in message


def test_csv_fold_column_and_test_csv(tmp_path):
    root = csv_images(tmp_path, 12)
    csv_images(tmp_path, 3, start=100)
    rows = [{"image": f"id{i}", "label": ["a", "b"][i % 2], "kfold": i % 3} for i in range(12)]
    csv_path = write_csv(root / "train.csv", rows)
    # the test CSV has no fold column, as test sets never do
    test_rows = [{"image": f"id{i}", "label": "b"} for i in (100, 101, 102)]
    test_csv = write_csv(root / "test.csv", test_rows)
    dm = module(
        CsvLabels(str(csv_path), test_csv=str(test_csv), path_format="{}.png", fold_column="kfold", fold=1)
    )
    val = split_items(dm, "val")
    assert sorted(p for p, _ in val) == sorted(str(root / f"id{i}.png") for i in range(12) if i % 3 == 1)
    assert sorted(split_paths(dm, "train")) == sorted(
        str(root / f"id{i}.png") for i in range(12) if i % 3 != 1
    )
    for path, label in val:
        assert int(label) == int(Path(path).stem[2:]) % 2
    test = split_items(dm, "test")
    assert sorted(p for p, _ in test) == sorted(str(root / f"id{i}.png") for i in (100, 101, 102))
    assert all(int(label) == 1 for _, label in test)


def test_csv_unknown_fold(tmp_path):
    root = csv_images(tmp_path, 4)
    rows = [{"image": f"id{i}", "label": i % 2, "kfold": i % 2} for i in range(4)]
    csv_path = write_csv(root / "train.csv", rows)
    dm = module(CsvLabels(str(csv_path), path_format="{}.png", fold_column="kfold", fold=7))
    with pytest.raises(InputError, match="no fold 7"):
        dm.setup()


def test_csv_multilabel(tmp_path):
    root = csv_images(tmp_path, 16)
    vectors = [[((i % 8) >> b) & 1 for b in range(3)] for i in range(16)]  # every 0/1 combination twice
    rows = [{"image": f"id{i}", **dict(zip(["x", "y", "z"], v, strict=True))} for i, v in enumerate(vectors)]
    csv_path = write_csv(root / "train.csv", rows)
    dm = module(
        CsvLabels(str(csv_path), path_format="{}.png", label_columns=["x", "y", "z"]),
        label_mode="multilabel",
        val_split=0.25,
        batch_size=8,
    )
    assert dm.class_names == ["x", "y", "z"]
    batch = next(iter(dm.val_dataloader()))
    assert batch["label"].dtype == torch.float32 and batch["label"].shape[1] == 3
    items = split_items(dm, "train") + split_items(dm, "val")
    assert len(items) == 16
    for path, label in items:
        assert label.tolist() == vectors[int(Path(path).stem[2:])]


def test_csv_multilabel_rejects_non_binary(tmp_path):
    root = csv_images(tmp_path, 4)
    rows = [{"image": f"id{i}", "x": 1, "y": 0} for i in range(4)]
    rows[2]["y"] = 0.5
    csv_path = write_csv(root / "train.csv", rows)
    dm = module(
        CsvLabels(str(csv_path), path_format="{}.png", label_columns=["x", "y"]), label_mode="multilabel"
    )
    with pytest.raises(InputError, match="0 or 1"):
        dm.setup()


def test_csv_soft_labels(tmp_path):
    columns = ["healthy", "multiple_diseases", "rust", "scab"]
    root = csv_images(tmp_path, 9)
    targets = [np.eye(4)[i % 4].tolist() for i in range(8)] + [[0.1, 0.2, 0.3, 0.4]]
    rows = [{"image_id": f"id{i}", **dict(zip(columns, t, strict=True))} for i, t in enumerate(targets)]
    csv_path = write_csv(root / "train.csv", rows)
    dm = module(
        CsvLabels(str(csv_path), path_column="image_id", path_format="{}.png", label_columns=columns),
        label_mode="soft",
        val_split=0.25,
    )
    assert dm.class_names == columns
    items = split_items(dm, "train") + split_items(dm, "val")
    assert len(items) == 9
    for path, label in items:
        assert label.dtype == np.float32
        np.testing.assert_allclose(label, targets[int(Path(path).stem[2:])], rtol=1e-6)
    batch = next(iter(dm.val_dataloader()))
    assert batch["label"].dtype == torch.float32 and batch["label"].shape[1] == 4


def test_csv_multiclass_with_several_columns(tmp_path):
    csv_path = write_csv(tmp_path / "train.csv", [{"image": "a.png", "x": 1, "y": 0}])
    with pytest.raises(InputError) as error:
        module(CsvLabels(str(csv_path), label_columns=["x", "y"]))
    assert "soft" in str(error.value) and "multilabel" in str(error.value)


def test_csv_binary_with_three_classes(tmp_path):
    csv_path = write_csv(
        tmp_path / "train.csv", [{"image": f"{i}.png", "label": n} for i, n in enumerate("abc")]
    )
    with pytest.raises(InputError, match="binary"):
        module(CsvLabels(str(csv_path)), label_mode="binary")


def test_csv_binary_two_classes(tmp_path):
    root = csv_images(tmp_path, 4)
    csv_path = write_csv(root / "train.csv", [{"image": f"id{i}.png", "label": i % 2} for i in range(4)])
    dm = module(CsvLabels(str(csv_path)), label_mode="binary", val_split=0.5)
    assert dm.class_names == ["0", "1"]
    assert sorted(int(label) for _, label in split_items(dm, "val")) == [0, 1]


# ----------------------------------------------------------------------------- splits and folds
def test_stratified_split_keeps_proportions_and_is_seeded():
    keys = ["A"] * 100 + ["B"] * 50
    train, val = stratified_split(keys, 0.2, seed=0)
    assert Counter(keys[i] for i in val) == {"A": 20, "B": 10}
    assert Counter(keys[i] for i in train) == {"A": 80, "B": 40}
    assert sorted(train + val) == list(range(150))
    assert (train, val) == stratified_split(keys, 0.2, seed=0)
    assert stratified_split(keys, 0.2, seed=1)[1] != val


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_stratified_split_bad_fraction(fraction):
    with pytest.raises(InputError, match="val_split"):
        stratified_split(["a", "b"] * 5, fraction)


def test_stratified_folds_balanced():
    keys = ["A"] * 23 + ["B"] * 12 + ["C"] * 3
    folds = stratified_folds(keys, k=5, seed=0)
    assert len(folds) == len(keys)
    assert_folds_stratified(keys, folds, 5)
    assert stratified_folds(keys, k=5, seed=0) == folds
    with pytest.raises(InputError):
        stratified_folds(keys, k=1)


def test_write_folds(tmp_path):
    labels = ["cat"] * 13 + ["dog"] * 7
    csv_in = write_csv(
        tmp_path / "in.csv", [{"image": f"{i}.png", "label": lab} for i, lab in enumerate(labels)]
    )
    folds = write_folds(csv_in, tmp_path / "out.csv", "label", k=4, seed=0)
    rows = read_csv(tmp_path / "out.csv")
    assert list(rows[0]) == ["image", "label", "kfold"]
    assert [r["image"] for r in rows] == [f"{i}.png" for i in range(20)]
    assert [int(r["kfold"]) for r in rows] == folds
    assert_folds_stratified(labels, folds, 4)


def test_write_folds_cli(tmp_path):
    labels = ["a"] * 10 + ["b"] * 6 + ["c"] * 4
    csv_in = write_csv(
        tmp_path / "in.csv", [{"image": f"{i}.png", "label": lab} for i, lab in enumerate(labels)]
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-m", "vision_lightning.data.splits", str(csv_in), str(tmp_path / "out.csv"),
         "--label", "label", "--k", "5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "20 rows in 5 folds" in result.stdout
    rows = read_csv(tmp_path / "out.csv")
    assert [r["label"] for r in rows] == labels
    assert_folds_stratified(labels, [int(r["kfold"]) for r in rows], 5)


# ----------------------------------------------------------------------------- bad images
@pytest.fixture
def folder_with_bad_images(tmp_path):
    """train/ with good PNGs and a good JPEG plus a truncated JPEG and a garbage .jpg; a clean val/."""
    root = tmp_path / "data"
    good = write_image_folder(root / "train", per_class=2, num_classes=2, image_size=SIZE)
    good.append(root / "train" / "circle" / "good.jpg")
    good[-1].write_bytes(jpeg_bytes())
    truncated = root / "train" / "circle" / "truncated.jpg"
    data = jpeg_bytes(seed=1)
    truncated.write_bytes(data[: len(data) // 2])
    garbage = root / "train" / "square" / "garbage.jpg"
    garbage.write_bytes(b"this is not an image\n" * 4)
    write_image_folder(root / "val", per_class=1, num_classes=2, image_size=SIZE, seed=1)
    return root, good, [truncated, garbage]


def test_bad_images_skipped_with_warning(folder_with_bad_images, caplog):
    root, good, bad = folder_with_bad_images
    dm = module(ImageFolder(str(root)), bad_images="skip")
    caplog.set_level(logging.WARNING)
    dm.setup()
    assert sorted(split_paths(dm, "train")) == sorted(str(p) for p in good)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(bad[0]) in m and str(bad[1]) in m for m in warnings), warnings
    batch = next(iter(dm.train_dataloader()))  # the kept files load
    assert batch["image"].shape[1:] == (3, SIZE, SIZE)


def test_bad_images_error(folder_with_bad_images):
    root, _, bad = folder_with_bad_images
    dm = module(ImageFolder(str(root)), bad_images="error")
    with pytest.raises(InputError) as error:
        dm.setup()
    assert str(bad[0]) in str(error.value) and str(bad[1]) in str(error.value)


def test_image_problem(folder_with_bad_images):
    _, good, bad = folder_with_bad_images
    assert [image_problem(p) for p in good] == [None] * len(good)
    for path in bad:
        reason = image_problem(path)
        assert isinstance(reason, str) and reason
    assert image_problem(bad[0].parent / "nope.jpg") == "file does not exist"


# ----------------------------------------------------------------------------- missing and empty inputs
def test_missing_root(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(MissingInputError, match="nowhere") as error:
        module(ImageFolder(str(missing)))
    assert isinstance(error.value, FileNotFoundError)
    assert str(missing) in str(error.value)


def test_root_without_class_folders(tmp_path):
    root = tmp_path / "loose"
    root.mkdir()
    (root / "image.jpg").write_bytes(jpeg_bytes())
    with pytest.raises(InputError, match="no class sub-folders"):
        module(ImageFolder(str(root)))


def test_class_folders_without_images(tmp_path):
    root = tmp_path / "empty"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        (root / name / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="has no images"):
        module(ImageFolder(str(root)))


def test_missing_csv(tmp_path):
    missing = tmp_path / "labels.csv"
    with pytest.raises(MissingInputError) as error:
        module(CsvLabels(str(missing)))
    assert str(missing) in str(error.value)


def test_csv_source_needs_csv_path():
    with pytest.raises(InputError, match="csv_path"):
        module(CsvLabels(""))
    with pytest.raises(TypeError, match="csv_path"):
        CsvLabels()  # type: ignore[call-arg]


def test_folder_source_needs_root():
    with pytest.raises(InputError, match="root"):
        ImageFolder("")
    with pytest.raises(TypeError, match="root"):
        ImageFolder()  # type: ignore[call-arg]


def test_unknown_torchvision_dataset():
    with pytest.raises(InputError) as error:
        module(TorchvisionDataset(name="ImageNet22k"))
    message = str(error.value)
    assert "ImageNet22k" in message
    for name in ("MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "OxfordIIITPet", "Flowers102"):
        assert name in message


# ----------------------------------------------------------------------------- torchvision
class FakeCifar:
    """What torchvision's CIFAR10 looks like: (PIL RGB image, int label) items and `targets`."""

    def __init__(self, count: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.targets = [i % 10 for i in range(count)]
        self.arrays = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(count)]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return Image.fromarray(self.arrays[index]), self.targets[index]


def test_torchvision_source_with_fake_dataset(tmp_path, monkeypatch):
    made: dict[str, FakeCifar] = {}
    calls = []

    def factory(root, split, download):
        calls.append((root, split, download))
        made.setdefault(split, FakeCifar(30 if split == "train" else 10, seed=len(made)))
        return made[split]

    spec = TorchvisionSpec(factory, CIFAR10_CLASSES, 3, ("train", "test"))
    monkeypatch.setitem(torchvision_datasets.TORCHVISION_DATASETS, "CIFAR10", spec)
    dm = ImageClassificationDataModule(
        TorchvisionDataset(name="CIFAR10", root=str(tmp_path)),
        image_size=32,
        batch_size=8,
        mean=[0.0],
        std=[1.0],
    )
    assert dm.class_names == [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    train, val, test = split_items(dm, "train"), split_items(dm, "val"), split_items(dm, "test")
    assert {split for _, split, _ in calls} == {"train", "test"}
    assert all(download is False for _, _, download in calls)
    assert len(train) + len(val) == 30 and len(test) == 10
    assert {p for p, _ in train} | {p for p, _ in val} == {f"CIFAR10/train/{i:06d}" for i in range(30)}
    assert not {p for p, _ in train} & {p for p, _ in val}
    assert [p for p, _ in test] == [f"CIFAR10/test/{i:06d}" for i in range(10)]
    assert [int(label) for _, label in test] == made["test"].targets
    assert {int(label) for _, label in val} == set(range(10))  # stratified: 3 per class, 1 in val
    item = dm.test_dataloader().dataset[3]
    assert torch.allclose(
        item["image"] * 255, torch.from_numpy(made["test"].arrays[3]).permute(2, 0, 1).float()
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["label"].dtype == torch.long


def test_torchvision_missing_without_download(tmp_path):
    dm = ImageClassificationDataModule(
        TorchvisionDataset(name="CIFAR10", root=str(tmp_path / "none")), image_size=32, batch_size=8
    )
    assert dm.class_names == CIFAR10_CLASSES
    with pytest.raises(MissingInputError, match="download: true"):
        dm.setup()


# ----------------------------------------------------------------------------- predict
def test_predict_root(tmp_path):
    predict = tmp_path / "predict"
    predict.mkdir()
    files = []
    for i, name in enumerate(["b.png", "a.png", "sub/c.jpg"]):
        (predict / name).parent.mkdir(exist_ok=True)
        Image.fromarray(ShapeImages(3, 24, seed=5).sample(i)[0]).save(predict / name)
        files.append(str(predict / name))
    (predict / "readme.txt").write_text("not an image")
    dm = module(SyntheticShapes(8), predict_root=str(predict), batch_size=2)
    batches = list(dm.predict_dataloader())  # without an explicit setup("predict")
    assert [p for b in batches for p in b["path"]] == sorted(files)
    for batch in batches:
        assert "label" not in batch
        assert batch["image"].shape[1:] == (3, SIZE, SIZE)
    dm.setup("predict")
    assert [p for b in dm.predict_dataloader() for p in b["path"]] == sorted(files)


def test_predict_root_empty(tmp_path):
    (tmp_path / "predict").mkdir()
    dm = module(SyntheticShapes(8), predict_root=str(tmp_path / "predict"))
    with pytest.raises(InputError, match="has no images"):
        dm.setup("predict")


def test_predict_defaults_to_test_set():
    dm = module(SyntheticShapes(8))
    assert split_paths(dm, "predict") == split_paths(dm, "test")


# ----------------------------------------------------------------------------- transforms
def test_build_transform_resize_then_centre_crop():
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    out = build_transform(image_size=48, resize=56)(image=image)["image"]
    assert out.shape == (3, 48, 48) and out.dtype == torch.float32
    assert build_transform(image_size=(20, 30))(image=image)["image"].shape == (3, 20, 30)


def test_build_transform_without_normalisation():
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    out = build_transform(SIZE, mean=None, std=None)(image=image)["image"]
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert torch.allclose(out, torch.from_numpy(image).permute(2, 0, 1).float() / 255)


def test_imagenet_stats_averaged_for_one_channel():
    assert channel_stats(IMAGENET_MEAN, 1) == pytest.approx((sum(IMAGENET_MEAN) / 3,))
    assert channel_stats(IMAGENET_MEAN, 3) == IMAGENET_MEAN
    assert channel_stats([0.5], 3) == (0.5, 0.5, 0.5)
    assert channel_stats(None, 1) is None
    with pytest.raises(ValueError):
        channel_stats([0.1, 0.2], 3)
    image = np.full((SIZE, SIZE, 1), 128, dtype=np.uint8)
    out = build_transform(SIZE, channels=1)(image=image)["image"]
    expected = (128 / 255 - sum(IMAGENET_MEAN) / 3) / (sum(IMAGENET_STD) / 3)
    assert out.shape == (1, SIZE, SIZE)
    assert torch.allclose(out, torch.full_like(out, expected), atol=1e-5)


def test_augmentations_only_in_training():
    plain = module(SyntheticShapes(12))
    flipped = module(SyntheticShapes(12), augmentations=[A.HorizontalFlip(p=1.0)])
    for split in ("train", "val", "test"):
        loader = getattr(flipped, f"{split}_dataloader")()
        reference = getattr(plain, f"{split}_dataloader")().dataset
        for i in range(len(reference)):
            image, expected = loader.dataset[i]["image"], reference[i]["image"]
            if split == "train":
                assert torch.equal(image, torch.flip(expected, dims=[-1]))
                assert not torch.equal(image, expected)
            else:
                assert torch.equal(image, expected)


def test_image_and_batch_size_changes_are_honoured():
    dm = module(SyntheticShapes(24), batch_size=4)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, SIZE, SIZE)
    dm.image_size, dm.batch_size = 24, 6
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (6, 3, 24, 24)
    assert next(iter(dm.val_dataloader()))["image"].shape[2:] == (24, 24)


def test_bad_images_in_several_splits_are_reported_together(folder_with_bad_images):
    root, _, bad = folder_with_bad_images
    val_bad = root / "val" / "circle" / "broken.png"
    val_bad.write_bytes(b"\x89PNG broken")
    dm = module(ImageFolder(str(root)), bad_images="error")
    with pytest.raises(InputError) as error:
        dm.setup()
    message = str(error.value)
    assert "3 unreadable image(s)" in message
    assert all(str(path) in message for path in [*bad, val_bad])


def test_split_left_empty_by_bad_images_is_an_error(tmp_path):
    root = tmp_path / "data"
    write_image_folder(root / "train", per_class=2, num_classes=2, image_size=SIZE)
    for name in ("circle", "square"):
        (root / "val" / name).mkdir(parents=True)
        (root / "val" / name / "bad.jpg").write_bytes(b"not an image")
    dm = module(ImageFolder(str(root)), bad_images="skip")
    with pytest.raises(InputError, match="the val set has no readable images left"):
        dm.setup()


def test_multilabel_split_with_unique_combinations(tmp_path):
    """Rows whose label combinations are all different still split, with rare labels in both sets."""
    root = csv_images(tmp_path, 40)
    rng = np.random.default_rng(0)
    vectors, seen = [], set()
    while len(vectors) < 40:
        vector = tuple(int(v) for v in rng.integers(0, 2, 8))
        if vector not in seen and any(vector):
            seen.add(vector)
            vectors.append(vector)
    columns = [f"l{i}" for i in range(8)]
    rows = [{"image": f"id{i}", **dict(zip(columns, v, strict=True))} for i, v in enumerate(vectors)]
    csv_path = write_csv(root / "train.csv", rows)
    dm = module(
        CsvLabels(str(csv_path), path_format="{}.png", label_columns=columns),
        label_mode="multilabel",
        val_split=0.25,
    )
    train, val = split_items(dm, "train"), split_items(dm, "val")
    assert len(train) + len(val) == 40 and 8 <= len(val) <= 12
    assert all(np.sum([label for _, label in val], axis=0) > 0)  # every label appears in validation


def test_csv_string_labels_must_match_num_classes(tmp_path):
    root = csv_images(tmp_path, 6)
    rows = [{"image": f"id{i}", "label": ["cat", "dog", "cow"][i % 3]} for i in range(6)]
    csv_path = write_csv(root / "train.csv", rows)
    with pytest.raises(InputError, match="has 3 distinct labels but num_classes is 2"):
        module(CsvLabels(str(csv_path), path_format="{}.png", num_classes=2))


def test_cache_images_gives_the_same_batches_without_rereading(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_image_folder(root, per_class=4, num_classes=2, image_size=SIZE)
    plain = module(ImageFolder(str(root)))
    cached = module(ImageFolder(str(root)), cache_images=True)
    cached.setup()
    import vision_lightning.data.datasets as datasets

    def no_disk(*args, **kwargs):
        raise AssertionError("a cached data module read an image file again")

    monkeypatch.setattr(datasets, "read_image", no_disk)
    assert split_paths(cached, "val") and split_items(cached, "val")
    monkeypatch.undo()
    for (path_a, label_a), (path_b, label_b) in zip(
        split_items(plain, "train"), split_items(cached, "train"), strict=True
    ):
        assert path_a == path_b and label_a == label_b
    image_a = plain.val_dataloader().dataset[0]["image"]
    image_b = cached.val_dataloader().dataset[0]["image"]
    assert torch.equal(image_a, image_b)


def test_cache_decodes_a_shared_source_once(tmp_path, monkeypatch):
    """Train and validation split one folder: each file is decoded once, not once per split."""
    root = tmp_path / "data"
    paths = write_image_folder(root, per_class=4, num_classes=2, image_size=SIZE)
    import vision_lightning.data.datasets as datasets

    reads = Counter()
    real_read = datasets.read_image

    def counting_read(path, channels=3):
        reads[path] += 1
        return real_read(path, channels)

    monkeypatch.setattr(datasets, "read_image", counting_read)
    module(ImageFolder(str(root)), cache_images=True).setup()
    assert sorted(reads) == sorted(str(p) for p in paths)
    assert set(reads.values()) == {1}


# ----------------------------------------------------------------------------- typed sources
def test_folder_class_names_fix_order_and_allow_missing_folders(tmp_path):
    root = tmp_path / "data"
    write_image_folder(root / "train", per_class=2, num_classes=2, image_size=SIZE)
    write_image_folder(root / "val", per_class=1, num_classes=2, image_size=SIZE, seed=1)
    dm = module(ImageFolder(str(root), class_names=["square", "circle", "triangle"]))
    assert dm.class_names == ["square", "circle", "triangle"] and dm.num_classes == 3
    for path, label in split_items(dm, "train") + split_items(dm, "val"):
        assert Path(path).parent.name == dm.class_names[int(label)]
    with pytest.raises(InputError, match="circle"):  # a folder the class list lacks
        module(ImageFolder(str(root), class_names=["square", "triangle"]))
    with pytest.raises(InputError, match="distinct"):
        ImageFolder(str(root), class_names=["a", "a"])


@pytest.mark.parametrize("label_mode", ["multilabel", "soft"])
def test_one_target_per_class_needs_a_csv(tmp_path, label_mode):
    root = tmp_path / "data"
    write_image_folder(root, per_class=2, num_classes=2, image_size=SIZE)
    with pytest.raises(InputError, match="CsvLabels"):
        module(ImageFolder(str(root)), label_mode=label_mode)
    with pytest.raises(InputError, match="CsvLabels"):
        module(SyntheticShapes(8), label_mode=label_mode)


def test_csv_source_checks_its_own_arguments(tmp_path):
    csv_path = write_csv(tmp_path / "train.csv", [{"image": "a.png", "label": 0}])
    with pytest.raises(InputError, match="fold_column"):
        CsvLabels(str(csv_path), fold=2)
    with pytest.raises(InputError, match="path_format"):
        CsvLabels(str(csv_path), path_format="images/a.png")
    with pytest.raises(InputError, match="label_columns"):
        CsvLabels(str(csv_path), label_columns=[])
    with pytest.raises(InputError, match="class_names has 2 names but num_classes is 3"):
        CsvLabels(str(csv_path), class_names=["a", "b"], num_classes=3)


def test_synthetic_source_binary_default_seed_and_size():
    assert module(SyntheticShapes(8), label_mode="binary").class_names == ["circle", "square"]
    with pytest.raises(InputError, match="samples"):
        SyntheticShapes(1)
    a, b = module(SyntheticShapes(8, seed=1)), module(SyntheticShapes(8, seed=2))
    images = [dm.test_dataloader().dataset[0]["image"] for dm in (a, b)]
    assert not torch.equal(*images)
    assert torch.equal(images[0], module(SyntheticShapes(8, seed=1)).test_dataloader().dataset[0]["image"])


def test_source_must_be_a_classification_source():
    with pytest.raises(InputError, match="ImageFolder"):
        ImageClassificationDataModule(source="folder")  # type: ignore[arg-type]


def test_torchvision_prepare_data_downloads_every_split(tmp_path, monkeypatch):
    calls = []

    def factory(root, split, download):
        calls.append((root, split, download))
        return FakeCifar(20, seed=0)

    spec = TorchvisionSpec(factory, CIFAR10_CLASSES, 3, ("train", "test"))
    monkeypatch.setitem(torchvision_datasets.TORCHVISION_DATASETS, "CIFAR10", spec)
    module(TorchvisionDataset("CIFAR10", root=str(tmp_path), download=True)).prepare_data()
    assert calls == [(str(tmp_path), "train", True), (str(tmp_path), "test", True)]
    calls.clear()
    module(TorchvisionDataset("CIFAR10", root=str(tmp_path))).prepare_data()
    assert calls == []
    assert TorchvisionDataset("CIFAR10").root == Path("data/CIFAR10")


def test_preprocessing_and_plain_hyperparameters(tmp_path):
    root = tmp_path / "data"
    write_image_folder(root, per_class=2, num_classes=2, image_size=SIZE, channels=1)
    dm = module(ImageFolder(str(root)), channels=1, resize=20, image_size=SIZE)
    assert dm.preprocessing() == {
        "image_size": SIZE, "mean": [0.0], "std": [1.0], "channels": 1, "resize": 20,
        "class_names": ["circle", "square"], "label_mode": "multiclass",
    }  # fmt: skip
    assert dm.hparams["source"] == {
        "class_path": "vision_lightning.data.classification_sources.ImageFolder",
        "init_args": {"root": str(root), "class_names": None},
    }
    buffer = io.BytesIO()
    torch.save({"hparams": dict(dm.hparams), "preprocessing": dm.preprocessing()}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["hparams"]["source"]["init_args"]["root"] == str(root)
    assert repr(dm.source) == f"ImageFolder(root={str(root)!r}, class_names=None)"


def test_sources_from_yaml_by_class_path(tmp_path):
    """The YAML form: `source: {class_path, init_args}`, full or short class names."""
    from jsonargparse import ArgumentParser

    root = tmp_path / "data"
    write_image_folder(root, per_class=3, num_classes=2, image_size=SIZE)
    csv_path = write_csv(tmp_path / "labels.csv", [{"image": f"id{i}.png", "label": i % 2} for i in range(4)])
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ImageClassificationDataModule, "data")
    sources = {
        "vision_lightning.data.ImageFolder": ({"root": str(root)}, ["circle", "square"]),
        "CsvLabels": ({"csv_path": str(csv_path), "class_names": ["no", "yes"]}, ["no", "yes"]),
        "TorchvisionDataset": ({"name": "MNIST"}, [str(i) for i in range(10)]),
        "vision_lightning.data.classification_sources.SyntheticShapes": ({"num_classes": 3}, None),
    }
    for class_path, (init_args, classes) in sources.items():
        data = {"source": {"class_path": class_path, "init_args": init_args}, "loader": {"num_workers": 0}}
        config = parser.parse_object({"data": data})
        dm = parser.instantiate_classes(config).data
        assert isinstance(dm.source, ClassificationSource) and class_path.endswith(type(dm.source).__name__)
        assert dm.class_names == (classes or ["circle", "square", "triangle"])
    config = parser.parse_args(["--data.source", "ImageFolder", "--data.source.root", str(root)])
    assert parser.instantiate_classes(config).data.class_names == ["circle", "square"]


def test_rebuilt_from_its_saved_hyperparameters(tmp_path):
    """`load_from_checkpoint` calls the constructor with the saved (plain) hyperparameters: the
    source and the loader options come back from their {class_path, init_args} descriptions."""
    root = tmp_path / "data"
    write_image_folder(root, per_class=2, num_classes=2, image_size=SIZE)
    dm = module(ImageFolder(str(root), class_names=["square", "circle"]), loader={"num_workers": 0})
    buffer = io.BytesIO()
    torch.save(dict(dm.hparams), buffer)
    buffer.seek(0)
    again = ImageClassificationDataModule(**torch.load(buffer, weights_only=True))
    assert isinstance(again.source, ImageFolder) and again.class_names == ["square", "circle"]
    assert again.loader == dm.loader and again.preprocessing() == dm.preprocessing()
    assert split_paths(again, "val") == split_paths(dm, "val")
    with pytest.raises(InputError, match="class_path"):
        module({"root": str(root)})
    with pytest.raises(InputError, match="does not name a ClassificationSource"):
        module({"class_path": "vision_lightning.data.base.LoaderOptions", "init_args": {}})


# ----------------------------------------------------------------------------- labels checked on load
def _label_csv(tmp_path: Path, labels: list[str], column: str = "label") -> Path:
    """A CSV of `len(labels)` existing images and these label texts (written verbatim)."""
    root = csv_images(tmp_path, len(labels))
    lines = [f"image,{column}"] + [f"id{i}.png,{label}" for i, label in enumerate(labels)]
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return root / "train.csv"


@pytest.mark.parametrize(
    ("labels", "line", "problem"),
    [
        (["a", "b", "", "a"], 4, "is empty"),
        (["a", "NaN", "b", "a"], 3, "holds 'NaN', a missing value"),
        (["a", "b", "a", "None"], 5, "holds 'None', a missing value"),
        (["0", "1", "1.5", "0"], 4, "holds '1.5': class ids are whole numbers"),
        (["0", "1", "-1", "0"], 4, "holds '-1': class ids are whole numbers"),
        (["0", "cat", "1", "0"], 3, "holds the name 'cat' but line 2 holds the number '0'"),
    ],
)
def test_csv_label_cells_are_checked_naming_file_line_and_value(tmp_path, labels, line, problem):
    csv_path = _label_csv(tmp_path, labels)
    with pytest.raises(InputError) as error:
        module(CsvLabels(str(csv_path)))
    assert str(error.value).startswith(f"{csv_path} line {line} column 'label' {problem}")


def test_csv_line_numbers_count_quoted_line_breaks(tmp_path):
    root = csv_images(tmp_path, 3)
    (root / "train.csv").write_text('image,label,note\nid0.png,a,"two\nlines"\nid1.png,,x\nid2.png,b,y\n')
    with pytest.raises(InputError, match=r"train\.csv line 4 column 'label' is empty"):
        module(CsvLabels(str(root / "train.csv")))


def test_csv_test_labels_are_checked_too(tmp_path):
    train = _label_csv(tmp_path, ["a", "b", "a", "b"])
    (train.parent / "test.csv").write_text("image,label\nid0.png,a\nid1.png,nan\n")
    with pytest.raises(InputError, match=r"test\.csv line 3 column 'label' holds 'nan'"):
        module(CsvLabels(str(train), test_csv=str(train.parent / "test.csv"))).setup()


def test_csv_ids_past_an_explicit_num_classes_name_both(tmp_path):
    csv_path = _label_csv(tmp_path, ["0", "1", "4", "1"])
    with pytest.raises(InputError) as error:
        module(CsvLabels(str(csv_path), num_classes=3))
    assert str(error.value).startswith(
        f"{csv_path} line 4 column 'label' holds class id 4, but num_classes is 3"
    )


def test_csv_labels_outside_explicit_class_names_name_the_line(tmp_path):
    csv_path = _label_csv(tmp_path, ["cat", "dog", "cow"])
    with pytest.raises(InputError) as error:
        module(CsvLabels(str(csv_path), class_names=["cat", "dog"])).setup()
    assert str(error.value).startswith(
        f"{csv_path} line 4 column 'label' holds 'cow', which is not one of the 2"
    )


@pytest.mark.parametrize(
    ("mode", "value", "problem"),
    [
        ("soft", "nan", "holds 'nan', a missing value: soft labels must be finite numbers"),
        ("soft", "inf", "holds 'inf': soft labels must be finite numbers"),
        ("soft", "-Infinity", "holds '-Infinity': soft labels must be finite numbers"),
        ("soft", "1.5", "holds '1.5': soft labels are probabilities in 0..1"),
        ("soft", "-0.1", "holds '-0.1': soft labels are probabilities"),
        ("soft", "", "is empty: soft labels must be finite numbers"),
        ("soft", "high", "holds 'high': soft labels must be finite numbers"),
        ("multilabel", "NaN", "holds 'NaN', a missing value: multilabel labels must be finite"),
        ("multilabel", "0.5", "holds '0.5': multilabel columns hold 0 or 1"),
    ],
)
def test_soft_and_multilabel_cells_are_checked(tmp_path, mode, value, problem):
    root = csv_images(tmp_path, 3)
    rows = ["image,a,b", "id0.png,1,0", f"id1.png,0,{value}", "id2.png,0,1"]
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError) as error:
        module(CsvLabels(str(root / "train.csv"), label_columns=["a", "b"]), label_mode=mode).setup()
    assert str(error.value).startswith(f"{root / 'train.csv'} line 3 column 'b' {problem}")


def test_soft_rows_of_zeros_are_refused(tmp_path):
    root = csv_images(tmp_path, 2)
    (root / "train.csv").write_text("image,a,b\nid0.png,0.3,0.7\nid1.png,0,0\n")
    with pytest.raises(InputError, match=r"train\.csv line 3: every soft label is 0"):
        module(CsvLabels(str(root / "train.csv"), label_columns=["a", "b"]), label_mode="soft").setup()


def test_fold_cells_must_be_whole_numbers(tmp_path):
    root = csv_images(tmp_path, 3)
    (root / "train.csv").write_text("image,label,fold\nid0.png,a,0\nid1.png,b,\nid2.png,a,1\n")
    with pytest.raises(
        InputError, match=r"train\.csv line 3 column 'fold' holds '': folds are whole numbers"
    ):
        module(CsvLabels(str(root / "train.csv"), fold_column="fold")).setup()


def test_an_image_on_two_lines_with_two_labels_is_an_error_the_same_twice_a_warning(tmp_path, caplog):
    root = csv_images(tmp_path, 3)
    (root / "train.csv").write_text("image,label\nid0.png,a\nid1.png,b\nid0.png,b\nid2.png,a\n")
    with pytest.raises(InputError) as error:
        module(CsvLabels(str(root / "train.csv"))).setup()
    assert f"lists {root / 'id0.png'} on line 2 and again on line 4 with another label" in str(error.value)
    (root / "train.csv").write_text("image,label\nid0.png,a\nid1.png,b\nid0.png,a\nid2.png,b\n")
    with caplog.at_level(logging.WARNING):
        module(CsvLabels(str(root / "train.csv"))).setup()
    assert f"{root / 'id0.png'} (lines 2 and 4)" in caplog.text


# ----------------------------------------------------------------------------- linked class folders
def _two_class_tree(root: Path) -> None:
    for name in ("a/x0.png", "a/x1.png", "b/y0.png", "b/y1.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((SIZE, SIZE, 3), 60 if name[0] == "a" else 200, np.uint8)).save(root / name)


@pytest.mark.parametrize(
    ("link", "target", "first", "second"),
    [
        ("c", "a", "a/x0.png (class a)", "c/x0.png (class c)"),  # a class folder reached twice
        ("a/more", "b", "a/more/y0.png (class a)", "b/y0.png (class b)"),  # a link into another class
        ("a/up", ".", "a/up/b/y0.png (class a)", "b/y0.png (class b)"),  # a link to the root
    ],
)
def test_an_image_reached_from_two_class_folders_is_an_error_naming_both(
    tmp_path, link, target, first, second
):
    root = tmp_path / "tree"
    _two_class_tree(root)
    (root / link).symlink_to((root / target).resolve())
    with pytest.raises(InputError) as error:
        module(ImageFolder(str(root)))
    assert f"{root / first} and {root / second} are the same file" in str(error.value)


def test_links_inside_one_class_are_followed_and_each_file_read_once(tmp_path):
    root = tmp_path / "tree"
    _two_class_tree(root)
    (tmp_path / "more_b").mkdir()
    Image.new("RGB", (SIZE, SIZE), (200, 200, 200)).save(tmp_path / "more_b/y2.png")
    (root / "b/extra").symlink_to(tmp_path / "more_b")  # a data set linked into a class: followed
    (root / "b/again").symlink_to(root / "b")  # a loop: skipped
    (root / "b/y0_copy.png").symlink_to(root / "b/y0.png")  # one file under two names: read once
    dm = module(ImageFolder(str(root)), val_split=0.4)
    assert dm.class_names == ["a", "b"]
    items = split_items(dm, "train") + split_items(dm, "val")
    assert sorted(Path(p).name for p, label in items if int(label) == 1) == [
        "y0.png",
        "y1.png",
        "y2.png",
    ]


# ----------------------------------------------------------------------------- 16-bit images
def test_sixteen_bit_images_give_the_tensors_of_their_eight_bit_versions(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a/0.png", "a/1.png", "b/2.png", "b/3.png"):
        gray = rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
        for root, array in (("eight", gray), ("sixteen", gray.astype(np.uint16) * 257)):
            (tmp_path / root / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(tmp_path / root / name)
    datasets = [
        split_dataset(module(ImageFolder(str(tmp_path / root)), val_split=0.5), "val")
        for root in ("eight", "sixteen")
    ]
    eight, sixteen = ([d[i]["image"] for i in range(len(d))] for d in datasets)
    assert len(eight) == 2 and all((e - s).abs().max() <= 1 / 255 for e, s in zip(eight, sixteen))
    assert all(0.2 < s.mean() < 0.8 for s in sixteen)  # not clipped to white


def test_a_validation_folder_linked_to_training_images_is_named_in_a_warning(tmp_path, caplog):
    root = tmp_path / "tree"
    _two_class_tree(root / "train")
    (root / "val").mkdir()
    (root / "val/a").symlink_to(root / "train/a")  # validation would score images trained on
    _two_class_tree(tmp_path / "other")
    (root / "val/b").symlink_to(tmp_path / "other/b")
    with caplog.at_level(logging.WARNING):
        module(ImageFolder(str(root))).setup()
    expected = f"2 image(s) of the train set are in the val set too (through a link or a copy of the folder): {root / 'train/a/x0.png'} = {root / 'val/a/x0.png'}"
    assert expected in caplog.text
