"""FeatureExtractModule: layers, pooling, frozen state, checkpoints of this project's tasks, predict
through the CLI, and seed 001's workflow end to end (extract -> linear probe -> kNN)."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests.callbacks.test_feature_maps import ImageRecorder
from tests.conftest import cpu_trainer, optimizer, run_cli
from tests.embedding_cache import write_embedding_cache
from vision_lightning import (
    ClassifierModule,
    EmbeddingDataModule,
    FeatureExtractModule,
    ImageClassificationDataModule,
    KNNClassifierModule,
    SegmentationModule,
)
from vision_lightning.callbacks import PredictionWriter
from vision_lightning.data.classification_sources import ImageFolder, SyntheticShapes
from vision_lightning.tasks.features import pool_features
from vision_lightning.tasks.loading import load_task_checkpoint
from vision_lightning.utils.errors import InputError, MissingInputError

IMAGES = torch.randn(2, 3, 32, 32)


# ---------------------------------------------------------------- layers and pooling
def test_several_layers_in_one_pass_with_each_pooling():
    model = FeatureExtractModule("resnet18", layers=["output", "layer2", "layer3.1.conv2"])
    features = model(IMAGES)
    assert list(features) == ["output", "layer2", "layer3.1.conv2"]
    assert {k: tuple(v.shape) for k, v in features.items()} == {
        "output": (2, 512), "layer2": (2, 128), "layer3.1.conv2": (2, 256),
    }  # fmt: skip
    assert all(v.dtype == torch.float32 for v in features.values())

    backbone = model.backbone
    with torch.no_grad():
        stem = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(IMAGES))))
        layer2 = backbone.layer2(backbone.layer1(stem))  # (2, 128, 4, 4) for 32 px
    expected = {
        ("avg", 1): layer2.mean(dim=(2, 3)),
        ("max", 1): layer2.amax(dim=(2, 3)),
        ("avgmax", 1): 0.5 * (layer2.mean(dim=(2, 3)) + layer2.amax(dim=(2, 3))),
        ("avg", 2): torch.nn.functional.avg_pool2d(layer2, 2).flatten(1),
        ("flatten", 1): layer2.flatten(1),  # C * H * W = 128 * 4 * 4
    }
    for (pool, size), value in expected.items():
        extractor = FeatureExtractModule(backbone, layers=["layer2"], pool=pool, pool_size=size)
        assert torch.allclose(extractor(IMAGES)["layer2"], value, atol=1e-5), (pool, size)
    assert expected[("flatten", 1)].shape == (2, 2048) and expected[("avg", 2)].shape == (2, 512)


def test_in_place_ops_after_a_layer_do_not_change_what_was_captured():
    """VGG's conv outputs are overwritten by the ReLU(inplace=True) after them."""
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Flatten())
    model = FeatureExtractModule(backbone, layers=["0", "output"], pool="flatten")
    with torch.no_grad():
        features, conv = model(IMAGES), backbone[0](IMAGES).flatten(1)
    assert (conv < 0).any() and torch.allclose(features["0"], conv)
    assert torch.allclose(features["output"], conv.clamp_min(0))


def test_token_outputs_are_averaged_over_tokens():
    tokens = torch.randn(2, 5, 3)
    assert torch.allclose(pool_features(tokens, "avg"), tokens.mean(dim=1))
    assert torch.allclose(pool_features(tokens, "max"), tokens.amax(dim=1))
    assert pool_features(tokens, "flatten").shape == (2, 15)
    assert pool_features(torch.randn(2, 7), "max").shape == (2, 7)
    vit = FeatureExtractModule("timm:test_vit", layers=["blocks.0"])
    images = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        blocks = vit.backbone.blocks[0](vit.backbone._pos_embed(vit.backbone.patch_embed(images)))
    assert torch.allclose(vit(images)["blocks.0"], blocks.mean(dim=1), atol=1e-5)


def test_normalize_gives_unit_rows_and_the_module_stays_frozen():
    model = FeatureExtractModule("cifar_lenet", normalize=True)
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training and not any(m.training for m in model.modules())
    rows = model(IMAGES)["output"]
    assert torch.allclose(rows.norm(dim=1), torch.ones(2))


def test_bad_layers_and_arguments_are_refused():
    with pytest.raises(
        InputError,
        match=r"layer 'layer5' is not in the backbone: did you mean layer4.*top-level layers: conv1",
    ):
        FeatureExtractModule("resnet18", layers=["layer5"])
    with pytest.raises(InputError, match="pool must be avg, max, avgmax or flatten"):
        FeatureExtractModule("cifar_lenet", pool="mean")
    with pytest.raises(InputError, match="distinct layers"):
        FeatureExtractModule("cifar_lenet", layers=[])
    with pytest.raises(InputError, match="nothing to fit: run `predict`"):
        cpu_trainer().fit(FeatureExtractModule("cifar_lenet"), ImageClassificationDataModule(image_size=32))


def test_a_ready_module_is_not_a_hyperparameter(tmp_path: Path):
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = FeatureExtractModule(module, layers=["output", "0"])
    assert "backbone" not in model.hparams and model.hparams.layers == ["output", "0"]
    assert model(IMAGES)["0"].shape == (2, 4)
    torch.save({"backbone." + k: v * 0 for k, v in module.state_dict().items()}, tmp_path / "zeros.pth")
    loaded = FeatureExtractModule(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                                  weights=str(tmp_path / "zeros.pth"))  # fmt: skip
    assert loaded(IMAGES)["output"].abs().max() == 0


# ---------------------------------------------------------------- checkpoints of this project's tasks
def _save(task: pl.LightningModule, path: Path) -> Path:
    trainer = cpu_trainer(max_steps=1, limit_val_batches=0)
    data = ImageClassificationDataModule(SyntheticShapes(8, num_classes=3), image_size=32, batch_size=4)
    trainer.fit(task, data)
    trainer.save_checkpoint(path)
    return path


def test_classifier_checkpoint_backbone_gives_the_same_features(tmp_path: Path):
    classifier = ClassifierModule("timm:test_resnet", num_classes=3, log_images=0)  # with BatchNorm
    path = _save(classifier, tmp_path / "classifier.ckpt")
    model = FeatureExtractModule(checkpoint=str(path), layers=["output", "layer2"])
    classifier.eval()
    with torch.no_grad():
        expected = classifier.backbone(IMAGES)
    features = model(IMAGES)
    assert torch.allclose(features["output"], expected, atol=1e-5)  # trained weights, eval statistics
    assert features["layer2"].shape == (2, classifier.backbone.layer2[-1].conv2.out_channels)
    assert type(load_task_checkpoint(path)) is ClassifierModule


def test_segmentation_checkpoint_gives_its_encoder(tmp_path: Path):
    segmenter = SegmentationModule("Unet", encoder="tu-test_resnet", log_images=0, arch_args={"encoder_depth": 3,
                                   "decoder_channels": [16, 8, 4]})  # fmt: skip
    path = tmp_path / "seg.ckpt"
    torch.save({"state_dict": segmenter.state_dict(), "hyper_parameters": dict(segmenter.hparams),
                "pytorch-lightning_version": pl.__version__}, path)  # fmt: skip
    model = FeatureExtractModule(checkpoint=str(path), layers=["output", "model.layer1"])
    segmenter.eval()
    with torch.no_grad():
        deepest = segmenter.model.encoder(IMAGES)[-1]  # smp encoders return every stage
    features = model(IMAGES)
    assert torch.allclose(features["output"], deepest.mean(dim=(2, 3)), atol=1e-5)
    assert features["model.layer1"].shape == (2, segmenter.model.encoder.out_channels[2])
    assert type(load_task_checkpoint(path)) is SegmentationModule


def test_checkpoint_errors_name_the_file(tmp_path: Path):
    with pytest.raises(MissingInputError, match=r"checkpoint .*missing\.ckpt does not exist"):
        FeatureExtractModule(checkpoint=str(tmp_path / "missing.ckpt"))
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"k": 20}}, other)
    with pytest.raises(
        InputError, match=r"other\.ckpt is not a ClassifierModule, SegmentationModule or DetectionModule"
    ):
        load_task_checkpoint(other)
    with pytest.raises(InputError, match="leave out pretrained, weights"):
        FeatureExtractModule(checkpoint=str(other), pretrained=True)


# ---------------------------------------------------------------- ClassifierModule on features
def test_classifier_identity_backbone_is_a_linear_probe():
    probe = ClassifierModule("identity", num_features=6, num_classes=3)
    assert isinstance(probe.backbone, nn.Identity) and probe.head.in_features == 6
    assert probe(torch.randn(4, 6)).shape == (4, 3)
    with pytest.raises(InputError, match="backbone identity needs num_features"):
        ClassifierModule("identity", num_classes=3)
    with pytest.raises(InputError, match="num_features is 10 but backbone 'cifar_lenet' gives 64"):
        ClassifierModule("cifar_lenet", num_features=10)


def test_probe_on_embeddings_logs_the_confusion_matrix_but_no_image_grid(tmp_path: Path):
    write_embedding_cache(tmp_path)
    data = EmbeddingDataModule(str(tmp_path), batch_size=8)
    probe = ClassifierModule(
        "identity", num_features=data.num_features, num_classes=2, optimizer=optimizer(lr=0.05)
    )
    recorder = ImageRecorder()
    cpu_trainer(logger=recorder, max_epochs=3).fit(probe, data)
    assert "val/samples" not in recorder.images and len(recorder.images["val/confusion_matrix"]) == 3


# ---------------------------------------------------------------- predict through the CLI
def _colour_folder(root: Path, per_class: int, seed: int = 0) -> None:
    """Easy classes: mostly red or mostly blue noisy 32 px images."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(["blue", "red"]):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = rng.integers(0, 120, (32, 32, 3))
            image[..., 0 if label else 2] += 120
            Image.fromarray(image.astype(np.uint8)).save(root / name / f"{name}{i}.png")


def test_cli_predict_writes_embeddings_and_an_index_with_labels(tmp_path: Path):
    _colour_folder(tmp_path / "images/train", 5)
    _colour_folder(tmp_path / "images/val", 2, seed=1)
    out = tmp_path / "embeddings"
    run_cli(
        "predict",
        "--model", "FeatureExtractModule", "--model.backbone", "cifar_lenet", "--model.layers", "[output, '6']",
        "--data", "ImageClassificationDataModule", "--data.source", "ImageFolder", "--data.source.root", tmp_path / "images",
        "--data.image_size", "32", "--data.batch_size", "4", "--data.predict_splits", "[train, val]",
        "--trainer.accelerator", "cpu", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", tmp_path, "--prediction_writer.output_dir", out,
    )  # fmt: skip
    assert np.load(out / "embeddings_output_train.npy").shape == (10, 64)
    assert np.load(out / "embeddings_6_val.npy").shape == (4, 120)
    with (out / "embeddings_val.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["label"] for r in rows] == ["blue", "blue", "red", "red"]
    assert Path(rows[2]["path"]).name == "red0.png"


# ---------------------------------------------------------------- seed 001, end to end
def test_seed001_workflow_extract_probe_knn(tmp_path: Path):
    """Train a tiny classifier briefly, extract its features for train and val, fit a linear probe
    on the cache and evaluate the cache with kNN: both far above chance (50%)."""
    pl.seed_everything(0)
    _colour_folder(tmp_path / "images/train", 24)
    _colour_folder(tmp_path / "images/val", 8, seed=1)
    images = ImageClassificationDataModule(
        ImageFolder(str(tmp_path / "images")), image_size=32, batch_size=16, predict_splits=["train", "val"]
    )
    classifier = ClassifierModule("cifar_lenet", num_classes=2, optimizer=optimizer(lr=3e-3), log_images=0)
    trainer = cpu_trainer(max_epochs=2)
    trainer.fit(classifier, images)
    trainer.save_checkpoint(tmp_path / "classifier.ckpt")

    extractor = FeatureExtractModule(checkpoint=str(tmp_path / "classifier.ckpt"))
    cache = tmp_path / "cache"
    cpu_trainer(callbacks=[PredictionWriter(str(cache))]).predict(extractor, images, return_predictions=False)

    embeddings = EmbeddingDataModule(str(cache), batch_size=16)
    assert (embeddings.num_features, embeddings.class_names) == (64, ["blue", "red"])
    probe = ClassifierModule(
        "identity", num_features=embeddings.num_features, num_classes=2, optimizer=optimizer(lr=1e-2)
    )
    trainer = cpu_trainer(max_epochs=4)
    trainer.fit(probe, embeddings)
    assert trainer.callback_metrics["val/acc"] >= 0.9

    knn = KNNClassifierModule(num_classes=2, k=5)
    assert cpu_trainer().validate(knn, embeddings, verbose=False)[0]["val/knn_acc"] >= 0.9


def test_cli_extracts_from_a_checkpoint_the_cli_wrote(tmp_path: Path):
    """A checkpoint written by the CLI names LightningCLI's instantiator in its hyperparameters;
    loading it inside another CLI run (predict with FeatureExtractModule) must still give the
    classifier's backbone, not apply this run's argument links to it."""
    _colour_folder(tmp_path / "images/train", 4)
    _colour_folder(tmp_path / "images/val", 2, seed=1)
    data = ["--data", "ImageClassificationDataModule", "--data.source", "ImageFolder", "--data.source.root", tmp_path / "images",
            "--data.image_size", "32", "--data.batch_size", "4"]  # fmt: skip
    quiet = ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]
    run_cli("fit", "--model", "ClassifierModule", "--model.backbone", "cifar_lenet", *data, *quiet,
            "--trainer.max_epochs", "1", "--trainer.default_root_dir", tmp_path / "fit",
            "--checkpoint.dirpath", tmp_path / "ckpt")  # fmt: skip
    checkpoint = tmp_path / "ckpt/last.ckpt"
    assert "_instantiator" in torch.load(checkpoint, weights_only=True)["hyper_parameters"]
    run_cli("predict", "--model", "FeatureExtractModule", "--model.checkpoint", checkpoint, *data, *quiet,
            "--trainer.logger", "false", "--prediction_writer.output_dir", tmp_path / "out")  # fmt: skip
    expected = FeatureExtractModule(checkpoint=str(checkpoint))
    written = np.load(tmp_path / "out/embeddings.npy")
    assert written.shape == (4, 64)
    assert (
        expected.backbone.state_dict().keys() == load_task_checkpoint(checkpoint).backbone.state_dict().keys()
    )
