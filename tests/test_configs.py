"""Every YAML under configs/ runs through the CLI with fast_dev_run on CPU, with the subcommand it
is meant for: `predict` for a feature extractor, `validate` for kNN evaluation, `fit` otherwise.

Downloads and dataset paths are redirected to generated data in the real layout each config
expects (an ImageFolder tree, a CSV with the config's columns, a torchvision stand-in, an embedding
cache written by the real sink), as TorchGeo tests its configs. New configs are picked up
automatically.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import fake_torchvision, run_cli, write_csv
from tests.embedding_cache import write_embedding_cache
from vision_lightning.data import (
    ImageClassificationDataModule,
    ImageFolder,
    MaskFolders,
    SegmentationDataModule,
    VisionDataModule,
)
from vision_lightning.data.detection_synthetic import write_yolo_dataset
from vision_lightning.data.streaming_convert import convert
from vision_lightning.data.synthetic import ShapeImages, write_image_folder
from vision_lightning.data.textures import SyntheticTextures
from vision_lightning.losses.segmentation import LOSS_NAMES
from vision_lightning.utils.rle import rle_encode

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


SOURCE = "--data.init_args.source.init_args."  # the data source's own arguments


def _folder_data(source: dict, tmp_path: Path) -> list[str]:
    root = tmp_path / "images"
    write_image_folder(root / "train", per_class=4, num_classes=3, image_size=32)
    write_image_folder(root / "test", per_class=2, num_classes=3, image_size=32, seed=1)
    test_root = [SOURCE + "test_root", root / "test"] if source.get("test_root") else []
    return [SOURCE + "root", root, *test_root]


def _csv_args(root: Path, csv_path: Path, rows: list[dict]) -> list:
    """Write `rows` to `csv_path`; the CLI arguments that point a config at it."""
    return ["--data.init_args.csv_path", write_csv(csv_path, rows), "--data.init_args.root", root]


def _csv_data(source: dict, mode: str, tmp_path: Path) -> list[str]:
    """Images and a CSV with the columns of a `CsvLabels` source (`source`: its init_args)."""
    root = tmp_path / "csv"
    label_columns = source.get("label_columns", "label")
    label_columns = [label_columns] if isinstance(label_columns, str) else label_columns
    path_column, path_format = source.get("path_column", "image"), source.get("path_format", "{}")
    fold_column = source.get("fold_column")
    source = write_image_folder(tmp_path / "shapes", per_class=5, num_classes=2, image_size=32)
    rows = []
    for i, image in enumerate(source):
        target = root / path_format.format(f"id{i}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(image.read_bytes())
        row = {path_column: f"id{i}"}
        if mode in ("soft", "multilabel"):
            row.update({c: int(j == i % len(label_columns)) for j, c in enumerate(label_columns)})
        else:
            row[label_columns[0]] = i % 2
        if fold_column:
            row[fold_column] = i % 5
        rows.append(row)
    return [SOURCE + "csv_path", write_csv(root / "train.csv", rows), SOURCE + "root", root]


def _classification_data(data: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Data in the layout of the config's classification source (`data.source.class_path`)."""
    source = data.get("source") or {}
    kind = source.get("class_path", "SyntheticShapes").rsplit(".", 1)[-1]
    init_args = source.get("init_args") or {}
    if kind == "SyntheticShapes":
        return [SOURCE + "samples", "32"]
    if kind == "ImageFolder":
        return _folder_data(init_args, tmp_path)
    if kind == "CsvLabels":
        return _csv_data(init_args, data.get("label_mode", "multiclass"), tmp_path)
    if kind == "TorchvisionDataset":
        fake_torchvision(monkeypatch, init_args["name"], size=data.get("image_size", 32))
        return [SOURCE + "download", "false", SOURCE + "root", tmp_path / "tv"]
    if kind == "StreamingClassification":  # an ImageFolder converted into chunks, as `convert` writes them
        root = _folder_data({}, tmp_path)[1]
        label_mode = data.get("label_mode", "multiclass")
        return _converted(ImageClassificationDataModule(ImageFolder(str(root)), label_mode), tmp_path)
    raise AssertionError(f"config smoke test does not know classification source {kind!r}: teach it")


def _converted(module: VisionDataModule, tmp_path: Path) -> list:
    """`module`'s data converted into LitData chunks; the argument that points a streaming source at them."""
    convert(module, str(tmp_path / "chunks"), workers=1, verbose=False)
    return [SOURCE + "root", tmp_path / "chunks"]


def _mask_file(mask: np.ndarray, source: str, args: dict) -> Image.Image:
    """A class-id mask saved the way the config's source reads it (colours, `mask_format`)."""
    if source == "PaletteMasks":
        return Image.fromarray(np.array(args["colors"], dtype=np.uint8)[mask])
    scale = 255 if args.get("mask_format") == "scale255" else 1
    return Image.fromarray((mask * scale).astype(np.uint8))


def _segmentation_data(data: dict, tmp_path: Path) -> list[str]:
    """Shapes and masks in the layout and mask format the config's source expects (mask folders or
    an RLE CSV), named `img<group>_<view>` in three groups for a source's `group_pattern` or
    `group_column`; synthetic shapes are only made fewer."""
    source = data.get("source") or {}
    kind = source.get("class_path", "SyntheticShapes").rsplit(".", 1)[-1]
    args = source.get("init_args") or {}
    if kind == "SyntheticShapes":
        return ["--data.init_args.source.init_args.samples", "32"]
    if kind == "StreamingSegmentation":  # mask folders converted into chunks, as `convert` writes them
        folders = {**data, "source": {"class_path": "MaskFolders"}}
        root = _segmentation_data(folders, tmp_path)[1]
        mode, channels = data.get("mode", "binary"), data.get("channels", 3)
        classes = {"num_classes": data.get("num_classes"), "class_names": data.get("class_names")}
        module = SegmentationDataModule(MaskFolders(str(root)), mode, channels=channels, **classes)
        return [*_converted(module, tmp_path), "--data.init_args.image_size", "64"]
    set_arg = "--data.init_args.source.init_args."
    root, mode = tmp_path / "seg", data.get("mode", "binary")
    classes = len(data.get("class_names") or args.get("colors") or []) or data.get("num_classes") or 2
    shapes = ShapeImages(12, 64, 2, channels=data.get("channels", 3))
    samples = []
    for i in range(len(shapes)):
        image, label, mask = shapes.sample(i)
        class_id = 1 if mode == "binary" else 1 + (label + i) % (classes - 1)
        samples.append((f"img{i // 4}_{i % 4:02d}", image, (mask * class_id).astype(np.uint8)))
    if args.get("group_pattern"):  # file sources: the names carry the groups (Carvana: <car>_<view>)
        groups = [re.search(args["group_pattern"], name) for name, _, _ in samples]
        assert all(groups), f"group_pattern {args['group_pattern']!r}: teach the smoke test names it matches"
        keys = [match.group(1) if match.re.groups else match.group(0) for match in groups]
        assert len(set(keys)) == 3, f"group_pattern {args['group_pattern']!r} should find img0, img1, img2"
    if kind == "RleCsv":
        path_format, rows = args.get("path_format", "{}"), []
        for name, image, mask in samples:
            name = name if Path(path_format).suffix else f"{name}.png"  # the column holds file names
            image_path = root / path_format.format(name)
            image_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.squeeze()).save(image_path)
            rle = rle_encode(mask > 0, args.get("rle_format", "carvana"), args.get("rle_order", "F"))
            row = {args.get("path_column", "id"): name, args.get("rle_column", "rle"): rle}
            if args.get("class_column"):
                row[args["class_column"]] = int(mask.max())
            if args.get("group_column"):
                row[args["group_column"]] = name.split("_")[0]
            rows.append(row)
        csv_path = root / "masks.csv"
        _csv_args(root, csv_path, rows)
        return [set_arg + "csv_path", csv_path, set_arg + "root", root]
    assert kind in ("MaskFolders", "PaletteMasks"), f"config smoke test does not know source {kind}"
    images = root / "train" / (args.get("image_dir") or "images")
    suffix = args.get("mask_suffix", "")
    masks = (
        root / "train" / args["mask_dir"]
        if args.get("mask_dir")
        else images
        if suffix
        else root / "train/masks"
    )
    extension = args.get("mask_extension") or ".png"
    test = root / "test" / (args.get("image_dir") or "")
    for folder in (images, masks, test):
        folder.mkdir(parents=True, exist_ok=True)
    for name, image, mask in samples:
        Image.fromarray(image.squeeze()).save(images / f"{name}.png")
        _mask_file(mask, kind, args).save(masks / f"{name}{suffix}{extension}")
        Image.fromarray(image.squeeze()).save(test / f"{name}.png")  # unlabelled: predicted
    return [set_arg + "root", root, "--data.init_args.image_size", "64"]


def _texture_folder(folder: Path, count: int, size: int, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    textures = SyntheticTextures(count, size, seed=seed)
    for i in range(count):
        Image.fromarray(textures.sample(i)).save(folder / f"img{i}.png")
    return folder


def _nested_source(data: dict) -> tuple[str, dict]:
    """The class name and init_args of the config's data source (`source: {class_path, init_args}`)."""
    source = data.get("source") or {}
    return source.get("class_path", "").rsplit(".", 1)[-1], source.get("init_args") or {}


def _superres_data(data: dict, tmp_path: Path, min_size: int = 0) -> list[str]:
    """HR photos stand-ins in the folders the config's SuperResFolders names (train, val, test),
    larger than the crops (`min_size`: the largest crop a callback grows them to)."""
    kind, source = _nested_source(data)
    args = []
    for key in ("train_root", "val_root", "test_root"):
        if kind == "SuperResFolders" and source.get(key):
            folder = _texture_folder(tmp_path / key, 3, max(100, min_size + 4), seed=len(args))
            args += [f"--data.init_args.source.init_args.{key}", folder]
    return [*args, "--data.init_args.image_size", "48", "--data.init_args.patches_per_image", "1"]


def _style_data(data: dict, tmp_path: Path) -> list[str]:
    """Content photos and a style image in place of the config's, small enough for a quick step."""
    style = _texture_folder(tmp_path / "style", 1, 48, seed=7) / "img0.png"
    args = ["--data.init_args.style_image", style, "--data.init_args.image_size", "32"]
    kind, source = _nested_source(data)
    if kind == "ContentFolders" and source.get("train_root"):
        content = _texture_folder(tmp_path / "content", 4, 40)
        args += ["--data.init_args.source.init_args.train_root", content]
    return args


def _embedding_data(data: dict, tmp_path: Path) -> list[str]:
    """A small cache of the splits the config reads, as FeatureExtractModule's predict writes it."""
    splits = [data.get(key, default) for key, default in (("train_split", "train"), ("val_split", "val"))]
    splits += [data["test_split"]] if data.get("test_split") else []
    layers = [data["layer"]] if data.get("layer") else ["output"]
    write_embedding_cache(tmp_path / "cache", [s for s in splits if s is not None], layers=layers, rows=6)
    return ["--data.init_args.root", tmp_path / "cache"]


def _detection_data(data: dict, tmp_path: Path) -> list[str]:
    """Synthetic boxes written in the layout of the config's YOLO source (its data.yaml, or the
    folder of images/ and labels/), at a small input size for a quick step."""
    kind, source = _nested_source(data)
    args = ["--data.init_args.image_size", "64"]
    if kind == "YoloFolders":
        yaml_path = write_yolo_dataset(tmp_path / "yolo", samples=6, num_classes=7, image_size=64)
        root = yaml_path if str(source.get("root", "")).endswith((".yaml", ".yml")) else yaml_path.parent
        args += [SOURCE + "root", root]
    elif kind != "SyntheticBoxes":
        raise AssertionError(
            f"config smoke test does not know detection source {kind!r}: teach _detection_data"
        )
    return args


def _largest_stage(spec: dict) -> int:
    """The largest image_size a ProgressiveResizing callback of the config grows to (0: none)."""
    callbacks = (spec.get("trainer") or {}).get("callbacks") or []
    stages = [s for c in callbacks for s in (c.get("init_args") or {}).get("stages") or []]
    return max((s["image_size"] for s in stages if isinstance(s, dict)), default=0)


def redirect_data(
    data: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str = "", min_size: int = 0
) -> list[str]:
    if kind == "EmbeddingDataModule":
        return _embedding_data(data, tmp_path)
    if kind == "SuperResDataModule":
        return _superres_data(data, tmp_path, min_size)
    if kind == "StyleTransferDataModule":
        return _style_data(data, tmp_path)
    if kind == "ImageClassificationDataModule":
        return _classification_data(data, tmp_path, monkeypatch)
    if kind == "SegmentationDataModule":
        return _segmentation_data(data, tmp_path) + ["--data.init_args.cache_images", "false"]
    if kind == "DetectionDataModule":
        return _detection_data(data, tmp_path)
    raise AssertionError(f"config smoke test does not know data module {kind!r}: teach redirect_data")


#: the subcommand a config is run with, by model class (the rest: fit)
SUBCOMMANDS = {"FeatureExtractModule": "predict", "KNNClassifierModule": "validate"}


def test_configs_are_found():
    assert len(CONFIGS) >= 36
    assert (ROOT / "configs/quickstart/classification.yaml") in CONFIGS
    assert (ROOT / "configs/features/cats_dogs_vgg16_extract.yaml") in CONFIGS


@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(ROOT / "configs")) for c in CONFIGS])
def test_config_fast_dev_run(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _smoke_run(config, tmp_path, monkeypatch)


#: under bf16-mixed on CPU: one config per task, and the segmentation quickstart with every loss
#: (multiclass for ce and Lovasz, whose multiclass form used to fail on bf16 logits)
BF16_CASES = {
    "classification": ("quickstart/classification.yaml", []),
    "superres": ("quickstart/superres.yaml", []),
    "style": ("quickstart/style.yaml", []),
    "detection": ("quickstart/detection.yaml", []),
    "features": ("features/cats_dogs_vgg16_extract.yaml", []),
    **{
        f"segmentation-{loss}": (
            "quickstart/segmentation.yaml",
            ["--model.init_args.loss", loss]
            + (
                ["--data.init_args.mode", "multiclass"]  # the data's 5 classes are linked into the model
                if loss in ("ce", "lovasz")
                else []
            ),
        )
        for loss in LOSS_NAMES
    },
}


@pytest.mark.parametrize("case", list(BF16_CASES))
@pytest.mark.filterwarnings("error:the weights are not finite")  # the checkpoint callback's: a NaN step
def test_config_runs_under_bf16_mixed(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config, extra = BF16_CASES[case]
    _smoke_run(ROOT / "configs" / config, tmp_path, monkeypatch, "bf16-mixed", extra)


def _smoke_run(
    config: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    precision: str = "32-true",
    extra: list = (),
) -> None:
    spec = yaml.safe_load(config.read_text())
    data = spec["data"].get("init_args", {})
    model = spec["model"].get("init_args", {})
    subcommand = SUBCOMMANDS.get(spec["model"]["class_path"].rsplit(".", 1)[-1], "fit")
    args = [
        subcommand, "--config", config,
        "--trainer.fast_dev_run", "true",
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "1",
        "--trainer.precision", precision,
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", tmp_path / "run",
        "--checkpoint.dirpath", tmp_path / "run/checkpoints",
        "--data.init_args.loader.num_workers", "0",
        "--data.init_args.batch_size", "2",
    ]  # fmt: skip
    if model.get("pretrained"):
        args += ["--model.init_args.pretrained", "false"]  # no downloads in tests
    if model.get("weights"):
        args += ["--model.init_args.weights", "null"]  # an earlier stage's output: not there in tests
        if model.get("new_layers_first"):  # which layers are new comes from those weights
            args += ["--model.init_args.new_layers_first", "0"]
    if model.get("coco_weights"):
        args += ["--model.init_args.coco_weights", "false"]  # torchvision's COCO detector download
    if model.get("feature_pretrained"):
        args += ["--model.init_args.feature_pretrained", "false"]  # the loss network's download
    if subcommand == "predict":
        args += ["--prediction_writer.output_dir", tmp_path / "predictions"]
    kind = spec["data"]["class_path"].rsplit(".", 1)[-1]
    monkeypatch.setenv("VISION_LIGHTNING_CACHE", str(tmp_path / "cache"))  # in_memory configs' decoded splits
    args += redirect_data(data, tmp_path, monkeypatch, kind, _largest_stage(spec))
    run_cli(*args, *extra)
    if subcommand == "predict":
        assert any((tmp_path / "predictions").iterdir()), f"{config.name} wrote no predictions"
