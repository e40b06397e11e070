"""SegmentationDataModule and its typed sources: synthetic shapes, paired image/mask folders (ISBI, images/ +
masks/, `<id>_mask.png` beside `<id>.png`, explicit val/), mask formats, joint augmentation, Kaggle RLE
CSVs (carvana and siim), group splits, bad input and the image cache.

Everything is generated under `tmp_path` with tiny images so the whole file runs in seconds.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import split_dataset, write_csv
from vision_lightning.data.datasets import collate
from vision_lightning.data.segmentation import SegmentationDataModule
from vision_lightning.data.segmentation_sources import (
    MaskFolders,
    PaletteMasks,
    RleCsv,
    SegmentationSource,
    SyntheticShapes,
    as_source,
)
from vision_lightning.data.splits import group_split
from vision_lightning.data.synthetic import render_shape
from vision_lightning.utils.errors import InputError, MissingInputError
from vision_lightning.utils.images import read_mask
from vision_lightning.utils.rle import rle_encode

SIZE = 16


# ----------------------------------------------------------------------------- helpers
def module(source: SegmentationSource | None = None, **kwargs) -> SegmentationDataModule:
    """A data module of `source` (default: synthetic shapes) with tiny defaults (image_size 16, raw
    [0, 1] pixels, batch 4)."""
    defaults = {"image_size": SIZE, "batch_size": 4, "mean": [0.0], "std": [1.0]}
    if source is not None:
        defaults["source"] = source
    return SegmentationDataModule(**{**defaults, **kwargs})


def items(dm: SegmentationDataModule, split: str) -> list[dict]:
    """Every item of `split`'s data set, in order (no shuffling, no batching)."""
    dataset = split_dataset(dm, split)
    return [dataset[i] for i in range(len(dataset))]


def paths(dm: SegmentationDataModule, split: str) -> list[str]:
    return [item["path"] for item in items(dm, split)]


def masks_by_path(dm: SegmentationDataModule, *splits: str) -> dict[str, np.ndarray]:
    return {item["path"]: item["mask"].numpy() for split in splits for item in items(dm, split)}


def save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def random_image(seed: int, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def random_mask(seed: int, height: int = SIZE, width: int = SIZE, classes: int = 2) -> np.ndarray:
    """Blocky class ids (a few rectangles), never symmetric, with every class present."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), dtype=np.uint8)
    for class_id in range(1, classes):
        for _ in range(2):
            y, x = rng.integers(0, height - 3), rng.integers(0, width - 3)
            h, w = rng.integers(2, height // 2), rng.integers(2, width // 2)
            mask[y : y + h, x : x + w] = class_id
    mask[0, 0] = 0
    for class_id in range(1, classes):
        mask[height - 1, class_id] = class_id
    return mask


def write_pairs(
    image_dir: Path,
    mask_dir: Path,
    names: list[str],
    classes: int = 2,
    scale: int = 1,
    mask_suffix: str = "",
    image_ext: str = ".png",
    mask_ext: str = ".png",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Image/mask files for `names`; returns {image path: class-id mask as written / scale}."""
    written = {}
    for i, name in enumerate(names):
        mask = random_mask(seed + i, classes=classes)
        image_path = save(image_dir / f"{name}{image_ext}", random_image(seed + i))
        save(mask_dir / f"{name}{mask_suffix}{mask_ext}", (mask * scale).astype(np.uint8))
        written[str(image_path)] = mask
    return written


def assert_batch(batch: dict, channels: int, height: int, width: int, mask_planes: int | None = None) -> None:
    n = len(batch["path"])
    assert set(batch) == {"image", "mask", "path", "size"}
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (n, channels, height, width)
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["mask"].dtype == torch.uint8
    if mask_planes is None:
        assert batch["mask"].shape == (n, height, width)
    else:
        assert batch["mask"].shape == (n, mask_planes, height, width)
    assert isinstance(batch["path"], list) and all(isinstance(p, str) for p in batch["path"])
    assert batch["size"].shape == (n, 2)


# ----------------------------------------------------------------------------- synthetic
@pytest.mark.parametrize("channels", [3, 1])
def test_synthetic_binary_batches_and_splits(channels):
    dm = module(SyntheticShapes(12), channels=channels)
    dm.setup("fit")
    assert dm.class_names == ["background", "foreground"] and dm.num_classes == 2
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        batch = next(iter(loader))
        assert_batch(batch, channels, SIZE, SIZE)
        assert set(batch["mask"].unique().tolist()) == {0, 1}
        assert (batch["size"] == torch.tensor([SIZE, SIZE])).all()
    train, val, test = paths(dm, "train"), paths(dm, "val"), paths(dm, "test")
    assert len(train) + len(val) == 12 and not set(train) & set(val) and val
    assert sorted(train + val) == [f"synthetic/{i:06d}" for i in range(12)]
    assert test == [f"synthetic_test/{i:06d}" for i in range(3)]


def test_synthetic_multiclass_masks_are_shape_ids():
    dm = module(SyntheticShapes(16), mode="multiclass", split_seed=5)
    dm.setup("fit")
    assert dm.class_names == ["background", "circle", "square", "triangle", "cross"]
    batch = next(iter(dm.val_dataloader()))
    assert_batch(batch, 3, SIZE, SIZE)
    kinds = set()
    for item in items(dm, "train") + items(dm, "val"):
        index = int(item["path"].split("/")[1])
        _, label, shape = render_shape(5, index, SIZE, 4)
        assert np.array_equal(item["mask"].numpy(), shape.astype(np.uint8) * (label + 1))
        values = set(item["mask"].unique().tolist())
        assert values == {0, label + 1}
        kinds.add(label)
    assert len(kinds) > 1  # several shapes, hence several class ids across the data set


def test_synthetic_multilabel_planes():
    dm = module(SyntheticShapes(12), mode="multilabel", num_classes=3)
    dm.setup("fit")
    assert dm.class_names == ["circle", "square", "triangle"] and dm.num_classes == 3
    batch = next(iter(dm.train_dataloader()))
    assert_batch(batch, 3, SIZE, SIZE, mask_planes=3)
    assert set(batch["mask"].unique().tolist()) == {0, 1}
    for item in items(dm, "val") + items(dm, "test"):
        planes = item["mask"]
        assert planes.shape == (3, SIZE, SIZE)
        assert int((planes.flatten(1).amax(1) > 0).sum()) == 1  # one shape, one non-empty plane


def test_synthetic_is_deterministic_by_seed():
    def val_masks(seed: int) -> dict[str, np.ndarray]:
        dm = module(SyntheticShapes(12), mode="multiclass", split_seed=seed)
        dm.setup("fit")
        return masks_by_path(dm, "val")

    first, again, other = val_masks(3), val_masks(3), val_masks(4)
    assert list(first) == list(again)
    assert all(np.array_equal(first[p], again[p]) for p in first)
    assert list(first) != list(other) or any(not np.array_equal(first[p], other[p]) for p in first)


def test_synthetic_class_names_override_and_count_checks():
    assert module(mode="multiclass", num_classes=3).class_names == ["background", "circle", "square"]
    assert module(class_names=["bg", "cell"]).class_names == ["bg", "cell"]
    with pytest.raises(InputError, match="binary"):
        module(mode="binary", num_classes=3)
    with pytest.raises(InputError, match="class_names"):
        module(mode="multiclass", num_classes=3, class_names=["a", "b"])
    with pytest.raises(InputError, match="mode"):
        module(mode="instance")


# ----------------------------------------------------------------------------- paired folders
def write_isbi(root: Path, count: int = 6, test_count: int = 3) -> dict[str, np.ndarray]:
    """ISBI 2012 layout: train/image/N.png + train/label/N.png (0/255), test/N.png without labels."""
    written = write_pairs(
        root / "train" / "image", root / "train" / "label", [str(i) for i in range(count)], 2, 255
    )
    for i in range(test_count):
        save(root / "test" / f"{i}.png", random_image(100 + i)[..., 0])
    return written


@pytest.mark.parametrize("folders", [{}, {"mask_dir": "label"}])
def test_isbi_layout_scale255_and_predict_unlabelled_test(tmp_path, folders):
    root = tmp_path / "isbi"
    written = write_isbi(root)
    dm = module(MaskFolders(str(root), mask_format="scale255", **folders), val_split=0.34)
    dm.setup("fit")
    masks = masks_by_path(dm, "train", "val")
    assert set(masks) == set(written) and len(paths(dm, "val")) == 2
    assert not set(paths(dm, "train")) & set(paths(dm, "val"))
    for path, mask in masks.items():
        assert mask.dtype == np.uint8 and np.array_equal(mask, written[path])
    assert_batch(next(iter(dm.train_dataloader())), 3, SIZE, SIZE)

    # the unlabelled test/ folder is predicted; the test stage falls back to validation
    dm.setup("test")
    assert paths(dm, "test") == paths(dm, "val")
    dm.setup("predict")
    predict = items(dm, "predict")
    assert [p["path"] for p in predict] == [str(root / "test" / f"{i}.png") for i in range(3)]
    batch = next(iter(dm.predict_dataloader()))
    assert set(batch) == {"image", "path", "size"}
    assert batch["image"].shape == (3, 3, SIZE, SIZE) and batch["image"].dtype == torch.float32


def test_images_and_masks_folders(tmp_path):
    root = tmp_path / "data"
    written = write_pairs(root / "images", root / "masks", [f"s{i}" for i in range(5)], classes=3)
    dm = module(MaskFolders(str(root)), mode="multiclass", num_classes=3)
    dm.setup("fit")
    assert dm.class_names == ["0", "1", "2"]
    masks = masks_by_path(dm, "train", "val")
    assert set(masks) == set(written)
    assert all(np.array_equal(masks[p], written[p]) for p in written)
    assert set(np.unique(np.stack(list(masks.values()))).tolist()) == {0, 1, 2}


def test_masks_beside_images_with_suffix(tmp_path):
    root = tmp_path / "data"
    written = write_pairs(root, root, [f"img{i}" for i in range(5)], mask_suffix="_mask")
    assert len(list(root.glob("*_mask.png"))) == 5
    dm = module(MaskFolders(str(root), mask_suffix="_mask"))
    dm.setup("fit")
    all_paths = paths(dm, "train") + paths(dm, "val")
    assert sorted(all_paths) == sorted(written)  # the _mask files are not taken as images
    assert not any("_mask" in Path(p).name for p in all_paths)
    masks = masks_by_path(dm, "train", "val")
    assert all(np.array_equal(masks[p], written[p]) for p in written)


def test_jpeg_images_with_png_masks(tmp_path):
    root = tmp_path / "data"
    written = write_pairs(root / "images", root / "masks", ["a", "b", "c", "d"], image_ext=".jpg")
    for name in ("a", "b", "c", "d"):  # decoys: JPEG previews next to the real masks, all foreground
        save(root / "masks" / f"{name}.jpg", np.full((SIZE, SIZE), 1, dtype=np.uint8))
    dm = module(MaskFolders(str(root), mask_extension=".png"))
    dm.setup("fit")
    masks = masks_by_path(dm, "train", "val")
    assert set(masks) == set(written) and all(p.endswith(".jpg") for p in masks)
    assert all(np.array_equal(masks[p], written[p]) for p in written)
    # mask_extension without its dot works too
    dm = module(MaskFolders(str(root), mask_extension="png"))
    masks = masks_by_path(dm, "train", "val")
    assert all(np.array_equal(masks[p], written[p]) for p in written)


def test_explicit_train_val_test_folders(tmp_path):
    root = tmp_path / "data"
    train = write_pairs(root / "train" / "images", root / "train" / "masks", ["t0", "t1", "t2", "t3"])
    val = write_pairs(root / "val" / "images", root / "val" / "masks", ["v0", "v1"], seed=10)
    test = write_pairs(root / "test" / "images", root / "test" / "masks", ["x0"], seed=20)
    dm = module(MaskFolders(str(root)), val_split=0.5)
    dm.setup("fit")
    assert sorted(paths(dm, "train")) == sorted(train)
    assert sorted(paths(dm, "val")) == sorted(val)
    assert paths(dm, "test") == list(test)
    for split, written in (("train", train), ("val", val), ("test", test)):
        masks = masks_by_path(dm, split)
        assert all(np.array_equal(masks[p], written[p]) for p in written)


def test_val_folder_without_masks_is_an_error(tmp_path):
    root = tmp_path / "data"
    write_pairs(root / "train" / "images", root / "train" / "masks", ["a", "b"])
    save(root / "val" / "v.png", random_image(1))
    with pytest.raises(InputError, match="has no masks"):
        module(MaskFolders(str(root))).setup("fit")


def test_folder_source_rejects_multilabel(tmp_path):
    root = tmp_path / "data"
    write_pairs(root / "images", root / "masks", ["a", "b"])
    with pytest.raises(InputError, match="multilabel"):
        module(MaskFolders(str(root)), mode="multilabel", num_classes=2).setup("fit")


# ----------------------------------------------------------------------------- mask formats
@pytest.fixture
def mask_file(tmp_path):
    def write(array: np.ndarray, name: str = "m.png", **kwargs) -> Path:
        return save(tmp_path / name, array, **kwargs)

    return write


def test_mask_format_index(mask_file):
    mask = random_mask(0, classes=4)
    assert np.array_equal(read_mask(mask_file(mask), "index"), mask)
    # a grey RGB file (R = G = B) is read as its class ids
    assert np.array_equal(read_mask(mask_file(np.stack([mask] * 3, axis=2), "rgb.png"), "index"), mask)
    colour = np.stack([mask, mask * 0, mask], axis=2)
    with pytest.raises(InputError, match="colour image") as error:
        read_mask(mask_file(colour, "colour.png"), "index")
    assert "colour.png" in str(error.value)


def test_mask_format_palette_png_gives_indices(mask_file):
    mask = random_mask(1, classes=3)
    image = Image.fromarray(mask, mode="P")
    image.putpalette([0, 0, 0, 200, 10, 10, 10, 180, 60] + [0] * (256 * 3 - 9))
    path = mask_file(np.zeros((1, 1), np.uint8))
    image.save(path)
    assert Image.open(path).mode == "P"
    result = read_mask(path, "index")
    assert result.dtype == np.uint8 and np.array_equal(result, mask)


def test_mask_format_nonzero(mask_file):
    values = np.array([[0, 1, 2, 5], [255, 0, 17, 0]], dtype=np.uint8)
    expected = (values >= 1).astype(np.uint8)
    assert np.array_equal(read_mask(mask_file(values), "nonzero"), expected)


def test_mask_format_scale255_with_jpeg_like_noise(mask_file):
    values = np.array([[0, 3, 127, 128], [250, 255, 1, 200]], dtype=np.uint8)
    expected = np.array([[0, 0, 0, 1], [1, 1, 0, 1]], dtype=np.uint8)
    result = read_mask(mask_file(values), "scale255")
    assert result.dtype == np.uint8 and np.array_equal(result, expected)


def test_mask_format_scale255_one_bit_png(mask_file):
    """A 0/255 mask saved as a 1-bit PNG (PIL mode "1") reads as booleans; white is still class 1."""
    mask = random_mask(2)
    path = mask_file(np.zeros((1, 1), np.uint8))
    Image.fromarray(mask * 255).convert("1").save(path)
    assert Image.open(path).mode == "1"
    for mask_format in ("scale255", "nonzero", "index"):
        assert np.array_equal(read_mask(path, mask_format), mask), mask_format


def test_mask_format_scale255_jpeg_masks_in_a_module(tmp_path):
    root = tmp_path / "data"
    written = {}
    for i in range(4):
        mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
        mask[4:12, 2 + i : 9 + i] = 1
        written[str(save(root / "images" / f"{i}.png", random_image(i)))] = mask
        save(root / "masks" / f"{i}.jpg", mask * 255, quality=60)
    noisy = np.asarray(Image.open(root / "masks" / "0.jpg"))
    assert not set(np.unique(noisy).tolist()) <= {0, 255}  # JPEG really did add in-between values
    dm = module(MaskFolders(str(root), mask_format="scale255"))
    masks = masks_by_path(dm, "train", "val")
    assert all(np.array_equal(masks[p], written[p]) for p in written)


COLORS = [[0, 0, 0], [128, 64, 128], [220, 20, 60]]


def colour_mask(ids: np.ndarray) -> np.ndarray:
    return np.array(COLORS, dtype=np.uint8)[ids]


def test_mask_format_colors(mask_file, tmp_path):
    ids = random_mask(3, classes=3)
    assert np.array_equal(read_mask(mask_file(colour_mask(ids)), "colors", COLORS), ids)

    root = tmp_path / "camvid"
    written = {}
    for i in range(4):
        ids = random_mask(10 + i, classes=3)
        written[str(save(root / "images" / f"{i}.png", random_image(i)))] = ids
        save(root / "masks" / f"{i}.png", colour_mask(ids))
    dm = module(PaletteMasks(str(root), COLORS), mode="multiclass")
    assert dm.num_classes == 3
    masks = masks_by_path(dm, "train", "val")
    assert all(np.array_equal(masks[p], written[p]) for p in written)


def test_mask_format_colors_unknown_colour_names_the_file(tmp_path):
    root = tmp_path / "camvid"
    for i in range(3):
        save(root / "images" / f"{i}.png", random_image(i))
        save(root / "masks" / f"{i}.png", colour_mask(random_mask(i, classes=3)))
    bad = colour_mask(random_mask(5, classes=3))
    bad[2, 3] = [1, 2, 3]
    bad_path = save(root / "masks" / "1.png", bad)
    dm = module(PaletteMasks(str(root), COLORS), mode="multiclass")
    with pytest.raises(InputError) as error:
        dm.setup("fit")
    assert str(bad_path) in str(error.value) and "(1, 2, 3)" in str(error.value)


def test_mask_format_options_are_checked():
    with pytest.raises(InputError, match="mask_format"):
        MaskFolders("data", mask_format="rgb")
    with pytest.raises(InputError, match="PaletteMasks"):  # colour masks have a source of their own
        MaskFolders("data", mask_format="colors")
    with pytest.raises(InputError, match="colors"):
        PaletteMasks("data", [])
    with pytest.raises(InputError, match=r"colors\[1\]"):
        PaletteMasks("data", [[0, 0, 0], [300, 0, 0]])
    with pytest.raises(InputError, match="more than once"):
        PaletteMasks("data", [[0, 0, 0], [0, 0, 0]])
    with pytest.raises(InputError, match="colors lists 3 colours"):
        module(PaletteMasks("data", COLORS), mode="multiclass", num_classes=4)


def test_palette_masks_in_a_multiclass_module(tmp_path):
    root = tmp_path / "voc"
    written = {}
    for i in range(4):
        ids = random_mask(20 + i, classes=3)
        written[str(save(root / "JPEGImages" / f"{i}.jpg", random_image(i)))] = ids
        image = Image.fromarray(ids, mode="P")
        image.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
        (root / "SegmentationClass").mkdir(exist_ok=True)
        image.save(root / "SegmentationClass" / f"{i}.png")
    dm = module(
        MaskFolders(str(root), image_dir="JPEGImages", mask_dir="SegmentationClass"),
        mode="multiclass",
        class_names=["background", "aeroplane", "bicycle"],
    )
    masks = masks_by_path(dm, "train", "val")
    assert set(masks) == set(written)
    assert all(np.array_equal(masks[p], written[p]) for p in written)


def test_ignore_index_values_are_allowed(tmp_path):
    root = tmp_path / "data"
    written = {}
    for i in range(4):
        ids = random_mask(i, classes=3)
        ids[0, :4] = 255  # the "void" border of VOC masks
        written[str(save(root / "images" / f"{i}.png", random_image(i)))] = ids
        save(root / "masks" / f"{i}.png", ids)
    with pytest.raises(InputError, match="255"):
        module(MaskFolders(str(root)), mode="multiclass", num_classes=3).setup("fit")
    dm = module(MaskFolders(str(root), ignore_index=255), mode="multiclass", num_classes=3)
    masks = masks_by_path(dm, "train", "val")
    assert all(np.array_equal(masks[p], written[p]) for p in written)


# ----------------------------------------------------------------------------- joint augmentation
def encoded_pair(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A mask of class ids 0..3 and an image whose pixels encode it: R = 60 * class, G = 7 * column,
    B = 9 * row, so any geometric change of the image can be traced and compared with the mask."""
    yy, xx = np.mgrid[0:height, 0:width]
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[: height // 2, : width // 3] = 1  # top left: not symmetric in either direction
    mask[height // 2 :, width // 2 :] = 2
    mask[height - 3 :, 1:3] = 3
    image = np.stack([mask.astype(int) * 60, xx * 7, yy * 9], axis=2).astype(np.uint8)
    return image, mask


def decode(image: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class, column, row) encoded in an image tensor scaled to [0, 1]."""
    pixels = (image.numpy() * 255).round().astype(int)
    return pixels[0] // 60, pixels[1] // 7, pixels[2] // 9


def write_encoded(root: Path, count: int, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    image, mask = encoded_pair(height, width)
    for i in range(count):
        save(root / "images" / f"{i}.png", image)
        save(root / "masks" / f"{i}.png", mask)
    return mask


def test_horizontal_flip_moves_mask_with_image(tmp_path):
    root = tmp_path / "data"
    mask = write_encoded(root, 4)
    dm = module(
        MaskFolders(str(root)), mode="multiclass", num_classes=4, augmentations=[A.HorizontalFlip(p=1.0)]
    )
    batch = next(iter(dm.train_dataloader()))
    assert_batch(batch, 3, SIZE, SIZE)
    for image, flipped in zip(batch["image"], batch["mask"]):
        classes, columns, rows = decode(image)
        assert np.array_equal(flipped.numpy(), np.fliplr(mask))
        assert np.array_equal(classes, flipped.numpy())  # the image went the same way as the mask
        assert np.array_equal(columns[0], np.arange(SIZE)[::-1]) and np.array_equal(
            rows[:, 0], np.arange(SIZE)
        )
    for item in items(dm, "val"):  # no augmentation outside training
        assert np.array_equal(item["mask"].numpy(), mask)


@pytest.mark.parametrize("image_size", [11, 37])
def test_resize_keeps_class_ids(tmp_path, image_size):
    root = tmp_path / "data"
    mask = write_encoded(root, 3, 20, 24)
    dm = module(MaskFolders(str(root)), mode="multiclass", num_classes=4, image_size=image_size)
    for item in items(dm, "train") + items(dm, "val"):
        resized = item["mask"].numpy()
        assert resized.shape == (image_size, image_size) and resized.dtype == np.uint8
        assert set(np.unique(resized).tolist()) == {0, 1, 2, 3}  # nearest: no in-between values
        assert item["size"].tolist() == [20, 24]
        expected = np.asarray(Image.fromarray(mask).resize((image_size, image_size), Image.NEAREST))
        assert (resized == expected).mean() > 0.9


def test_crop_random_in_training_whole_in_validation(tmp_path):
    root = tmp_path / "data"
    height, width = 24, 32
    mask = write_encoded(root, 8, height, width)
    dm = module(MaskFolders(str(root)), mode="multiclass", num_classes=4, crop=True, val_split=0.25)
    offsets = set()
    for _ in range(3):
        for batch in dm.train_dataloader():
            assert_batch(batch, 3, SIZE, SIZE)
            for image, crop in zip(batch["image"], batch["mask"]):
                classes, columns, rows = decode(image)
                top, left = rows[0, 0], columns[0, 0]
                assert np.array_equal(crop.numpy(), mask[top : top + SIZE, left : left + SIZE])
                assert np.array_equal(classes, crop.numpy())
                offsets.add((top, left))
    assert len(offsets) > 1  # random crops, not one fixed window
    batch = next(iter(dm.val_dataloader()))
    assert_batch(batch, 3, height, width)
    assert all(np.array_equal(m.numpy(), mask) for m in batch["mask"])
    assert (batch["size"] == torch.tensor([height, width])).all()


def test_crop_pads_images_smaller_than_image_size(tmp_path):
    root = tmp_path / "data"
    write_encoded(root, 4, 10, 12)
    dm = module(MaskFolders(str(root)), mode="multiclass", num_classes=4, crop=True)
    batch = next(iter(dm.train_dataloader()))
    assert_batch(batch, 3, SIZE, SIZE)


# ----------------------------------------------------------------------------- RLE CSV
def rle_images(root: Path, names: list[str], height: int = SIZE, width: int = SIZE) -> None:
    for i, name in enumerate(names):
        save(root / name, random_image(i, height, width))


@pytest.mark.parametrize("order", ["F", "C"])
def test_rle_csv_carvana(tmp_path, order):
    root = tmp_path / "carvana"
    names = [f"car{i}_01.png" for i in range(6)]
    rle_images(root / "train", names)
    masks = {name: random_mask(30 + i) for i, name in enumerate(names)}
    masks[names[5]][:] = 0  # an empty mask is an empty string
    rows = [{"img": name, "rle_mask": rle_encode(masks[name], "carvana", order)} for name in names]
    assert rows[5]["rle_mask"] == ""
    csv_path = write_csv(tmp_path / "train_masks.csv", rows)
    dm = module(
        RleCsv(
            str(csv_path), root=str(root / "train"), path_column="img", rle_column="rle_mask", rle_order=order
        )
    )
    dm.setup("fit")
    decoded = masks_by_path(dm, "train", "val")
    assert set(decoded) == {str(root / "train" / n) for n in names}
    for name in names:
        assert np.array_equal(decoded[str(root / "train" / name)], masks[name]), name
    assert_batch(next(iter(dm.train_dataloader())), 3, SIZE, SIZE)

    # the other pixel order reads different (transposed) masks: the option matters
    other = module(
        RleCsv(
            str(csv_path),
            root=str(root / "train"),
            path_column="img",
            rle_column="rle_mask",
            rle_order="C" if order == "F" else "F",
        )
    )
    wrong = masks_by_path(other, "train", "val")
    assert any(not np.array_equal(wrong[p], decoded[p]) for p in decoded)


def test_rle_csv_siim_relative_offsets_and_several_rows(tmp_path):
    root = tmp_path / "siim"
    rle_images(root, ["p1.png", "p2.png", "p3.png", "p4.png"])
    first, second = np.zeros((SIZE, SIZE), np.uint8), np.zeros((SIZE, SIZE), np.uint8)
    first[2:6, 3:7] = 1
    second[9:14, 8:15] = 1
    single = random_mask(7)
    rows = [
        {"ImageId": "p1", " EncodedPixels": " " + rle_encode(first, "siim")},
        {"ImageId": "p2", " EncodedPixels": " -1"},
        {"ImageId": "p1", " EncodedPixels": " " + rle_encode(second, "siim")},
        {"ImageId": "p3", " EncodedPixels": " " + rle_encode(single, "siim")},
        {"ImageId": "p4", " EncodedPixels": " -1"},
    ]
    csv_path = write_csv(root / "train-rle.csv", rows)
    dm = module(
        RleCsv(
            str(csv_path),
            path_column="ImageId",
            path_format="{}.png",
            rle_column=" EncodedPixels",
            rle_format="siim",
        ),
        val_split=0.5,
    )
    dm.setup("fit")
    decoded = masks_by_path(dm, "train", "val")
    assert len(decoded) == 4  # p1's two rows are one image
    assert np.array_equal(decoded[str(root / "p1.png")], first | second)
    assert not decoded[str(root / "p2.png")].any() and not decoded[str(root / "p4.png")].any()
    assert np.array_equal(decoded[str(root / "p3.png")], single)


def test_rle_csv_class_column_multiclass(tmp_path):
    root = tmp_path / "steel"
    rle_images(root, ["a.png", "b.png", "c.png", "d.png"])
    road, car = np.zeros((SIZE, SIZE), np.uint8), np.zeros((SIZE, SIZE), np.uint8)
    road[8:, :] = 1
    car[3:7, 4:12] = 1
    rows = [
        {"ImageId": "a.png", "ClassId": "road", "EncodedPixels": rle_encode(road)},
        {"ImageId": "a.png", "ClassId": "car", "EncodedPixels": rle_encode(car)},
        {"ImageId": "b.png", "ClassId": "2", "EncodedPixels": rle_encode(road)},  # ids work as well
        {"ImageId": "c.png", "ClassId": "car", "EncodedPixels": rle_encode(car.T)},
        {"ImageId": "d.png", "ClassId": "road", "EncodedPixels": ""},
    ]
    csv_path = write_csv(root / "train.csv", rows)
    source = RleCsv(str(csv_path), path_column="ImageId", rle_column="EncodedPixels", class_column="ClassId")
    options = {"mode": "multiclass", "class_names": ["background", "car", "road"]}
    dm = module(source, **options)
    decoded = masks_by_path(dm, "train", "val")
    assert np.array_equal(decoded[str(root / "a.png")], road * 2 + car)  # no overlap here
    assert np.array_equal(decoded[str(root / "b.png")], road * 2)
    assert np.array_equal(decoded[str(root / "c.png")], car.T)
    assert not decoded[str(root / "d.png")].any()

    rows.append({"ImageId": "d.png", "ClassId": "bus", "EncodedPixels": ""})
    write_csv(csv_path, rows)
    with pytest.raises(InputError, match="bus") as error:
        module(source, **options).setup()
    assert "line 7" in str(error.value) and str(csv_path) in str(error.value)


def test_rle_csv_class_column_multilabel(tmp_path):
    root = tmp_path / "clouds"
    rle_images(root, ["a.png", "b.png", "c.png"])
    fish, flower = np.zeros((SIZE, SIZE), np.uint8), np.zeros((SIZE, SIZE), np.uint8)
    fish[2:10, 2:10] = 1
    flower[6:14, 6:14] = 1  # overlaps fish
    rows = [
        {"Image": "a.png", "Label": "Fish", "EncodedPixels": rle_encode(fish)},
        {"Image": "a.png", "Label": "Flower", "EncodedPixels": rle_encode(flower)},
        {"Image": "b.png", "Label": "Flower", "EncodedPixels": rle_encode(flower)},
        {"Image": "c.png", "Label": "Fish", "EncodedPixels": ""},
    ]
    csv_path = write_csv(root / "train.csv", rows)
    dm = module(
        RleCsv(str(csv_path), path_column="Image", rle_column="EncodedPixels", class_column="Label"),
        mode="multilabel",
        class_names=["Fish", "Flower"],
    )
    decoded = masks_by_path(dm, "train", "val")
    assert np.array_equal(decoded[str(root / "a.png")], np.stack([fish, flower]))
    assert np.array_equal(decoded[str(root / "b.png")], np.stack([fish * 0, flower]))
    assert not decoded[str(root / "c.png")].any()
    batch = next(iter(dm.val_dataloader()))
    assert batch["mask"].shape[1:] == (2, SIZE, SIZE) and batch["mask"].dtype == torch.uint8


def test_rle_csv_needs_class_column_and_columns(tmp_path):
    root = tmp_path / "rle"
    rle_images(root, ["a.png", "b.png"])
    csv_path = write_csv(root / "train.csv", [{"id": "a.png", "rle": ""}, {"id": "b.png", "rle": ""}])
    with pytest.raises(InputError, match="class_column"):
        module(RleCsv(str(csv_path)), mode="multiclass", num_classes=3).setup()
    with pytest.raises(InputError, match="'EncodedPixels'"):
        module(RleCsv(str(csv_path), rle_column="EncodedPixels")).setup()
    with pytest.raises(MissingInputError, match="nothere.csv"):
        module(RleCsv(str(root / "nothere.csv"))).setup()
    with pytest.raises(InputError, match="csv_path"):
        module(RleCsv("")).setup()


# ----------------------------------------------------------------------------- group splits
def split_groups(dm: SegmentationDataModule, split: str) -> set[str]:
    return {Path(p).name.split("_")[0] for p in paths(dm, split)}


def test_group_pattern_keeps_each_car_in_one_split(tmp_path):
    root = tmp_path / "carvana"
    names = [f"car{c}_{a:02d}" for c in range(1, 7) for a in range(1, 17)]
    for i, name in enumerate(names):
        save(root / "images" / f"{name}.png", random_image(i, 8, 8))
        save(root / "masks" / f"{name}_mask.png", random_mask(i, 8, 8))

    def dm(seed: int) -> SegmentationDataModule:
        data = module(
            MaskFolders(str(root), mask_suffix="_mask", check_masks=False, group_pattern="^([^_]+)_"),
            val_split=0.34,
            split_seed=seed,
            image_size=8,
        )
        data.setup("fit")
        return data

    first = dm(0)
    train, val = split_groups(first, "train"), split_groups(first, "val")
    assert not train & val and len(val) == 2 and len(train) == 4
    assert len(paths(first, "val")) == 32 and len(paths(first, "train")) == 64
    assert paths(dm(0), "val") == paths(first, "val")  # same seed, same split
    assert any(split_groups(dm(seed), "val") != val for seed in range(1, 8))
    for seed in range(1, 4):
        other = dm(seed)
        assert not split_groups(other, "train") & split_groups(other, "val")


def test_group_pattern_that_does_not_match(tmp_path):
    root = tmp_path / "data"
    write_pairs(root / "images", root / "masks", ["car1_01", "car2_01", "nogroup"])
    with pytest.raises(InputError, match="nogroup"):
        module(MaskFolders(str(root), group_pattern="^(car\\d+)_")).setup("fit")
    with pytest.raises(InputError, match="regular expression"):
        MaskFolders(str(root), group_pattern="([")


def test_group_column_in_csv(tmp_path):
    root = tmp_path / "patients"
    names = [f"slice{i}.png" for i in range(20)]
    rle_images(root, names, 8, 8)
    rows = [
        {"id": name, "rle": rle_encode(random_mask(i, 8, 8)), "patient": f"p{i % 5}"}
        for i, name in enumerate(names)
    ]
    csv_path = write_csv(root / "train.csv", rows)
    patient = {str(root / row["id"]): row["patient"] for row in rows}

    def val_patients(seed: int) -> tuple[set[str], set[str]]:
        dm = module(
            RleCsv(str(csv_path), group_column="patient"), val_split=0.4, split_seed=seed, image_size=8
        )
        dm.setup("fit")
        return {patient[p] for p in paths(dm, "train")}, {patient[p] for p in paths(dm, "val")}

    train, val = val_patients(1)
    assert not train & val and len(val) == 2 and train | val == {f"p{i}" for i in range(5)}
    assert val_patients(1) == (train, val)
    assert any(val_patients(seed)[1] != val for seed in range(2, 9))


def test_group_split_unit():
    groups = ["a", "a", "b", "c", "c", "c", "d", "e", "e", "f"]
    train, val = group_split(groups, 0.34, seed=3)
    assert sorted(train + val) == list(range(len(groups)))
    val_groups, train_groups = {groups[i] for i in val}, {groups[i] for i in train}
    assert not val_groups & train_groups and len(val_groups) == 2  # round(6 * 0.34)
    assert group_split(groups, 0.34, seed=3) == (train, val)
    assert any(group_split(groups, 0.34, seed=s) != (train, val) for s in range(4, 12))
    # at least one group on each side, however small the fraction
    assert len({groups[i] for i in group_split(groups, 0.01)[1]}) == 1
    assert len({groups[i] for i in group_split(groups, 0.99)[0]}) == 1
    # distinct groups: a plain random split of the samples
    train, val = group_split(list(range(10)), 0.3, seed=0)
    assert len(val) == 3 and len(train) == 7


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 2.0])
def test_group_split_bad_fraction(fraction):
    with pytest.raises(InputError, match="val_split"):
        group_split(["a", "b", "c"], fraction)


def test_group_split_needs_two_groups():
    with pytest.raises(InputError, match="1 group"):
        group_split(["car1"] * 5, 0.2)


# ----------------------------------------------------------------------------- bad input
def test_mask_size_differs_from_image(tmp_path):
    root = tmp_path / "data"
    write_pairs(root / "images", root / "masks", ["a", "b", "c"])
    bad_mask = save(root / "masks" / "b.png", np.zeros((SIZE, SIZE + 4), np.uint8))
    with pytest.raises(InputError) as error:
        module(MaskFolders(str(root))).setup("fit")
    message = str(error.value)
    assert str(bad_mask) in message and str(root / "images" / "b.png") in message
    assert "20x16" in message and "16x16" in message
    # sizes are checked even when mask values are not
    with pytest.raises(InputError, match="b.png"):
        module(MaskFolders(str(root), check_masks=False)).setup("fit")


def test_image_without_mask_is_listed(tmp_path):
    root = tmp_path / "data"
    write_pairs(root / "images", root / "masks", ["a", "b", "c", "d"])
    (root / "masks" / "c.png").unlink()
    with pytest.raises(InputError) as error:
        module(MaskFolders(str(root))).setup("fit")
    message = str(error.value)
    assert str(root / "images" / "c.png") in message and "1 image(s) have no mask" in message
    assert str(root / "images" / "a.png") not in message


def test_training_images_without_any_masks(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        save(root / f"{i}.png", random_image(i))
    with pytest.raises(InputError, match="found no masks"):
        module(MaskFolders(str(root))).setup("fit")


def test_mask_values_beyond_the_classes(tmp_path):
    root = tmp_path / "data"
    write_pairs(root / "images", root / "masks", ["a", "b", "c", "d"], classes=3)
    bad = random_mask(1, classes=3)
    bad[5, 5] = 7
    bad_path = save(root / "masks" / "b.png", bad)
    with pytest.raises(InputError) as error:
        module(MaskFolders(str(root)), mode="multiclass", num_classes=3).setup("fit")
    message = str(error.value)
    assert str(bad_path) in message and "[7]" in message and "3 classes" in message
    assert "scale255" not in message


def test_binary_index_mask_of_255_suggests_scale255(tmp_path):
    root = tmp_path / "data"
    write_pairs(root / "images", root / "masks", ["a", "b", "c"], scale=255)
    with pytest.raises(InputError) as error:
        module(MaskFolders(str(root))).setup("fit")
    message = str(error.value)
    assert "scale255" in message and "3 bad sample(s)" in message
    for name in ("a", "b", "c"):  # every bad mask is reported at once
        assert str(root / "masks" / f"{name}.png") in message


def test_rle_run_past_the_end_names_the_csv_line(tmp_path):
    root = tmp_path / "rle"
    rle_images(root, ["a.png", "b.png", "c.png"])
    rows = [
        {"id": "a.png", "rle": rle_encode(random_mask(0))},
        {"id": "b.png", "rle": "250 20"},  # 16 x 16 = 256 pixels
        {"id": "c.png", "rle": ""},
    ]
    csv_path = write_csv(root / "train.csv", rows)
    with pytest.raises(InputError) as error:
        module(RleCsv(str(csv_path))).setup("fit")
    message = str(error.value)
    assert str(csv_path) in message and "line 3" in message and "b.png" in message
    assert "past the end" in message


def test_missing_root(tmp_path):
    with pytest.raises(MissingInputError) as error:
        module(MaskFolders(str(tmp_path / "nowhere"))).setup("fit")
    assert str(tmp_path / "nowhere") in str(error.value)
    with pytest.raises(InputError, match="root"):
        module(MaskFolders("")).setup("fit")
    # a mask_dir that is not there in the training split is named (a typo, most likely)
    root = tmp_path / "data"
    write_pairs(root / "images", root / "masks", ["a", "b"])
    with pytest.raises(MissingInputError, match="mask_dir 'labelz' is not a folder") as error:
        module(MaskFolders(str(root), mask_dir="labelz")).setup("fit")
    assert str(root) in str(error.value)
    with pytest.raises(MissingInputError, match="pictures"):
        module(MaskFolders(str(root), image_dir="pictures")).setup("fit")


@pytest.mark.parametrize("broken", ["image", "mask"])
def test_corrupt_file_skipped_with_warning(tmp_path, caplog, broken):
    root = tmp_path / "data"
    written = write_pairs(root / "images", root / "masks", [f"s{i}" for i in range(6)])
    bad = root / ("images" if broken == "image" else "masks") / "s3.png"
    bad.write_bytes(b"this is not a png\n" * 4)
    dm = module(MaskFolders(str(root)), val_split=0.5, bad_images="skip")
    caplog.set_level(logging.WARNING)
    dm.setup("fit")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(bad) in m for m in warnings), warnings
    kept = paths(dm, "train") + paths(dm, "val")
    assert sorted(kept) == sorted(p for p in written if not p.endswith("s3.png"))
    assert_batch(next(iter(dm.train_dataloader())), 3, SIZE, SIZE)

    with pytest.raises(InputError) as error:
        module(MaskFolders(str(root)), val_split=0.5, bad_images="error").setup("fit")
    assert str(bad) in str(error.value)


def test_truncated_jpeg_image_is_dropped(tmp_path, caplog):
    root = tmp_path / "data"
    write_pairs(root / "images", root / "masks", [f"s{i}" for i in range(5)], image_ext=".jpg")
    buffer = io.BytesIO()
    Image.fromarray(random_image(9, 32, 32)).save(buffer, format="JPEG")
    truncated = root / "images" / "s1.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    save(root / "masks" / "s1.png", np.zeros((32, 32), np.uint8))
    caplog.set_level(logging.WARNING)
    dm = module(MaskFolders(str(root)), val_split=0.4)
    dm.setup("fit")
    assert str(truncated) not in paths(dm, "train") + paths(dm, "val")
    assert any(str(truncated) in r.getMessage() for r in caplog.records)


def test_different_sizes_in_one_batch_give_the_collate_error(tmp_path):
    root = tmp_path / "data"
    for split, sizes in (("train", [(16, 16), (20, 24), (12, 12)]), ("val", [(16, 16), (20, 24)])):
        for i, (h, w) in enumerate(sizes):
            save(root / split / "images" / f"{i}.png", random_image(i, h, w))
            save(root / split / "masks" / f"{i}.png", random_mask(i, h, w))
    dm = module(MaskFolders(str(root)), crop=True, batch_size=4)
    assert_batch(next(iter(dm.train_dataloader())), 3, SIZE, SIZE)  # crops of one size batch fine
    with pytest.raises(InputError) as error:
        next(iter(dm.val_dataloader()))
    message = str(error.value)
    assert "different sizes" in message and "batch_size 1" in message
    assert str(root / "val" / "images" / "1.png") in message
    # one image a batch works, at the image's own size
    dm.batch_size = 1
    shapes = [tuple(batch["image"].shape[2:]) for batch in dm.val_dataloader()]
    assert shapes == [(16, 16), (20, 24)]
    # the same error straight from collate
    dataset = dm.val_dataloader().dataset
    with pytest.raises(InputError, match="different sizes"):
        collate([dataset[0], dataset[1]])


# ----------------------------------------------------------------------------- cache
def batches(loader) -> list[dict]:
    return list(loader)


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["path"] == y["path"]
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])
        assert torch.equal(x["size"], y["size"])


def test_cache_images_gives_identical_batches(tmp_path):
    root = tmp_path / "isbi"
    write_isbi(root)
    plain = module(MaskFolders(str(root), mask_format="scale255"), batch_size=2)
    cached = module(MaskFolders(str(root), mask_format="scale255"), batch_size=2, cache_images=True)
    plain.setup("fit")
    cached.setup("fit")
    assert_same_batches(batches(plain.val_dataloader()), batches(cached.val_dataloader()))
    for split in ("train", "val"):
        a, b = items(plain, split), items(cached, split)
        assert [x["path"] for x in a] == [x["path"] for x in b]
        assert all(
            torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"]) for x, y in zip(a, b)
        )
    # the predict images are not cached but still load
    assert len(items(cached, "predict")) == 3


def test_cache_images_with_rle_csv(tmp_path):
    root = tmp_path / "rle"
    names = [f"{i}.png" for i in range(5)]
    rle_images(root, names)
    csv_path = write_csv(
        root / "train.csv", [{"id": n, "rle": rle_encode(random_mask(i))} for i, n in enumerate(names)]
    )
    plain = module(RleCsv(str(csv_path)), batch_size=2)
    cached = module(RleCsv(str(csv_path)), batch_size=2, cache_images=True)
    assert_same_batches(batches(plain.val_dataloader()), batches(cached.val_dataloader()))
    a, b = items(plain, "train"), items(cached, "train")
    assert all(torch.equal(x["mask"], y["mask"]) and x["path"] == y["path"] for x, y in zip(a, b))


def test_cache_decodes_each_pair_once(tmp_path, monkeypatch):
    """Train and val share one source: the cache must decode each of its images once, not per split."""
    from vision_lightning.data import segmentation_samples

    names = [f"s{i}" for i in range(10)]
    write_pairs(tmp_path / "images", tmp_path / "masks", names)
    reads: dict[str, int] = {}
    original = segmentation_samples.read_image

    def counting(path, channels=3):
        reads[str(path)] = reads.get(str(path), 0) + 1
        return original(path, channels)

    monkeypatch.setattr(segmentation_samples, "read_image", counting)
    data = module(MaskFolders(str(tmp_path)), image_size=16, batch_size=4, cache_images=True)
    data.setup("fit")
    assert len(reads) == len(names) and set(reads.values()) == {1}
    seen = sum(len(batch["image"]) for batch in data.train_dataloader())
    seen += sum(len(batch["image"]) for batch in data.val_dataloader())
    assert seen >= 8 and set(reads.values()) == {1}


# ----------------------------------------------------------------------------- typed sources
DATA_YAML = """
data:
  class_path: vision_lightning.SegmentationDataModule
  init_args:
    source:
      class_path: {class_path}
      init_args: {init_args}
    mode: {mode}
    class_names: {class_names}
    image_size: 16
    loader: {{num_workers: 0}}
"""

SOURCE_CONFIGS = [
    ("MaskFolders", {"root": "data", "mask_dir": "label", "mask_format": "scale255", "ignore_index": 255}),
    ("PaletteMasks", {"root": "camvid", "colors": [[0, 0, 0], [128, 64, 128], [220, 20, 60]]}),
    ("RleCsv", {"csv_path": "train.csv", "rle_format": "siim", "rle_order": "C", "class_column": "c"}),
    ("SyntheticShapes", {"samples": 24}),
]


@pytest.mark.parametrize(("name", "init_args"), SOURCE_CONFIGS, ids=[c[0] for c in SOURCE_CONFIGS])
def test_sources_from_yaml_by_class_path(name, init_args):
    """The YAML form: each source by its full class path (and by its short name, unique among the
    segmentation sources even though classification may have a `SyntheticShapes` of its own); the
    data module's hyperparameters describe the source as the config did."""
    import json

    import lightning.pytorch as pl
    from jsonargparse import ArgumentParser

    from vision_lightning.utils.hparams import plain

    mode, class_names = ("binary", "null") if name == "MaskFolders" else ("multiclass", "[bg, road, car]")
    if name == "SyntheticShapes":
        class_names = "null"
    full = f"vision_lightning.data.segmentation_sources.{name}"
    for class_path in (full, name):
        parser = ArgumentParser(exit_on_error=False)
        parser.add_subclass_arguments(pl.LightningDataModule, "data")
        text = DATA_YAML.format(
            class_path=class_path, init_args=json.dumps(init_args), mode=mode, class_names=class_names
        )
        config = parser.parse_string(text)
        dm = parser.instantiate_classes(config).data
        assert type(dm.source).__name__ == name and type(dm.source).__module__.endswith(
            "segmentation_sources"
        )
        assert plain(dm.source) == {"class_path": full, "init_args": {**dm.source.init_args, **init_args}}
        assert isinstance(as_source(dm.hparams["source"]), type(dm.source))
    if name == "MaskFolders":
        assert dm.ignore_index == 255 and dm.class_names == ["background", "foreground"]
    if name == "PaletteMasks":
        assert dm.num_classes == 3 and dm.ignore_index is None
    if name == "SyntheticShapes":
        assert dm.class_names == ["background", "circle", "square", "triangle", "cross"]


def test_hyperparameters_rebuild_the_source_and_preprocessing_says_how_to_predict(tmp_path):
    source = MaskFolders(str(tmp_path), mask_dir="labels", mask_format="scale255", ignore_index=255)
    dm = module(source, channels=1, crop=True, image_size=32, mode="multiclass", num_classes=3)
    described = dm.hparams["source"]
    assert described == {
        "class_path": "vision_lightning.data.segmentation_sources.MaskFolders",
        "init_args": {
            "root": str(tmp_path), "image_dir": None, "mask_dir": "labels", "mask_suffix": "",
            "mask_extension": None, "mask_format": "scale255", "ignore_index": 255, "check_masks": True,
                "group_pattern": None,
        },
    }  # fmt: skip
    # the checkpoint keeps the classes as resolved (the values the CLI links into the model)
    assert dm.hparams["num_classes"] == 3 and dm.hparams["class_names"] == ["0", "1", "2"]
    assert dm.hparams["mode"] == "multiclass"
    assert dm.hparams_initial["data/class_names"] == ["0", "1", "2"]
    rebuilt = SegmentationDataModule(source=described, mode="multiclass", num_classes=3)
    assert isinstance(rebuilt.source, MaskFolders) and rebuilt.source.init_args == source.init_args
    assert dm.preprocessing() == {
        "image_size": 32, "mean": [0.0], "std": [1.0], "channels": 1, "crop": True, "whole_images": True,
        "mode": "multiclass", "class_names": ["0", "1", "2"], "ignore_index": 255,
    }  # fmt: skip
    resized = module(SyntheticShapes(8)).preprocessing()
    assert resized["whole_images"] is False and resized["class_names"] == ["background", "foreground"]
    assert resized["mode"] == "binary" and resized["ignore_index"] is None and resized["channels"] == 3


def test_source_arguments_are_checked(tmp_path):
    with pytest.raises(InputError, match="rle_format"):
        RleCsv("train.csv", rle_format="kaggle")
    with pytest.raises(InputError, match="rle_order"):
        RleCsv("train.csv", rle_order="row")
    with pytest.raises(InputError, match="samples"):
        SyntheticShapes(1)
    with pytest.raises(InputError, match="segmentation source"):
        module("folder")
    with pytest.raises(InputError, match="segmentation source"):
        module({"class_path": "vision_lightning.data.synthetic.SyntheticShapes", "init_args": {}})
    with pytest.raises(InputError, match="segmentation source"):
        module({"class_path": "no.such.Source"})
    # what a source cannot give is said when the module is built, before any file is read
    with pytest.raises(InputError, match="multilabel"):
        module(MaskFolders(str(tmp_path / "nowhere")), mode="multilabel", num_classes=2)
    with pytest.raises(InputError, match="class_column"):
        module(RleCsv(str(tmp_path / "nowhere.csv")), mode="multilabel", num_classes=2)


class InMemory(SegmentationSource):
    """A user's own source: arrays already in memory, one pair per sample."""

    def __init__(self, count: int = 6) -> None:
        self.count = count
        self.init_args = {"count": count}

    def default_class_names(self, mode: str, count: int | None) -> list[str]:
        return ["sky", "cloud"] if mode == "multilabel" else ["background", "sky", "cloud"]

    def load(self, spec):
        from vision_lightning.data.segmentation_sources import SourceData

        class Pairs:
            paths = [f"memory/{i}" for i in range(self.count)]

            def __len__(self) -> int:
                return len(self.paths)

            def files(self, index: int) -> list[str]:
                return []

            def problem(self, index: int) -> str | None:
                return None

            def load(self, index: int):
                return random_image(index), random_mask(index, classes=spec.num_classes), self.paths[index]

        return SourceData(Pairs(), groups=[str(i % 3) for i in range(self.count)])


def test_a_source_of_ones_own():
    """A subclass of SegmentationSource is all a new kind of data needs: classes, split by its own
    groups, checks, transforms and loaders come from the module."""
    dm = module(InMemory(6), mode="multiclass", val_split=0.34)
    assert dm.class_names == ["background", "sky", "cloud"]
    dm.setup("fit")
    groups = [{int(p.split("/")[1]) % 3 for p in paths(dm, split)} for split in ("train", "val")]
    assert len(groups[1]) == 1 and not groups[0] & groups[1]
    assert_batch(next(iter(dm.train_dataloader())), 3, SIZE, SIZE)
    assert dm.hparams["source"] == {"class_path": f"{__name__}.InMemory", "init_args": {"count": 6}}


def test_sixteen_bit_images_give_the_tensors_of_their_eight_bit_versions(tmp_path):
    for depth in ("eight", "sixteen"):
        for i in range(3):
            gray = np.random.default_rng(i).integers(0, 256, (SIZE, SIZE), dtype=np.uint8)
            save(
                tmp_path / depth / "images" / f"s{i}.png",
                gray if depth == "eight" else gray.astype(np.uint16) * 257,
            )
            save(tmp_path / depth / "masks" / f"s{i}.png", random_mask(i))
    eight, sixteen = (
        items(module(MaskFolders(str(tmp_path / d)), val_split=0.34), "val") for d in ("eight", "sixteen")
    )
    assert len(eight) == len(sixteen) == 1
    assert (eight[0]["image"] - sixteen[0]["image"]).abs().max() <= 1 / 255
    assert torch.equal(eight[0]["mask"], sixteen[0]["mask"]) and 0.2 < sixteen[0]["image"].mean() < 0.8


def test_a_mask_shared_by_two_images_through_a_link_pairs_with_both(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        save(root / "images" / f"s{i}.png", random_image(i))
    save(root / "masks" / "s0.png", random_mask(0))
    for i in (1, 2):
        (root / "masks" / f"s{i}.png").symlink_to(root / "masks" / "s0.png")  # one empty mask, linked
    dm = module(MaskFolders(str(root)), val_split=0.34)
    masks = masks_by_path(dm, "train", "val")
    assert len(masks) == 3 and all(np.array_equal(m, random_mask(0)) for m in masks.values())
