"""StyleTransferDataModule: the style image (missing, unreadable, `style_size`), square training crops
and validation batches of content folders or synthetic textures, the held-out validation set, and
full-resolution predict batches of one image.

Everything is generated under `tmp_path` with tiny images so the whole file runs in seconds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vision_lightning.data.style import StyleTransferDataModule
from vision_lightning.data.style_sources import ContentFolders, SyntheticTextureContent
from vision_lightning.data.textures import render_texture
from vision_lightning.utils.errors import InputError, MissingInputError
from vision_lightning.utils.resize import resize_shorter_side


# ----------------------------------------------------------------------------- helpers
def save(path: Path, height: int, width: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render_texture(seed, 0, max(height, width))[:height, :width]).save(path)
    return path


@pytest.fixture
def style(tmp_path: Path) -> Path:
    return save(tmp_path / "style" / "starry.png", 30, 45, seed=99)


@pytest.fixture
def content(tmp_path: Path) -> Path:
    """Five content images of different sizes and aspect ratios."""
    sizes = [(36, 40), (40, 36), (50, 30), (16, 20), (24, 24)]
    for i, (h, w) in enumerate(sizes):
        save(tmp_path / "content" / f"{i}.png", h, w, seed=i)
    return tmp_path / "content"


def module(source, style: Path, **kwargs) -> StyleTransferDataModule:
    """Tiny defaults: 16 px content, batches of 2."""
    return StyleTransferDataModule(
        source, **{"style_image": str(style), "image_size": 16, "batch_size": 2, **kwargs}
    )


def items(dataset) -> list[dict]:
    return [dataset[i] for i in range(len(dataset))]


# ----------------------------------------------------------------------------- style image
def test_a_missing_style_image_is_reported_by_path_when_training_needs_it(tmp_path):
    """Predicting needs no style image (the network has learned it): a config naming a file that
    is not on this machine still predicts; fit stops at setup with the path."""
    missing = tmp_path / "nowhere" / "monet.jpg"
    dm = StyleTransferDataModule(SyntheticTextureContent(samples=4), style_image=str(missing), image_size=16)
    dm.setup("predict")
    with pytest.raises(MissingInputError, match=f"style image {missing} does not exist"):
        dm.setup("fit")


def test_an_unreadable_style_image_is_reported_before_training(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    dm = StyleTransferDataModule(SyntheticTextureContent(samples=4), style_image=str(broken), image_size=16)
    with pytest.raises(InputError, match="broken.png"):
        dm.setup("fit")


def test_style_tensor_is_a_batch_of_one_in_0_1_resized_by_style_size(style):
    tensor = module(SyntheticTextureContent(samples=4), style).style_tensor()
    assert tensor.shape == (1, 3, 30, 45) and tensor.dtype == torch.float32
    assert 0 <= tensor.min() and tensor.max() <= 1
    expected = np.asarray(Image.open(style)).transpose(2, 0, 1) / 255
    assert np.allclose(tensor[0].numpy(), expected, atol=1e-6)
    smaller = module(SyntheticTextureContent(samples=4), style, style_size=20).style_tensor()
    assert smaller.shape == (1, 3, 20, 30)  # the shorter side is 20, the aspect ratio kept
    assert 0 <= smaller.min() and smaller.max() <= 1
    assert resize_shorter_side(torch.zeros(3, 10, 7), 14).shape == (3, 20, 14)


# ----------------------------------------------------------------------------- content
def test_training_crops_are_image_size_squares_and_flips_vary(style, content):
    dm = module(ContentFolders(train_root=str(content)), style, val_split=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "path"}
    assert batch["image"].shape == (2, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert 0 <= batch["image"].min() and batch["image"].max() <= 1
    assert all(item["image"].shape == (3, 16, 16) for item in items(dm._dataset("train", train=True)))
    # A square image of image_size is cropped whole, so only the random flip changes it.
    square = [i for i, item in enumerate(items(dm._dataset("train", train=True))) if "4.png" in item["path"]][
        0
    ]
    draws = [dm._dataset("train", train=True)[square]["image"] for _ in range(30)]
    distinct = {tuple(d.flatten().tolist()) for d in draws}
    assert len(distinct) == 2
    assert any(torch.equal(draws[0].flip(-1), d) for d in draws)
    assert dm.val_dataloader() == []


def test_validation_holds_out_centre_crops_of_training_images(style, content):
    dm = module(ContentFolders(train_root=str(content)), style, val_split=0.4)
    dm.setup("fit")
    train = {item["path"] for item in items(dm._dataset("train", train=True))}
    val_batches = list(dm.val_dataloader())
    val = [path for batch in val_batches for path in batch["path"]]
    assert len(val) == 2 and len(train) == 3 and not train & set(val)
    assert val_batches[0]["image"].shape == (2, 3, 16, 16)
    again = [
        p
        for batch in module(ContentFolders(train_root=str(content)), style, val_split=0.4).val_dataloader()
        for p in batch["path"]
    ]
    assert again == val  # seeded by split_seed
    # Validation is deterministic: the centre square, resized.
    first = dm._dataset("val")[0]["image"]
    assert torch.equal(first, dm._dataset("val")[0]["image"])


def test_val_root_is_used_for_validation(style, content, tmp_path):
    save(tmp_path / "val" / "v.png", 20, 30, seed=7)
    dm = module(ContentFolders(train_root=str(content), val_root=str(tmp_path / "val")), style)
    (batch,) = list(dm.val_dataloader())
    assert batch["image"].shape == (1, 3, 16, 16) and batch["path"] == [str(tmp_path / "val" / "v.png")]
    assert len(dm._dataset("train", train=True)) == 5


def test_predict_gives_full_resolution_images_one_per_batch(style, content, tmp_path):
    save(tmp_path / "photos" / "a.png", 21, 33, seed=3)
    save(tmp_path / "photos" / "b.png", 40, 18, seed=4)
    dm = module(ContentFolders(train_root=str(content)), style, predict_root=str(tmp_path / "photos"))
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert [b["image"].shape for b in batches] == [(1, 3, 21, 33), (1, 3, 40, 18)]
    assert batches[0]["path"] == [str(tmp_path / "photos" / "a.png")]
    expected = np.asarray(Image.open(tmp_path / "photos" / "a.png")).transpose(2, 0, 1) / 255
    assert np.allclose(batches[0]["image"][0].numpy(), expected, atol=1e-6)

    # Without predict_root the validation images are stylised, whole.
    held_out = module(ContentFolders(train_root=str(content)), style, val_split=0.4)
    sizes = {Image.open(p).size[::-1] for p in content.iterdir()}
    for batch in held_out.predict_dataloader():
        assert batch["image"].shape[0] == 1 and tuple(batch["image"].shape[2:]) in sizes


def test_synthetic_content_works(style):
    dm = module(SyntheticTextureContent(samples=8), style)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 16, 16) and batch["path"][0].startswith("synthetic/")
    val = list(dm.val_dataloader())
    assert sum(len(b["path"]) for b in val) == 4 and val[0]["path"][0].startswith("synthetic_val/")
    (first, *_) = list(dm.predict_dataloader())
    assert first["image"].shape == (1, 3, 16, 16)

    # Textures of their own size are cropped and resized to image_size like photos.
    larger = module(SyntheticTextureContent(samples=8, size=40), style)
    assert larger._dataset("train", train=True)[0]["image"].shape == (3, 16, 16)
    assert larger._dataset("predict")[0]["image"].shape == (3, 40, 40)


def test_predicting_needs_no_style_image_and_reads_nothing_of_the_source(tmp_path):
    # A model from a checkpoint stylises without the style; the config's content is elsewhere.
    save(tmp_path / "photos" / "a.png", 21, 33, seed=3)
    dm = StyleTransferDataModule(
        ContentFolders(train_root=str(tmp_path / "elsewhere")), predict_root=str(tmp_path / "photos")
    )
    dm.setup("predict")
    (batch,) = list(dm.predict_dataloader())
    assert batch["image"].shape == (1, 3, 21, 33)
    assert dm.style_image is None
    with pytest.raises(InputError, match="no style_image: set it to the style to learn"):
        dm.style_tensor()


def test_hyperparameters_are_plain_and_preprocessing_says_pixels_stay_in_0_1(style):
    dm = module(SyntheticTextureContent(samples=8, seed=3), style, style_size=32)
    assert dm.hparams["source"] == {
        "class_path": "vision_lightning.data.style_sources.SyntheticTextureContent",
        "init_args": {"samples": 8, "size": None, "seed": 3},
    }
    # The style is linked into the model, which keeps it: a data module's copy could disagree with it.
    assert "style_image" not in dm.hparams and "style_size" not in dm.hparams and dm.style_size == 32
    assert dm.preprocessing() == {"image_size": 16, "mean": [0.0] * 3, "std": [1.0] * 3, "channels": 3}


# ----------------------------------------------------------------------------- bad input
def test_content_settings_are_checked(style, content, tmp_path):
    with pytest.raises(InputError, match="train_root"):
        ContentFolders()
    with pytest.raises(InputError, match="source must be a ContentSource"):
        module("synthetic", style)
    with pytest.raises(InputError, match="samples must be at least 1, got 0"):
        SyntheticTextureContent(samples=0)
    with pytest.raises(InputError, match="style_size"):
        module(SyntheticTextureContent(samples=4), style, style_size=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=f"train_root {tmp_path / 'empty'} has no images"):
        module(ContentFolders(train_root=str(tmp_path / "empty")), style).setup("fit")
    only_val = module(ContentFolders(val_root=str(content)), style)
    with pytest.raises(InputError, match="no training images"):
        only_val.train_dataloader()


def test_a_corrupt_content_image_is_skipped_with_a_warning_naming_it(style, content, caplog):
    bad = content / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff truncated")
    dm = module(ContentFolders(train_root=str(content)), style, val_split=0)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert str(bad) in caplog.text
    assert len(dm._dataset("train", train=True)) == 5
