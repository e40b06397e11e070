"""Streaming data on LitData: `convert` writes a data module's splits as chunks (an ImageFolder, a label
CSV, mask folders, synthetic multilabel masks), `StreamingClassification` / `StreamingSegmentation`
read them back through the same data modules, transforms and tasks: the same samples, labels, masks
and pixels, each sample once per epoch, a new shuffle every epoch, and one sentence for bad input.

Everything is generated under tmp folders with tiny images; conversions are shared by the tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import albumentations as A
import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import cpu_trainer, run_cli, write_csv
from tests.distributed_helpers import SeenPaths, run_ddp_script
from vision_lightning import ClassifierModule, ProgressiveResizing, SegmentationModule
from vision_lightning.data import (
    CsvLabels,
    ImageClassificationDataModule,
    ImageFolder,
    MaskFolders,
    SegmentationDataModule,
    StreamingClassification,
    StreamingSegmentation,
    write_image_folder,
)
from vision_lightning.data.segmentation_sources import SyntheticShapes
from vision_lightning.data.streaming import METADATA, StreamedSplit
from vision_lightning.data.streaming_convert import convert
from vision_lightning.data.synthetic import ShapeImages
from vision_lightning.utils.errors import DownloadError, InputError, MissingInputError
from vision_lightning.utils.images import read_image, read_mask

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32
CLASSES = ["circle", "square", "triangle"]


def classification(source, **kwargs) -> ImageClassificationDataModule:
    """Tiny defaults: 32 px, raw [0, 1] pixels (the images compare as they are), batch 6."""
    return ImageClassificationDataModule(
        source, **{"image_size": SIZE, "batch_size": 6, "mean": [0.0], "std": [1.0], **kwargs}
    )


def segmentation(source, **kwargs) -> SegmentationDataModule:
    return SegmentationDataModule(
        source, **{"image_size": SIZE, "batch_size": 3, "mean": [0.0], "std": [1.0], **kwargs}
    )


def items_by_path(loaders) -> dict[str, dict]:
    """Every item the loaders give, by path; a path met twice is an error."""
    found: dict[str, dict] = {}
    for loader in loaders if isinstance(loaders, list) else [loaders]:
        for batch in loader:
            for i, path in enumerate(batch["path"]):
                assert path not in found, f"{path} read twice"
                found[path] = {key: value[i] for key, value in batch.items() if key != "path"}
    return found


def converted(module, out: Path, **kwargs) -> Path:
    convert(module, str(out), workers=kwargs.pop("workers", 1), verbose=False, **kwargs)
    return out


# ----------------------------------------------------------------------------- data, converted once
@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """An ImageFolder tree: 8 images per class in train/ (18 train + 6 val after a 25% split), 2 in test/."""
    root = tmp_path_factory.mktemp("folder")
    write_image_folder(root / "train", per_class=8, num_classes=3, image_size=SIZE)
    write_image_folder(root / "test", per_class=2, num_classes=3, image_size=SIZE, seed=1, extension=".jpg")
    return root


@pytest.fixture(scope="module")
def folder_chunks(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chunks") / "folder"
    return converted(classification(ImageFolder(str(folder)), val_split=0.25), out, workers=2)


@pytest.fixture(scope="module")
def mask_folder(tmp_path_factory) -> Path:
    """12 images with 0/255 masks (read with mask_format scale255) in images/ + masks/."""
    root = tmp_path_factory.mktemp("masks")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    shapes = ShapeImages(12, SIZE, 2, seed=3)
    for i in range(len(shapes)):
        image, _, mask = shapes.sample(i)
        Image.fromarray(image).save(root / "images" / f"img{i:02d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"img{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def mask_chunks(mask_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chunks") / "masks"
    return converted(segmentation(MaskFolders(str(mask_folder), mask_format="scale255"), val_split=0.25), out)


# ----------------------------------------------------------------------------- classification
def test_folder_converts_into_the_module_splits_with_class_names(folder, folder_chunks):
    metadata = json.loads((folder_chunks / METADATA).read_text())
    assert metadata["task"] == "classification" and metadata["label_mode"] == "multiclass"
    assert metadata["class_names"] == CLASSES
    assert metadata["splits"] == {"train": 18, "val": 6, "test": 6}
    assert all((folder_chunks / split / "index.json").is_file() for split in ("train", "val", "test"))

    splits = ["train", "val", "test"]
    folder_dm = classification(ImageFolder(str(folder)), val_split=0.25, predict_splits=splits)
    stream_dm = classification(StreamingClassification(str(folder_chunks)), predict_splits=splits)
    assert stream_dm.class_names == CLASSES and stream_dm.num_classes == 3
    for split, folder_loader, stream_loader in zip(
        splits, folder_dm.predict_dataloader(), stream_dm.predict_dataloader()
    ):
        expected, streamed = items_by_path(folder_loader), items_by_path(stream_loader)
        assert sorted(streamed) == sorted(expected), split  # the same samples, each once
        for path, item in streamed.items():
            assert CLASSES[int(item["label"])] == Path(path).parent.name  # the class of its folder
            torch.testing.assert_close(item["image"], expected[path]["image"])  # pixels as read from the file
    assert all(Path(p).suffix == ".jpg" for p in items_by_path(stream_dm.predict_dataloader()[2]))


def test_chunks_hold_the_files_own_bytes(folder, folder_chunks):
    """The JPEG stays that JPEG (not decoded pixels): the chunks are about as large as the files."""
    files = sum(p.stat().st_size for p in folder.rglob("*.*") if p.suffix in (".png", ".jpg"))
    chunks = sum(p.stat().st_size for p in folder_chunks.rglob("chunk-*.bin"))
    assert files <= chunks < files * 1.2
    split = StreamingClassification(str(folder_chunks)).splits(CLASSES, "multiclass", 1, SIZE)["test"][0]
    assert isinstance(split, StreamedSplit) and len(split) == 6
    image, label, name = split.load(0)  # random access, read as grayscale this time
    np.testing.assert_array_equal(image, read_image(name, 1))
    assert CLASSES[label] == Path(name).parent.name


def test_training_streams_every_sample_once_per_epoch_in_a_new_order(folder_chunks):
    dm = classification(StreamingClassification(str(folder_chunks)), predict_splits=["train", "val"])
    seen = SeenPaths()
    model = ClassifierModule("lenet5", num_classes=3, log_images=0)
    trainer = cpu_trainer(max_epochs=3, num_sanity_val_steps=0, callbacks=[seen])
    trainer.fit(model, dm)
    train, val = (set(items_by_path(loader)) for loader in dm.predict_dataloader())
    assert len(train) == 18 and len(val) == 6 and not train & val
    assert [sorted(epoch) for epoch in seen.train] == [sorted(train)] * 3  # 18 = 3 batches of 6: none dropped
    assert len({tuple(epoch) for epoch in seen.train}) == 3  # shuffled anew every epoch
    assert [sorted(run) for run in seen.val] == [sorted(val)] * 3
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


def test_rebuilt_loaders_keep_counting_epochs(folder_chunks):
    """A loader built again between epochs (ProgressiveResizing) shuffles as the next epoch, not the first."""
    split = StreamingClassification(str(folder_chunks)).splits(CLASSES, "multiclass", 3, SIZE)["train"][0]

    def order(epoch: int) -> list[str]:
        loader = split.loader(
            lambda image, label, name: {"path": name}, train=True, batch_size=6, epoch=epoch
        )
        return [path for batch in loader for path in batch["path"]]

    assert order(0) == order(0)  # seeded
    assert sorted(order(1)) == sorted(order(0)) and order(1) != order(0)


def test_csv_labels_convert_with_their_folds(tmp_path, folder):
    """A label CSV read by CsvLabels' own code: fold 0 validates, the rest trains, class names kept."""
    images = sorted((folder / "train").rglob("*.png"))
    rows = [
        {"file": str(p.relative_to(folder)), "kind": p.parent.name.upper(), "fold": i % 3}
        for i, p in enumerate(images)
    ]
    csv_path = write_csv(tmp_path / "labels.csv", rows)
    source = CsvLabels(
        str(csv_path), path_column="file", label_columns="kind", fold_column="fold", root=str(folder)
    )
    out = converted(classification(source), tmp_path / "chunks")
    dm = classification(StreamingClassification(str(out)), predict_splits=["train", "val"])
    assert dm.class_names == ["CIRCLE", "SQUARE", "TRIANGLE"]
    train, val = (items_by_path(loader) for loader in dm.predict_dataloader())
    by_path = {str(folder / row["file"]): row for row in rows}
    assert sorted([*train, *val]) == sorted(by_path)
    assert all(by_path[path]["fold"] == 0 for path in val) and all(by_path[p]["fold"] != 0 for p in train)
    assert all(dm.class_names[int(item["label"])] == by_path[path]["kind"] for path, item in train.items())


def test_soft_label_vectors_convert_and_the_label_mode_must_match(tmp_path, folder):
    images = sorted((folder / "train").rglob("*.png"))[:10]
    rows = [
        {"image": f"{i}.png", "a": 0.5, "b": 0.25 * (i % 3), "c": 0.5 - 0.25 * (i % 3)} for i in range(10)
    ]
    for row, image in zip(rows, images):
        (tmp_path / row["image"]).write_bytes(image.read_bytes())
    source = CsvLabels(str(write_csv(tmp_path / "soft.csv", rows)), label_columns=["a", "b", "c"])
    out = converted(classification(source, label_mode="soft", val_split=0.2), tmp_path / "chunks")
    dm = classification(StreamingClassification(str(out)), label_mode="soft", predict_splits=["train", "val"])
    found = {
        Path(p).name: item["label"]
        for loader in dm.predict_dataloader()
        for p, item in items_by_path(loader).items()
    }
    assert len(found) == 10
    for row in rows:
        torch.testing.assert_close(found[row["image"]], torch.tensor([row["a"], row["b"], row["c"]]))
    with pytest.raises(InputError, match="converted with label_mode soft: train with label_mode soft"):
        classification(StreamingClassification(str(out)))  # multiclass by default


# ----------------------------------------------------------------------------- segmentation
def test_mask_folders_stream_as_class_ids_aligned_with_their_images(mask_folder, mask_chunks):
    metadata = json.loads((mask_chunks / METADATA).read_text())
    assert metadata["task"] == "segmentation" and metadata["mode"] == "binary"
    assert metadata["splits"] == {"train": 9, "val": 3}
    # Training batches, flipped by a joint augmentation: each image and mask as in their files, flipped together.
    flip = [A.HorizontalFlip(p=1.0)]
    dm = segmentation(StreamingSegmentation(str(mask_chunks)), augmentations=flip)
    assert dm.class_names == ["background", "foreground"] and dm.ignore_index is None
    streamed = items_by_path(dm.train_dataloader())
    assert len(streamed) == 9  # 9 = 3 batches of 3
    for path, item in streamed.items():
        image = read_image(path)[:, ::-1]
        mask = read_mask(mask_folder / "masks" / Path(path).name, "scale255")[:, ::-1]
        np.testing.assert_array_equal(item["mask"].numpy(), mask)  # class ids, not 0/255
        torch.testing.assert_close(item["image"], torch.tensor(image.copy()).permute(2, 0, 1).float() / 255)
        assert item["size"].tolist() == [SIZE, SIZE]
    val = items_by_path(dm.val_dataloader())
    assert len(val) == 3 and not set(val) & set(streamed)


def test_segmentation_trains_on_streamed_masks(mask_chunks):
    dm = segmentation(StreamingSegmentation(str(mask_chunks)), channels=1)
    model = SegmentationModule(
        arch="classic_unet", arch_args={"base_channels": 8}, in_channels=1, log_images=0
    )
    trainer = cpu_trainer(max_epochs=1)
    trainer.fit(model, dm)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    assert next(iter(dm.val_dataloader()))["image"].shape == (3, 1, SIZE, SIZE)


def test_multilabel_planes_and_generated_images_convert(tmp_path):
    source = SyntheticShapes(8)
    original = segmentation(source, mode="multilabel", predict_splits=["train", "val", "test"])
    out = converted(segmentation(source, mode="multilabel"), tmp_path / "chunks")
    dm = segmentation(
        StreamingSegmentation(str(out)), mode="multilabel", predict_splits=["train", "val", "test"]
    )
    assert dm.class_names == original.class_names and dm.num_classes == 4
    for expected, streamed in zip(original.predict_dataloader(), dm.predict_dataloader()):
        expected, streamed = items_by_path(expected), items_by_path(streamed)
        assert sorted(streamed) == sorted(expected)
        for path, item in streamed.items():
            assert item["mask"].shape == (4, SIZE, SIZE)  # 0/1 planes, one per class
            torch.testing.assert_close(item["mask"], expected[path]["mask"])
            torch.testing.assert_close(item["image"], expected[path]["image"])
    with pytest.raises(InputError, match="converted with mode multilabel: train with mode multilabel"):
        segmentation(StreamingSegmentation(str(out)), mode="binary")
    with pytest.raises(InputError, match="has 4 classes"):
        segmentation(StreamingSegmentation(str(out)), mode="multilabel", num_classes=3)


def test_progressive_resizing_counts_a_streamed_ranks_own_share(folder_chunks, monkeypatch):
    """Under DDP LitData gives each rank its share (its loader's length is per device already): the
    step estimate of ProgressiveResizing must not divide it by the devices again."""
    from litdata.utilities.env import _DistributedEnv

    monkeypatch.setattr(_DistributedEnv, "detect", classmethod(lambda cls: cls(2, 0, 1)))  # rank 0 of 2
    data = classification(StreamingClassification(str(folder_chunks)), batch_size=3)
    stages = [
        {"epoch": 0, "image_size": 16, "batch_size": 3},
        {"epoch": 1, "image_size": 32, "batch_size": 1},
    ]
    fake = SimpleNamespace(
        datamodule=data, max_epochs=2, max_steps=-1, limit_train_batches=1.0, accumulate_grad_batches=1,
        distributed_sampler_kwargs={"num_replicas": 2, "rank": 0},
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=True),
    )  # fmt: skip
    assert ProgressiveResizing(stages).stepping_batches_per_epoch(fake) == [
        9 // 3,
        9 // 1,
    ]  # 18 samples / 2 ranks


# ----------------------------------------------------------------------------- the command
def test_convert_command_reads_a_configs_data_section(tmp_path, folder, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(
        "model: {class_path: vision_lightning.ClassifierModule, init_args: {backbone: lenet5}}\n"
        "trainer: {max_epochs: 3}\n"
        "data:\n  class_path: vision_lightning.ImageClassificationDataModule\n  init_args:\n"
        "    source: {class_path: vision_lightning.data.ImageFolder, init_args: {root: elsewhere}}\n"
        "    image_size: 32\n"
    )
    out = tmp_path / "chunks"
    run_cli("convert", "--config", config, "--data.init_args.source.init_args.root", folder,
            "--data.init_args.val_split", "0.5", "--output", out, "--workers", "1")  # fmt: skip
    assert "Converted 12 train, 12 val, 6 test samples" in capsys.readouterr().out
    assert StreamingClassification(str(out)).data.split_sizes == {"train": 12, "val": 12, "test": 6}

    with pytest.raises(SystemExit) as error:  # never over converted data
        run_cli("convert", "--config", config, "--data.source.root", folder, "--output", out)
    assert error.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: output {out} already exists and is not empty: convert writes a new folder"
    )
    with pytest.raises(SystemExit):
        run_cli("convert", "--config", tmp_path / "missing.yaml", "--output", tmp_path / "new")
    assert capsys.readouterr().err.strip() == f"error: config file {tmp_path / 'missing.yaml'} does not exist"


# ----------------------------------------------------------------------------- bad input
def test_bad_roots_are_one_sentence(tmp_path, folder, folder_chunks, mask_chunks):
    with pytest.raises(MissingInputError, match="streamed data folder .*nowhere does not exist"):
        StreamingClassification(str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match=f"has no {METADATA}: it is not a folder written by"):
        StreamingClassification(str(folder))  # images, not chunks
    with pytest.raises(
        InputError, match="root 'http://host/data' is not a local folder or an object-store URL"
    ):
        StreamingSegmentation("http://host/data")
    with pytest.raises(InputError, match="holds segmentation data, not classification data"):
        StreamingClassification(str(mask_chunks))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / METADATA).write_text((folder_chunks / METADATA).read_text())
    (broken / "train").mkdir()
    with pytest.raises(
        InputError, match="train has no LitData chunks \\(no index.json\\): convert the data again"
    ):
        StreamingClassification(str(broken))


def test_an_unreachable_object_store_is_one_sentence(monkeypatch, folder):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(
        DownloadError, match=r"^cannot reach s3://bucket/pets/dataset.json \(NoCredentialsError"
    ):
        StreamingClassification("s3://bucket/pets")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    offline = {"endpoint_url": "http://127.0.0.1:9"}  # nothing listens there: as offline as it gets
    with pytest.raises(
        DownloadError, match="copy the converted folder to this machine and give its local path"
    ):
        StreamingSegmentation("s3://bucket/isbi", storage_options=offline)
    with pytest.raises(DownloadError, match="^cannot reach s3://bucket/new"):
        convert(classification(ImageFolder(str(folder))), "s3://bucket/new", storage_options=offline)


def test_a_sample_failing_in_a_writing_worker_is_one_sentence(folder, tmp_path, monkeypatch):
    read_bytes = Path.read_bytes

    def failing(path: Path) -> bytes:  # the forked LitData worker inherits it
        if path.name == "0003.png" and path.parent.name == "square":
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", failing)
    out = tmp_path / "chunks"
    with pytest.raises(InputError) as error:
        convert(classification(ImageFolder(str(folder))), str(out), workers=1, verbose=False)
    assert str(error.value).startswith(f"converting {out / 'train'} failed: PermissionError: [Errno 13]")
    assert "square/0003.png" in str(error.value) and "\n" not in str(error.value)
    assert not (out / METADATA).exists()  # not a usable conversion


def test_options_that_would_split_or_cache_again_are_refused(folder_chunks, mask_chunks, tmp_path):
    with pytest.raises(InputError, match="val_split does not apply to streamed data.*--data.val_split 0.1"):
        classification(StreamingClassification(str(folder_chunks)), val_split=0.1)
    with pytest.raises(InputError, match="cache_images does not apply to streamed data"):
        segmentation(StreamingSegmentation(str(mask_chunks)), cache_images=True)
    with pytest.raises(InputError, match="is converted data already"):
        convert(classification(StreamingClassification(str(folder_chunks))), str(tmp_path / "again"))
    with pytest.raises(
        InputError, match="convert reads ImageClassificationDataModule or SegmentationDataModule"
    ):
        convert(object(), str(tmp_path / "x"))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- DDP
def test_each_ddp_rank_streams_its_own_part(tmp_path, folder):
    """2 CPU processes: no DistributedSampler; training shares are disjoint, equal and in full batches;
    validation reads every sample exactly once across the ranks (9 samples in shares of whole chunk
    intervals, which may differ: nothing padded, nothing dropped)."""
    chunks = converted(classification(ImageFolder(str(folder)), val_split=0.4), tmp_path / "chunks")
    sizes = json.loads((chunks / METADATA).read_text())["splits"]
    assert sizes["train"] == 15 and sizes["val"] == 9
    ranks = run_ddp_script("ddp_streaming_script.py", tmp_path, chunks)
    val = set(items_by_path(classification(StreamingClassification(str(chunks))).val_dataloader()))
    for record in ranks:
        assert record["world_size"] == 2 and record["sampler"] != "DistributedSampler"
    for epoch in range(2):
        first, second = (record["train"][epoch] for record in ranks)
        assert len(first) == len(second) == 3 * ranks[0]["train_batches"] >= 6  # equal, full batches
        assert not set(first) & set(second) and len(set(first)) == len(first)
        first, second = (record["val"][epoch] for record in ranks)
        assert sorted(first + second) == sorted(val)  # each once: none dropped, none repeated
