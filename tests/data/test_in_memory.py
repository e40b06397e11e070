"""The in-memory data path (issue 14, point 1): splits decoded once and cached on disk, batches
augmented on the device with the same geometry for images and masks, exactly and repeatably."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.conftest import run_cli
from vision_lightning import ImageClassificationDataModule, SegmentationDataModule
from vision_lightning.data import ImageFolder
from vision_lightning.data import datasets as datasets_module
from vision_lightning.data.batch_augment import BatchAugment, BatchAugmenter
from vision_lightning.data.classification_sources import SyntheticShapes
from vision_lightning.data.in_memory import SEED_KEY, MemoryDataset, MemorySplit, memory_loader
from vision_lightning.data.seeding import EpochSampler
from vision_lightning.data.segmentation_sources import SyntheticShapes as SyntheticMasks
from vision_lightning.data.synthetic import write_image_folder
from vision_lightning.utils import images as images_module
from vision_lightning.utils.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_image_folder(tmp_path / "images/train", per_class=3, num_classes=2, image_size=20)
    write_image_folder(tmp_path / "images/test", per_class=2, num_classes=2, image_size=20, seed=1)
    return tmp_path / "images"


def _module(root: Path, cache: Path, **kwargs) -> ImageClassificationDataModule:
    return ImageClassificationDataModule(
        ImageFolder(str(root)), image_size=16, batch_size=4, in_memory={"cache_dir": str(cache)}, **kwargs
    )


def _train_images(module: ImageClassificationDataModule) -> torch.Tensor:
    module.setup("fit")
    return module._dataset("train", train=True).split.images


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count decodes (`read_image`) and file checks (`inspect_image`)."""
    counts = {"read": 0, "check": 0}
    read, inspect = datasets_module.read_image, images_module.inspect_image

    def counted_read(*args, **kwargs):
        counts["read"] += 1
        return read(*args, **kwargs)

    def counted_check(*args, **kwargs):
        counts["check"] += 1
        return inspect(*args, **kwargs)

    monkeypatch.setattr(datasets_module, "read_image", counted_read)
    monkeypatch.setattr(images_module, "inspect_image", counted_check)
    return counts


# ----------------------------------------------------------------------------- the disk cache
def test_cache_is_written_once_and_read_back_without_decoding(folder, tmp_path, monkeypatch):
    counts = _count_reads(monkeypatch)
    first = _train_images(_module(folder, tmp_path / "cache"))
    assert counts["read"] == len(first) > 0 and counts["check"] == len(first)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    counts.update(read=0, check=0)
    second = _train_images(_module(folder, tmp_path / "cache"))
    assert counts == {"read": 0, "check": 0}  # neither decoded nor checked again
    assert torch.equal(first, second)
    assert first.dtype == torch.uint8 and first.shape[1:] == (3, 16, 16)
    assert not list((tmp_path / "cache").glob("*.tmp"))  # written under a temporary name, renamed


def test_a_changed_file_rebuilds_the_cache_with_a_warning(folder, tmp_path, caplog):
    module = _module(folder, tmp_path / "cache")
    before = _train_images(module)
    changed = Path(module._memory[("train", 16, None)].names[0])
    Image.fromarray(np.full((20, 20, 3), 255, np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))  # another modification time even on a coarse clock
    with caplog.at_level(logging.WARNING):
        after = _train_images(_module(folder, tmp_path / "cache"))
    assert "is stale" in caplog.text
    assert torch.equal(after[0], torch.full((3, 16, 16), 255, dtype=torch.uint8))
    assert torch.equal(after[1:], before[1:])


def test_a_corrupt_cache_is_rebuilt_with_a_warning(folder, tmp_path, caplog):
    before = _train_images(_module(folder, tmp_path / "cache"))
    (cache_file,) = (tmp_path / "cache").glob("*.pt")
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        after = _train_images(_module(folder, tmp_path / "cache"))
    assert "cannot be read" in caplog.text
    assert torch.equal(before, after)


def test_evaluation_batches_equal_the_worker_paths(folder, tmp_path):
    memory = _module(folder, tmp_path / "cache", resize=18)
    workers = ImageClassificationDataModule(ImageFolder(str(folder)), image_size=16, batch_size=4, resize=18)
    for module in (memory, workers):
        module.setup("fit")
    for split in ("val", "test"):
        loader = getattr(memory, f"{split}_dataloader")()
        fast = [memory.on_after_batch_transfer(batch, 0) for batch in loader]
        slow = list(getattr(workers, f"{split}_dataloader")())
        assert [b["path"] for b in fast] == [b["path"] for b in slow]
        for a, b in zip(fast, slow):
            assert torch.equal(a["label"], b["label"])
            torch.testing.assert_close(a["image"], b["image"], atol=1e-5, rtol=0)


def test_options_are_checked():
    with pytest.raises(InputError, match="set in_memory: true"):
        ImageClassificationDataModule(SyntheticShapes(samples=8), batch_augment={"flip": True})
    with pytest.raises(InputError, match="leave cache_images off"):
        ImageClassificationDataModule(SyntheticShapes(samples=8), in_memory=True, cache_images=True)
    with pytest.raises(InputError, match="pad_crop"):
        BatchAugment(pad_crop=-1)


# ----------------------------------------------------------------------------- batch augmentation
def _coordinates(count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose channels hold each pixel's row and column, and masks holding row * size + column."""
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = torch.stack([rows, cols, torch.zeros_like(rows)]).to(torch.uint8).expand(count, 3, size, size)
    masks = (rows * size + cols).to(torch.uint8).expand(count, size, size)
    return images.contiguous(), masks.contiguous()


def test_flip_and_crop_move_the_mask_exactly_as_the_image():
    images, masks = _coordinates(16, 12)
    augmenter = BatchAugmenter(BatchAugment(flip=True, pad_crop=3))
    draws = augmenter.draw(16, 12, 12, seed=5)
    out, out_masks = augmenter.geometry(images, masks, draws)
    assert torch.equal(out_masks, out[:, 0] * 12 + out[:, 1])  # every mask pixel came from the same place
    # the reference: reflect padding, a crop at the drawn offset, then a flip where drawn
    padded = F.pad(images.float(), (3, 3, 3, 3), mode="reflect").to(torch.uint8)
    for i in range(16):
        dy, dx = int(draws["dy"][i]), int(draws["dx"][i])
        crop = padded[i, :, dy : dy + 12, dx : dx + 12]
        assert torch.equal(out[i], crop.flip(-1) if draws["flip"][i] else crop)
    assert draws["flip"].any() and not draws["flip"].all() and len(set(draws["dx"].tolist())) > 1


def test_flip_alone_is_torch_flip_where_chosen():
    images = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    augmenter = BatchAugmenter(BatchAugment(flip=True))
    draws = augmenter.draw(32, 8, 8, seed=1)
    out, _ = augmenter.geometry(images, None, draws)
    expected = torch.where(draws["flip"][:, None, None, None], images.flip(-1), images)
    assert torch.equal(out, expected)


def test_constant_padding_fills_masks_with_ignore_index_and_multilabel_planes_follow():
    images, masks = _coordinates(8, 10)
    planes = torch.stack([masks, 255 - masks], dim=1)  # (N, 2, H, W): multilabel masks
    augmenter = BatchAugmenter(BatchAugment(pad_crop=4, pad_mode="constant"), ignore_index=255)
    draws = augmenter.draw(8, 10, 10, seed=2)
    out, out_masks = augmenter.geometry(images, masks, draws)
    _, out_planes = augmenter.geometry(images, planes, draws)
    shifted = (draws["dy"] != 4) | (draws["dx"] != 4)
    outside = out_masks == 255
    assert outside[shifted].any() and not outside[~shifted].any()
    assert (out[:, :2][outside[:, None].expand(-1, 2, -1, -1)] == 0).all()  # black image border
    assert torch.equal(out_planes[:, 0], out_masks)


def test_dihedral_gives_all_eight_symmetries_with_the_mask_following():
    images, masks = _coordinates(64, 6)
    augmenter = BatchAugmenter(BatchAugment(dihedral=True))
    draws = augmenter.draw(64, 6, 6, seed=3)
    out, out_masks = augmenter.geometry(images, masks, draws)
    assert torch.equal(out_masks, out[:, 0] * 6 + out[:, 1])
    seen = set()
    for i in range(64):
        expected = images[i]
        if draws["vflip"][i]:
            expected = expected.flip(-2)
        if draws["flip"][i]:
            expected = expected.flip(-1)
        if draws["transpose"][i]:
            expected = expected.transpose(-2, -1)
        assert torch.equal(out[i], expected)
        seen.add((bool(draws["vflip"][i]), bool(draws["flip"][i]), bool(draws["transpose"][i])))
    assert len(seen) == 8  # the whole group
    with pytest.raises(InputError, match="square"):
        augmenter.geometry(images[:, :, :4], None, augmenter.draw(64, 4, 6, seed=3))


def test_windows_are_crops_of_whole_images_mask_alike():
    images, masks = _coordinates(16, 12)
    augmenter = BatchAugmenter(BatchAugment(pad_crop=1), crop=5)
    draws = augmenter.draw(16, 12, 12, seed=4)
    out, out_masks = augmenter.geometry(images, masks, draws)
    assert out.shape == (16, 3, 5, 5) and out_masks.shape == (16, 5, 5)
    assert torch.equal(out_masks, out[:, 0] * 12 + out[:, 1])
    padded = F.pad(images.float(), (1, 1, 1, 1), mode="reflect").to(torch.uint8)
    for i in range(16):
        dy, dx = int(draws["dy"][i]), int(draws["dx"][i])
        assert torch.equal(out[i], padded[i, :, dy : dy + 5, dx : dx + 5])
    assert int(draws["dy"].max()) <= 12 - 5 + 2 and len(set(draws["dy"].tolist())) > 3
    with pytest.raises(InputError, match="larger than the in-memory images"):
        BatchAugmenter(BatchAugment(), crop=13).draw(2, 12, 12, seed=0)


def _mask_folder(root: Path, sizes: dict[str, int]) -> Path:
    """root/images/<name>.png (grey) and root/masks/<name>.png (0/1) of the given sizes."""
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name, size in sizes.items():
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(
            root / "images" / f"{name}.png"
        )
        Image.fromarray(rng.integers(0, 2, (size, size), dtype=np.uint8)).save(root / "masks" / f"{name}.png")
    return root


def test_segmentation_crop_keeps_whole_images_in_memory_and_trains_on_windows(tmp_path: Path):
    from vision_lightning.data import MaskFolders

    root = _mask_folder(tmp_path / "data", {f"{i:02d}": 24 for i in range(10)})
    module = SegmentationDataModule(
        MaskFolders(str(root)), image_size=16, batch_size=4, crop=True, channels=1, mean=[0.0], std=[1.0],
        in_memory={"cache_dir": str(tmp_path / "cache")}, batch_augment={"dihedral": True}, val_split=0.2,
    )  # fmt: skip
    module.setup("fit")
    train = [module.on_after_batch_transfer(b, 0) for b in module.train_dataloader()]
    val = [module.on_after_batch_transfer(b, 0) for b in module.val_dataloader()]
    assert all(b["image"].shape[-2:] == (16, 16) and b["mask"].shape[-2:] == (16, 16) for b in train)
    assert all(b["image"].shape[-2:] == (24, 24) and b["mask"].shape[-2:] == (24, 24) for b in val)
    # each window is a piece of its whole image, in one of the 8 orientations, its mask alike
    whole = module._memory[("train", None)]
    first = train[0]
    for image, mask, name in zip(first["image"], first["mask"], first["path"]):
        index = whole.names.index(name)
        source = whole.images[index, 0].float() / 255
        found = False
        for turned, turned_mask in _orientations(image[0], mask):
            windows = source.unfold(0, 16, 1).unfold(1, 16, 1)  # (9, 9, 16, 16)
            hits = (windows == turned).flatten(2).all(-1).nonzero()
            if len(hits):
                y, x = hits[0].tolist()
                assert torch.equal(whole.masks[index][y : y + 16, x : x + 16], turned_mask)
                found = True
        assert found
    module.image_size = 8  # ProgressiveResizing changes the window
    batch = module.on_after_batch_transfer(next(iter(module.train_dataloader())), 0)
    assert batch["image"].shape[-2:] == (8, 8)


def _orientations(image: torch.Tensor, mask: torch.Tensor):
    for transpose in (False, True):
        for turns in range(4):
            a, b = (image.T, mask.T) if transpose else (image, mask)
            yield torch.rot90(a, turns), torch.rot90(b, turns)


def test_in_memory_crop_names_images_of_another_size(tmp_path: Path):
    from vision_lightning.data import MaskFolders

    root = _mask_folder(tmp_path, {"a": 20, "b": 20, "c": 20, "d": 24, "e": 24, "f": 24})
    module = SegmentationDataModule(
        MaskFolders(str(root)), image_size=16, batch_size=2, crop=True, channels=1, val_split=0.5,
        in_memory={"cache": False},
    )  # fmt: skip
    with pytest.raises(
        InputError,
        match=r"must share one size: \S*images/\w\.png is (20x20|24x24) but \S*images/\w\.png is (24x24|20x20); use",
    ):
        module.setup("fit")
        module.train_dataloader()
        module.val_dataloader()


def test_cutout_hides_a_square_of_the_image_only():
    module = SegmentationDataModule(
        SyntheticMasks(samples=12), image_size=16, batch_size=4, mean=[0.5], std=[0.25],
        in_memory={"cache": False}, batch_augment={"cutout": 6},
    )  # fmt: skip
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    out = module.on_after_batch_transfer(batch, 0)
    assert torch.equal(out["mask"], batch["mask"])
    hidden = (out["image"] == 0).all(dim=1)  # 0 after normalisation: the mean colour
    plain = (batch["image"].float() / 255 - 0.5) / 0.25
    assert all(0 < int(h.sum()) <= 36 for h in hidden)
    torch.testing.assert_close(
        out["image"][~hidden[:, None].expand_as(plain)], plain[~hidden[:, None].expand_as(plain)]
    )


def _first_batches(seed: int, epoch: int = 0) -> list[dict]:
    module = ImageClassificationDataModule(
        SyntheticShapes(samples=40), image_size=16, batch_size=8, in_memory={"cache": False},
        batch_augment={"flip": True, "pad_crop": 2, "cutout": 4},
    )  # fmt: skip
    module.load_state_dict({"run_seed": seed})
    module.setup("fit")
    loader = module.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return [module.on_after_batch_transfer(batch, 0) for batch in loader]


def test_same_seed_same_augmented_batches_another_epoch_others():
    first, again, later = _first_batches(7), _first_batches(7), _first_batches(7, epoch=1)
    assert all(SEED_KEY not in batch for batch in first)
    for a, b in zip(first, again):
        assert a["path"] == b["path"] and torch.equal(a["image"], b["image"])
    assert not torch.equal(first[0]["image"], later[0]["image"])


def test_each_rank_reads_its_own_share():
    split = MemorySplit(
        torch.zeros(10, 1, 2, 2, dtype=torch.uint8), list(range(10)), [str(i) for i in range(10)]
    )
    dataset = MemoryDataset(split)
    shares = []
    for rank in range(2):
        sampler = EpochSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        shares.append(
            [p for batch in memory_loader(dataset, 2, sampler, False, False) for p in batch["path"]]
        )
    assert len(shares[0]) == len(shares[1]) == 5 and sorted(shares[0] + shares[1]) == [
        str(i) for i in range(10)
    ]


# ----------------------------------------------------------------------------- through the CLI
def test_quickstart_trains_in_memory_through_the_cli(tmp_path: Path):
    run_cli(
        "fit", "--config", ROOT / "configs/quickstart/classification.yaml",
        "--trainer.fast_dev_run", "2", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", tmp_path / "run", "--checkpoint.dirpath", tmp_path / "run/checkpoints",
        "--data.init_args.source.init_args.samples", "64",
        "--data.init_args.in_memory", f"{{cache_dir: {tmp_path / 'cache'}}}",
        "--data.init_args.batch_augment", "{flip: true, pad_crop: 4, cutout: 8}",
    )  # fmt: skip
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2  # train and val
