"""SuperResDataModule and the synthetic textures: batch shapes and ranges, LR made by quantised bicubic
downscaling, the 8 dihedral transforms, HR folders with a held-out or given validation set, paired LR/HR
folders (BasicSR names, aligned crops), whole-image evaluation with mod-crop, predict, and bad input.

Everything is generated under `tmp_path` with tiny images so the whole file runs in seconds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.conftest import cpu_trainer
from vision_lightning.data.superres import SuperResDataModule, dihedral, downscale
from vision_lightning.data.superres_sources import (
    SuperResFolders,
    SyntheticTextureImages,
    lr_stem_key,
    pair_lr_files,
)
from vision_lightning.data.textures import SyntheticTextures, render_texture
from vision_lightning.utils.errors import InputError, MissingInputError
from vision_lightning.utils.images import to_float_tensor
from vision_lightning.utils.resize import bicubic_resize


# ----------------------------------------------------------------------------- helpers
def image(height: int, width: int, seed: int) -> np.ndarray:
    """A uint8 HxWx3 texture with fine detail (so every crop position looks different)."""
    return render_texture(seed, 0, max(height, width))[:height, :width]


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def hr_folder(root: Path, count: int, height: int = 36, width: int = 40, seed: int = 0) -> list[Path]:
    return [save(root / f"{i:02d}.png", image(height, width, seed + i)) for i in range(count)]


def items(dataset) -> list[dict]:
    return [dataset[i] for i in range(len(dataset))]


def module(source=None, **kwargs) -> SuperResDataModule:
    """Tiny defaults: 8 synthetic 32 px textures, scale 4, 16 px HR crops, batches of 2, no image cache."""
    defaults = {"scale": 4, "image_size": 16, "batch_size": 2, "cache_images": False}
    source = source if source is not None else SyntheticTextureImages(samples=8, size=32)
    return SuperResDataModule(source, **{**defaults, **kwargs})


def find_crop(crop: torch.Tensor, whole: torch.Tensor, step: int = 1) -> set[tuple[int, int, int]]:
    """Every (y, x, transform) with dihedral(whole[y:y+h, x:x+w], transform) == crop, y and x multiples
    of `step`."""
    size = crop.shape[-1]
    found = set()
    for y in range(0, whole.shape[-2] - size + 1, step):
        for x in range(0, whole.shape[-1] - size + 1, step):
            window = whole[:, y : y + size, x : x + size]
            found |= {(y, x, t) for t in range(8) if torch.equal(dihedral(window, t), crop)}
    return found


# ----------------------------------------------------------------------------- textures
def test_textures_are_deterministic_detailed_uint8_images():
    textures = SyntheticTextures(5, 48, seed=3)
    first = textures.sample(2)
    assert len(textures) == 5 and first.shape == (48, 48, 3) and first.dtype == np.uint8
    assert np.array_equal(first, SyntheticTextures(5, 48, seed=3).sample(2))
    assert not np.array_equal(first, textures.sample(3))
    assert not np.array_equal(first, SyntheticTextures(5, 48, seed=4).sample(2))
    # Real high-frequency detail: bicubic x4 down and up loses a good part of the images.
    hr = torch.stack([to_float_tensor(textures.sample(i)) for i in range(5)])
    restored = F.interpolate(bicubic_resize(hr, (12, 12)), size=(48, 48), mode="bicubic", align_corners=False)
    assert (restored - hr).abs().mean() > 0.03
    with pytest.raises(IndexError):
        textures.sample(5)
    with pytest.raises(InputError):
        SyntheticTextures(4, 4)


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_batches_have_lr_a_scale_smaller_than_hr_in_0_1():
    dm = module(SyntheticTextureImages(samples=8, size=32), image_size=16, batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["hr"].shape == (4, 3, 16, 16) and batch["lr"].shape == (4, 3, 4, 4)
    assert dm.lr_size == 4 and dm.scale == 4
    for key in ("lr", "hr"):
        assert batch[key].dtype == torch.float32 and 0 <= batch[key].min() and batch[key].max() <= 1
    assert len(batch["path"]) == 4 and batch["path"][0].startswith("synthetic/")

    val = list(dm.val_dataloader())
    assert len(val) == 4  # max(4, 8 // 8) whole images, one per batch
    assert val[0]["hr"].shape == (1, 3, 32, 32) and val[0]["lr"].shape == (1, 3, 8, 8)
    assert [b["path"] for b in dm.test_dataloader()] == [b["path"] for b in val]  # test = validation
    predict = list(dm.predict_dataloader())
    assert set(predict[0]) == {"lr", "path"} and predict[0]["lr"].shape == (1, 3, 8, 8)
    assert torch.equal(predict[0]["lr"], val[0]["lr"])


def test_lr_is_the_quantised_antialiased_bicubic_downscale_of_hr():
    dm = module(SyntheticTextureImages(samples=8, size=24), image_size=12, scale=3)
    item = dm._dataset("val")[0]
    expected = bicubic_resize(item["hr"][None], (8, 8), quantize=True)[0]
    assert torch.equal(item["lr"], expected)
    assert torch.allclose(item["lr"] * 255, (item["lr"] * 255).round(), atol=1e-4)  # 8-bit levels
    crop = dm._dataset("train", train=True)[0]
    assert torch.equal(crop["lr"], downscale(crop["hr"], 3))


def test_all_eight_dihedral_transforms_occur_and_lr_follows_hr():
    # One 16 px texture cropped at 16 px: the crop is the whole image, only the transform is random.
    dm = module(SyntheticTextureImages(samples=1, size=16), image_size=16, scale=2, patches_per_image=80)
    original = to_float_tensor(SyntheticTextures(1, 16, seed=42).sample(0))
    dataset = dm._dataset("train", train=True)
    assert len(dataset) == 80
    seen = set()
    for item in items(dataset):
        (transform,) = [t for t in range(8) if torch.equal(dihedral(original, t), item["hr"])]
        seen.add(transform)
        assert torch.equal(item["lr"], downscale(item["hr"], 2))
        # Downscaling commutes with the symmetries: the LR is the transformed LR of the original.
        assert torch.allclose(item["lr"], dihedral(downscale(original, 2), transform), atol=1.01 / 255)
    assert seen == set(range(8))

    plain = module(SyntheticTextureImages(samples=1, size=16), image_size=16, scale=2, augment=False)
    assert all(torch.equal(item["hr"], original) for item in items(plain._dataset("train", train=True)))


def test_random_crops_differ_between_epochs_and_patches_multiply_the_epoch():
    dm = module(SyntheticTextureImages(samples=3, size=32), image_size=8, patches_per_image=5, augment=False)
    dataset = dm._dataset("train", train=True)
    assert len(dataset) == 15
    assert len(dm.train_dataloader()) == 7  # 15 crops in batches of 2, the ragged end dropped
    assert dataset[0]["path"] == dataset[3]["path"] == "synthetic/000000"
    # Every draw crops anew (torch's generator, which the DataLoader seeds per worker and epoch).
    crops = {tuple(dataset[0]["hr"].flatten().tolist()) for _ in range(10)}
    assert len(crops) > 1
    torch.manual_seed(1)
    first = [dataset[i]["hr"] for i in range(3)]
    torch.manual_seed(1)
    assert all(torch.equal(a, dataset[i]["hr"]) for i, a in enumerate(first))  # reproducible when seeded


# ----------------------------------------------------------------------------- folders
def test_folder_with_val_root_trains_on_crops_and_validates_on_mod_cropped_whole_images(tmp_path):
    hr_folder(tmp_path / "train", 3)
    hr_folder(tmp_path / "val", 2, height=37, width=41, seed=10)
    dm = module(SuperResFolders(train_root=str(tmp_path / "train"), val_root=str(tmp_path / "val")))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["hr"].shape == (2, 3, 16, 16) and batch["lr"].shape == (2, 3, 4, 4)
    val = list(dm.val_dataloader())
    assert len(val) == 2
    assert val[0]["hr"].shape == (1, 3, 36, 40) and val[0]["lr"].shape == (1, 3, 9, 10)  # 41x37 -> 40x36
    original = to_float_tensor(np.asarray(Image.open(tmp_path / "val" / "00.png")))
    assert torch.equal(val[0]["hr"][0], original[:, :36, :40])
    assert val[0]["path"] == [str(tmp_path / "val" / "00.png")]


def test_without_val_root_a_seeded_share_of_training_images_is_held_out(tmp_path):
    paths = {str(p) for p in hr_folder(tmp_path / "hr", 5)}
    dm = module(SuperResFolders(train_root=str(tmp_path / "hr")), val_split=0.2, cache_images=True)
    dm.setup("fit")
    train = {item["path"] for item in items(dm._dataset("train", train=True))}
    val = [b["path"][0] for b in dm.val_dataloader()]
    assert len(val) == 1 and len(train) == 4 and train | set(val) == paths and not train & set(val)
    again = module(SuperResFolders(train_root=str(tmp_path / "hr")), val_split=0.2)
    assert [b["path"][0] for b in again.val_dataloader()] == val

    no_val = module(SuperResFolders(train_root=str(tmp_path / "hr")), val_split=0)
    assert no_val.val_dataloader() == []
    assert len(no_val._dataset("train", train=True)) == 5
    with pytest.raises(InputError, match="no test images"):
        no_val.test_dataloader()


@pytest.mark.filterwarnings("ignore:Total length of .list. across ranks is zero")
def test_training_runs_without_validation_when_val_split_is_zero(tmp_path):
    hr_folder(tmp_path / "hr", 3)

    class Upscale(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

        def training_step(self, batch, _):
            return F.l1_loss(F.interpolate(self.conv(batch["lr"]), scale_factor=4), batch["hr"])

        def validation_step(self, batch, _):
            raise AssertionError("there is no validation set")

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    trainer = cpu_trainer(max_epochs=2)
    trainer.fit(Upscale(), module(SuperResFolders(train_root=str(tmp_path / "hr")), val_split=0))
    assert trainer.global_step == 2


def test_predict_root_gives_whole_lr_images_and_test_root_is_tested(tmp_path):
    hr_folder(tmp_path / "train", 2)
    hr_folder(tmp_path / "test", 1, height=24, width=28, seed=5)
    save(tmp_path / "lr" / "photo.png", image(9, 11, 7))
    dm = module(
        SuperResFolders(train_root=str(tmp_path / "train"), test_root=str(tmp_path / "test")),
        predict_root=str(tmp_path / "lr"),
    )
    dm.setup("predict")
    (predict,) = list(dm.predict_dataloader())
    assert set(predict) == {"lr", "path"} and predict["lr"].shape == (1, 3, 9, 11)
    assert predict["path"] == [str(tmp_path / "lr" / "photo.png")]
    (test,) = list(dm.test_dataloader())
    assert test["hr"].shape == (1, 3, 24, 28) and test["lr"].shape == (1, 3, 6, 7)

    without = module(SuperResFolders(train_root=str(tmp_path / "train"), test_root=str(tmp_path / "test")))
    (lr_only,) = list(without.predict_dataloader())
    assert set(lr_only) == {"lr", "path"} and torch.equal(lr_only["lr"], test["lr"])


def test_predicting_a_folder_reads_nothing_of_the_source(tmp_path):
    # The training folders of the config are not on this machine: predicting LR photos still works.
    save(tmp_path / "lr" / "photo.png", image(9, 11, 7))
    dm = module(SuperResFolders(train_root=str(tmp_path / "elsewhere")), predict_root=str(tmp_path / "lr"))
    dm.setup("predict")
    (predict,) = list(dm.predict_dataloader())
    assert predict["lr"].shape == (1, 3, 9, 11)
    with pytest.raises(MissingInputError, match="elsewhere"):
        dm.val_dataloader()


def test_hyperparameters_are_plain_and_preprocessing_says_pixels_stay_in_0_1(tmp_path):
    dm = module(SuperResFolders(train_root=str(tmp_path), val_root="val"), scale=2, loader={"num_workers": 0})
    assert dm.hparams["source"] == {
        "class_path": "vision_lightning.data.superres_sources.SuperResFolders",
        "init_args": {
            "train_root": str(tmp_path), "val_root": "val", "test_root": None,
            "train_lr_root": None, "val_lr_root": None, "test_lr_root": None,
        },
    }  # fmt: skip
    assert dm.hparams["scale"] == 2 and dm.loader.num_workers == 0
    assert dm.preprocessing() == {
        "image_size": 16, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "scale": 2, "channels": 3,
    }  # fmt: skip
    assert module().hparams["source"]["init_args"] == {"samples": 8, "size": 32, "seed": 42}


def test_image_size_may_change_between_epochs(tmp_path):
    hr_folder(tmp_path / "hr", 2)
    dm = module(SuperResFolders(train_root=str(tmp_path / "hr")), val_split=0)
    dm.setup("fit")
    dm.image_size, dm.batch_size = 32, 1
    batch = next(iter(dm.train_dataloader()))
    assert batch["hr"].shape == (1, 3, 32, 32) and batch["lr"].shape == (1, 3, 8, 8) and dm.lr_size == 8
    dm.image_size = 30
    with pytest.raises(InputError, match="multiple of scale 4"):
        dm.train_dataloader()
    dm.image_size = 40
    with pytest.raises(InputError, match="smaller than the 40x40"):
        dm.train_dataloader()


# ----------------------------------------------------------------------------- paired LR folders
def test_pairs_lr_files_by_stem_including_basicsr_names(tmp_path):
    assert [lr_stem_key(s, 4) for s in ("babyx4", "baby_x4", "baby-X4", "baby", "babyx2")] == [
        "baby", "baby", "baby", "baby", "babyx2",
    ]  # fmt: skip
    hr = [tmp_path / "hr" / f"{name}.png" for name in ("a", "b", "c")]
    lr = [tmp_path / "lr" / name for name in ("ax4.png", "b_x4.png", "c.png", "ax2.png")]
    for path in lr:
        save(path, image(4, 4, 0))
    assert pair_lr_files(hr, tmp_path / "lr", 4) == lr[:3]
    with pytest.raises(InputError, match="d.png"):
        pair_lr_files([*hr, tmp_path / "hr" / "d.png"], tmp_path / "lr", 4)
    save(tmp_path / "lr" / "a.png", image(4, 4, 0))
    with pytest.raises(InputError, match="both match"):
        pair_lr_files(hr, tmp_path / "lr", 4)


def test_paired_folders_give_aligned_crops_under_the_same_transform(tmp_path):
    names = {"a": "ax4.png", "b": "b_x4.png", "c": "c.png"}
    hr_images, lr_images = {}, {}
    for seed, (stem, lr_name) in enumerate(names.items()):
        hr = image(64, 64, seed)
        save(tmp_path / "hr" / f"{stem}.png", hr)
        lr = np.asarray(Image.fromarray(hr).resize((16, 16), Image.Resampling.BICUBIC))
        save(tmp_path / "lr" / lr_name, lr)
        hr_images[str(tmp_path / "hr" / f"{stem}.png")] = to_float_tensor(hr)
        lr_images[str(tmp_path / "hr" / f"{stem}.png")] = to_float_tensor(lr)
    dm = module(
        SuperResFolders(train_root=str(tmp_path / "hr"), train_lr_root=str(tmp_path / "lr")),
        val_split=0,
        image_size=48,
    )
    dataset = dm._dataset("train", train=True)
    assert len(dataset) == 3
    for item in items(dataset) * 2:
        assert item["hr"].shape == (3, 48, 48) and item["lr"].shape == (3, 12, 12)
        lr_places = find_crop(item["lr"], lr_images[item["path"]])
        hr_places = find_crop(item["hr"], hr_images[item["path"]], step=4)
        assert {(y * 4, x * 4, t) for y, x, t in lr_places} & hr_places
        # The given LR (PIL bicubic of the whole image) is the downscaled HR crop, away from the edges.
        inner = (slice(None), slice(2, 10), slice(2, 10))
        assert (downscale(item["hr"], 4)[inner] - item["lr"][inner]).abs().max() <= 2.5 / 255

    (val_item,) = items(
        module(SuperResFolders(val_root=str(tmp_path / "hr"), val_lr_root=str(tmp_path / "lr")))._dataset(
            "val"
        )
    )[:1]
    assert torch.equal(val_item["lr"], lr_images[val_item["path"]])  # the LR file, not a new downscale


def test_paired_sizes_that_do_not_match_the_scale_are_reported(tmp_path):
    save(tmp_path / "hr" / "a.png", image(36, 40, 0))
    save(tmp_path / "lr" / "ax4.png", image(9, 11, 0))
    dm = module(
        SuperResFolders(train_root=str(tmp_path / "hr"), train_lr_root=str(tmp_path / "lr")), val_split=0
    )
    with pytest.raises(InputError) as error:
        dm.setup("fit")
    message = str(error.value)
    assert "a.png is 40x36" in message and "ax4.png is 11x9" in message and "scale 4" in message


# ----------------------------------------------------------------------------- bad input
def test_a_training_image_smaller_than_the_crop_is_reported_before_training(tmp_path):
    hr_folder(tmp_path / "hr", 2)
    small = save(tmp_path / "hr" / "tiny.png", image(30, 20, 3))
    dm = module(SuperResFolders(train_root=str(tmp_path / "hr")), image_size=32, val_split=0)
    with pytest.raises(InputError) as error:
        dm.setup("fit")
    message = str(error.value)
    assert str(small) in message and "20x30" in message and "32x32" in message
    assert "lower image_size to 20" in message


def test_scale_and_image_size_are_checked():
    with pytest.raises(InputError, match="scale must be 2, 3 or 4, got 5"):
        module(SyntheticTextureImages(samples=4, size=20), scale=5, image_size=20)
    with pytest.raises(InputError, match="image_size 18 must be a multiple of scale 4"):
        module(SyntheticTextureImages(samples=4), image_size=18)
    with pytest.raises(InputError, match="train_root"):
        SuperResFolders()
    with pytest.raises(InputError, match="source must be a SuperResSource"):
        module("synthetic")
    assert module(SyntheticTextureImages(samples=4), predict_root="photos").predict_root.name == "photos"
    with pytest.raises(InputError, match="SyntheticTextureImages size 8 is smaller than the training crop"):
        module(SyntheticTextureImages(samples=4, size=8))
    with pytest.raises(InputError, match="samples must be at least 1, got 0"):
        SyntheticTextureImages(samples=0)
    with pytest.raises(InputError, match="train_lr_root"):
        module(SuperResFolders(val_root="x", train_lr_root="y"))
    with pytest.raises(InputError, match="val_split"):
        module(SyntheticTextureImages(samples=4), val_split=1.0)


def test_an_empty_or_missing_folder_is_reported_by_name(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=f"train_root {tmp_path / 'empty'} has no images"):
        module(SuperResFolders(train_root=str(tmp_path / "empty"))).setup("fit")
    with pytest.raises(MissingInputError, match="nowhere"):
        module(SuperResFolders(train_root=str(tmp_path / "nowhere"))).setup("fit")


def test_a_corrupt_image_is_skipped_with_a_warning_naming_it(tmp_path, caplog):
    paths = hr_folder(tmp_path / "hr", 3)
    bad = tmp_path / "hr" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    dm = module(SuperResFolders(train_root=str(tmp_path / "hr")), val_split=0)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert str(bad) in caplog.text
    assert {item["path"] for item in items(dm._dataset("train", train=True))} == {str(p) for p in paths}
    with pytest.raises(InputError, match="broken.png"):
        module(SuperResFolders(train_root=str(tmp_path / "hr")), val_split=0, bad_images="error").setup("fit")


def test_sixteen_bit_images_give_the_tensors_of_their_eight_bit_versions(tmp_path):
    for depth in ("eight", "sixteen"):
        for i, (height, width) in enumerate([(36, 40), (24, 28)]):
            gray = image(height, width, i)[..., 0]
            folder = "train" if i == 0 else "test"
            save(
                tmp_path / depth / folder / f"{i}.png",
                gray if depth == "eight" else gray.astype(np.uint16) * 257,
            )
        save(
            tmp_path / depth / "lr" / "photo.png",
            gray[:9, :11] if depth == "eight" else gray[:9, :11].astype(np.uint16) * 257,
        )
    batches = {}
    for depth in ("eight", "sixteen"):
        dm = module(
            SuperResFolders(
                train_root=str(tmp_path / depth / "train"), test_root=str(tmp_path / depth / "test")
            ),
            predict_root=str(tmp_path / depth / "lr"),
            val_split=0,
        )
        dm.setup("predict")
        batches[depth] = (next(iter(dm.test_dataloader())), next(iter(dm.predict_dataloader())))
    for eight, sixteen in zip(*batches.values()):
        for key in set(eight) - {"path"}:
            assert (eight[key] - sixteen[key]).abs().max() <= 1 / 255, key
    assert 0.1 < batches["sixteen"][0]["hr"].mean() < 0.9
