"""SegmentationModule: parameter counts and freezing, architectures by name at any image size, the
losses and their checks, hand-computed IoU / Dice, training on synthetic shapes with TensorBoard,
mask files at the original image size (PNG and RLE), checkpoints and encoder weights, the CLI, and
masks that do not fit the model.

Everything runs on CPU with 32-64 px images and small networks (a resnet18 U-Net three levels deep,
or the classic U-Net with 8 base channels), so the whole file takes about a minute.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader

from tests.conftest import cpu_trainer as trainer
from tests.conftest import optimizer, run_cli
from vision_lightning import ClassifierModule, SegmentationDataModule, SegmentationModule
from vision_lightning.callbacks.prediction_writer import PredictionWriter
from vision_lightning.data.segmentation_sources import SyntheticShapes
from vision_lightning.data.synthetic import render_shape
from vision_lightning.losses.segmentation import LOSS_NAMES, build_segmentation_loss
from vision_lightning.metrics.segmentation import SegmentationScores
from vision_lightning.models.unet import PaperUNet
from vision_lightning.outputs.masks import MaskSink
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.rle import rle_decode

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs/quickstart/segmentation.yaml"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SMALL_UNET = {
    "arch": "Unet",
    "encoder": "resnet18",
    "arch_args": {"encoder_depth": 3, "decoder_channels": [32, 16, 8]},
}
TINY_UNET = {"arch": "classic_unet", "arch_args": {"base_channels": 8}}
PREDICT_HEIGHT, PREDICT_WIDTH = 40, 56  # not the data module's square image_size


# ----------------------------------------------------------------------------- helpers
def datamodule(**kwargs) -> SegmentationDataModule:
    defaults = {
        "source": SyntheticShapes(64),
        "mode": "binary",
        "image_size": 32,
        "batch_size": 16,
    }
    return SegmentationDataModule(**{**defaults, **kwargs})


def small_model(**kwargs) -> SegmentationModule:
    return SegmentationModule(**{**SMALL_UNET, "log_images": 0, **kwargs})


def count(module: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


def clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def events(folder: Path) -> EventAccumulator:
    files = sorted(Path(folder).rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file under {folder}"
    accumulator = EventAccumulator(str(files[0].parent), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def loader(images: torch.Tensor, masks: torch.Tensor, batch_size: int = 2) -> DataLoader:
    """What a user's own data module may hand over: dict batches, masks unchecked."""
    samples = [
        {"image": image, "mask": mask, "path": f"user/{i}.png"}
        for i, (image, mask) in enumerate(zip(images, masks))
    ]
    return DataLoader(samples, batch_size=batch_size)


def write_predict_folder(folder: Path, count: int, kinds: int = 2, seed: int = 7) -> dict[str, np.ndarray]:
    """Synthetic shapes cropped to 40x56 PNGs; returns each file stem's true class-id mask
    (0 background, 1 + kind for the shape)."""
    folder.mkdir(parents=True)
    truth = {}
    top = (PREDICT_WIDTH - PREDICT_HEIGHT) // 2
    for index in range(count):
        image, label, mask = render_shape(seed, index, PREDICT_WIDTH, kinds)
        rows = slice(top, top + PREDICT_HEIGHT)
        Image.fromarray(image[rows]).save(folder / f"img{index:02d}.png")
        truth[f"img{index:02d}"] = mask[rows].astype(np.uint8) * (label + 1)
    return truth


def iou(predicted: np.ndarray, true: np.ndarray) -> float:
    union = np.logical_or(predicted, true).sum()
    return float(np.logical_and(predicted, true).sum() / union) if union else 1.0


class Identity32(nn.Module):
    """A 'network' that takes only sides divisible by 32 and returns its input's first channel: what
    the task gives back for an image of any size must then be the image itself, pixel for pixel."""

    output_stride = 32

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(3, 3, 1)
        self.seen: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[2] % 32 == 0 and x.shape[3] % 32 == 0, x.shape
        self.seen.append(tuple(x.shape[2:]))
        return x[:, :1]


class PaperUNetProbe(PaperUNet):
    """The paper U-Net's geometry without its convolutions: only valid input sides, and output pixel
    j is input pixel j + 92 (572 in, 388 out)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for side in x.shape[2:]:
            assert self.output_size(side) == side - 184
        return x[:, :1, 92:-92, 92:-92]


class ConstantProbability(nn.Module):
    """Every pixel of every plane gets the same probability."""

    def __init__(self, probability: float, planes: int = 1) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(3, 1, 1)
        self.planes, self.logit = planes, math.log(probability / (1 - probability))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), self.planes, *x.shape[2:]), self.logit)


# ----------------------------------------------------------------------------- parameters and freezing
def test_efficientnet_b5_unet_parameter_counts_and_partial_freezing():
    reference = smp.Unet("efficientnet-b5", encoder_weights=None, classes=5)
    model = SegmentationModule(arch="Unet", encoder="efficientnet-b5", num_classes=5, mode="multiclass")
    assert count(model) == count(reference) == 31_216_581
    assert count(model, trainable=True) == 31_216_581

    frozen = SegmentationModule(
        arch="Unet", encoder="efficientnet-b5", num_classes=5, mode="multiclass", freeze_backbone=3
    )
    assert count(frozen) == 31_216_581
    assert count(frozen, trainable=True) == 3_928_469
    children = list(frozen.backbone.children())
    assert not any(p.requires_grad for child in children[:3] for p in child.parameters())
    assert all(p.requires_grad for child in children[3:] for p in child.parameters())

    frozen.train()
    frozen_norms = [m for child in children[:3] for m in child.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(frozen_norms) > 10 and not any(m.training for m in frozen_norms)
    assert children[4].training  # the encoder's last BatchNorm is not frozen
    assert frozen.model.decoder.training and frozen.model.segmentation_head.training
    # a training-mode forward keeps the frozen statistics and updates the decoder's
    decoder_norm = next(m for m in frozen.model.decoder.modules() if isinstance(m, nn.BatchNorm2d))
    stem_mean, decoder_mean = children[1].running_mean.clone(), decoder_norm.running_mean.clone()
    frozen(torch.randn(2, 3, 64, 64))
    assert torch.equal(children[1].running_mean, stem_mean)
    assert not torch.equal(decoder_norm.running_mean, decoder_mean)


def test_freeze_backbone_true_freezes_the_whole_encoder():
    model = small_model(freeze_backbone=True)
    encoder = model.model.encoder
    assert model.backbone is encoder and model.backbone_frozen
    assert not any(p.requires_grad for p in encoder.parameters())
    assert count(model, trainable=True) == count(model) - count(encoder) > 0
    model.train()
    assert not any(m.training for m in encoder.modules())
    assert model.model.decoder.training

    before = clone_state(model)
    trainer(limit_train_batches=2, limit_val_batches=0).fit(model, datamodule())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("model.encoder."))
    assert not torch.equal(
        before["model.segmentation_head.0.weight"], after["model.segmentation_head.0.weight"]
    )


def test_freeze_backbone_beyond_the_encoders_children_is_an_input_error():
    with pytest.raises(InputError, match="freeze_backbone=99: the backbone has"):
        small_model(freeze_backbone=99)


def test_classic_unet_parameter_count():
    model = SegmentationModule(arch="classic_unet", in_channels=1, mode="binary")
    assert count(model) == 13_394_177
    assert model.model.segmentation_head.out_channels == 1
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 1, 32, 32)


# ----------------------------------------------------------------------------- architectures
ARCHITECTURES = {
    "Unet": SMALL_UNET,
    "UnetPlusPlus": {**SMALL_UNET, "arch": "UnetPlusPlus"},
    "FPN": {"encoder": "resnet18"},
    "DeepLabV3Plus": {"encoder": "resnet18"},
    "Segformer": {"encoder": "mit_b0"},
    "classic_unet": {"arch_args": {"base_channels": 8}},
    "paper_unet": {"arch_args": {"base_channels": 8}},
}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_architectures_give_logits_of_the_input_size(arch):
    kwargs = {**ARCHITECTURES[arch], "arch": arch}
    model = SegmentationModule(**kwargs, num_classes=3, mode="multiclass").eval()
    images = torch.randn(2, 3, 50, 70)  # no side divisible by 8, 16 or 32
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (2, 3, 50, 70)
    assert torch.isfinite(logits).all()
    binary = SegmentationModule(**kwargs, mode="binary").eval()
    with torch.no_grad():
        assert binary(images[:1]).shape == (1, 1, 50, 70)


def test_padding_is_cropped_back_exactly():
    network = Identity32()
    model = SegmentationModule(arch=network)
    assert model.model is network and model.backbone is network.encoder
    assert "arch" not in model.hparams  # a module is not a hyperparameter
    images = torch.randn(2, 3, 50, 70)
    assert torch.equal(model(images), images[:, :1])
    assert network.seen == [(64, 96)]
    assert torch.equal(model(images[..., :64, :96]), images[:, :1, :64, :96])  # no padding needed


def test_paper_unet_overlap_tile_covers_the_image_exactly():
    model = SegmentationModule(arch=PaperUNetProbe(base_channels=1), mode="multiclass", num_classes=2)
    for height, width in [(50, 70), (388, 388), (300, 200)]:
        images = torch.randn(1, 3, height, width)
        assert torch.equal(model(images), images[:, :1])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "Unett"}, "unknown segmentation arch 'Unett': did you mean unet"),
        ({"arch": "Unet", "encoder": "resnet19"}, "unknown smp encoder 'resnet19': did you mean resnet18"),
        (
            {"arch": "classic_unet", "encoder": "resnet18"},
            "arch classic_unet has its own encoder; remove encoder: resnet18",
        ),
        ({"arch": "paper_unet", "pretrained": True}, "arch paper_unet has no pretrained weights"),
        ({"arch": "classic_unet", "arch_args": {"base_channel": 8}}, "arch_args for classic_unet"),
        ({"arch": nn.Conv2d(3, 1, 1)}, "a segmentation network passed as arch needs an `encoder` attribute"),
        ({"mode": "binary", "num_classes": 3}, "mode binary has 2 classes (background, foreground)"),
        ({"mode": "semantic"}, "mode must be binary, multiclass or multilabel"),
        ({"mode": "multiclass", "num_classes": 3, "class_names": ["a", "b"]}, "class_names has 2 names"),
        ({"threshold": 1.0}, "threshold is a probability between 0 and 1"),
    ],
)
def test_bad_model_arguments_are_input_errors(kwargs, message):
    with pytest.raises(InputError, match=re.escape(message)):
        SegmentationModule(**kwargs)


# ----------------------------------------------------------------------------- losses
def loss_inputs(mode: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    planes = 1 if mode == "binary" else num_classes
    logits = torch.randn(2, planes, 8, 8, generator=generator)
    if mode == "multilabel":
        target = torch.randint(0, 2, (2, num_classes, 8, 8), generator=generator).float()
    else:
        target = torch.randint(0, num_classes, (2, 8, 8), generator=generator)
    return logits, target


def perfect_logits(mode: str, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    if mode == "binary":
        return (target.float() * 20 - 10).unsqueeze(1)
    if mode == "multiclass":
        return F.one_hot(target, num_classes).permute(0, 3, 1, 2).float() * 20 - 10
    return target * 20 - 10


VALID_LOSSES = [
    (mode, name)
    for mode in ("binary", "multiclass", "multilabel")
    for name in LOSS_NAMES
    if not (name == "ce" and mode != "multiclass") and not (name == "bce" and mode == "multiclass")
]


@pytest.mark.parametrize(("mode", "name"), VALID_LOSSES)
def test_each_loss_is_near_zero_for_perfect_logits_and_has_gradients(mode, name):
    num_classes = 2 if mode == "binary" else 3
    loss_fn = SegmentationModule(**TINY_UNET, mode=mode, num_classes=num_classes, loss=name).loss_fn
    logits, target = loss_inputs(mode, num_classes)
    logits.requires_grad_(True)
    total, parts = loss_fn(logits, target)
    assert list(parts) == [name] and torch.equal(total, parts[name])
    total.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    perfect, _ = loss_fn(perfect_logits(mode, target, num_classes), target)
    assert perfect < 0.02 and total > perfect + 0.2


def test_binary_bce_dice_jaccard_by_hand():
    logits, target = loss_inputs("binary", 2)
    p, t = torch.sigmoid(logits[:, 0]), target.float()
    intersection, total = (p * t).sum(), p.sum() + t.sum()
    losses = {
        name: build_segmentation_loss(name, "binary", 2)(logits, target)[0]
        for name in ("bce", "dice", "jaccard")
    }
    assert losses["bce"] == pytest.approx(
        float(F.binary_cross_entropy_with_logits(logits[:, 0], t)), abs=1e-6
    )
    assert losses["dice"] == pytest.approx(float(1 - 2 * intersection / total), abs=1e-5)
    assert losses["jaccard"] == pytest.approx(float(1 - intersection / (total - intersection)), abs=1e-5)


def test_multiclass_dice_by_hand_averages_the_classes():
    logits, target = loss_inputs("multiclass", 3)
    p, t = logits.softmax(dim=1), F.one_hot(target, 3).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    per_class = 1 - 2 * (p * t).sum(dims) / (p.sum(dims) + t.sum(dims))
    loss = build_segmentation_loss("dice", "multiclass", 3)(logits, target)[0]
    assert loss == pytest.approx(float(per_class.mean()), abs=1e-5)


@pytest.mark.parametrize(
    ("mode", "weights"),
    [
        ("binary", {"bce": 0.3, "dice": 0.7}),
        ("multiclass", {"ce": 1.0, "lovasz": 0.5, "focal": 2.0}),
        ("multilabel", {"bce": 0.25, "jaccard": 0.25, "tversky": 1.5}),
    ],
)
def test_weighted_combination_is_the_weighted_sum_of_its_terms(mode, weights):
    num_classes = 2 if mode == "binary" else 3
    logits, target = loss_inputs(mode, num_classes)
    total, parts = build_segmentation_loss(weights, mode, num_classes)(logits, target)
    assert list(parts) == list(weights)
    alone = {name: build_segmentation_loss(name, mode, num_classes)(logits, target)[0] for name in weights}
    for name in weights:
        assert torch.allclose(parts[name], alone[name])
    assert total == pytest.approx(sum(w * float(alone[name]) for name, w in weights.items()), rel=1e-6)


def test_ce_with_class_weights_and_ignore_index_is_torchs():
    logits, target = loss_inputs("multiclass", 3)
    target[:, :3] = 255
    weights = [0.2, 1.0, 3.0]
    model = SegmentationModule(
        **TINY_UNET, mode="multiclass", num_classes=3, loss={"class_weights": weights}, ignore_index=255
    )
    expected = nn.CrossEntropyLoss(weight=torch.tensor(weights), ignore_index=255)(logits, target)
    assert torch.allclose(model.loss_fn(logits, target)[0], expected)
    plain = nn.CrossEntropyLoss(ignore_index=255)(logits, target)
    assert not torch.allclose(expected, plain)  # the weights matter here
    smoothed = build_segmentation_loss("ce", "multiclass", 3, loss_args={"ce": {"label_smoothing": 0.1}})(
        logits, target % 3
    )[0]
    assert torch.allclose(smoothed, nn.CrossEntropyLoss(label_smoothing=0.1)(logits, target % 3))


@pytest.mark.parametrize("mode", ["binary", "multilabel"])
def test_bce_leaves_out_ignore_index_pixels(mode):
    num_classes = 2 if mode == "binary" else 3
    logits, target = loss_inputs(mode, num_classes)
    target[0, ..., :3] = 255
    keep = (target != 255).view(logits.shape)
    loss = build_segmentation_loss("bce", mode, num_classes, ignore_index=255)(logits, target)[0]
    expected = F.binary_cross_entropy_with_logits(logits[keep], target.view(logits.shape)[keep].float())
    assert torch.allclose(loss, expected)
    changed = logits.clone()
    changed[~keep] = 100.0  # what the network says on ignored pixels does not count
    assert torch.allclose(
        build_segmentation_loss("bce", mode, num_classes, ignore_index=255)(changed, target)[0], loss
    )


def test_binary_bce_class_weights_weigh_the_foreground():
    logits, target = loss_inputs("binary", 2)
    loss = build_segmentation_loss("bce", "binary", 2, class_weights=[0.5, 1.5])(logits, target)[0]
    expected = F.binary_cross_entropy_with_logits(
        logits[:, 0], target.float(), pos_weight=torch.tensor([3.0])
    )
    assert torch.allclose(loss, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": "ce"}, "loss ce needs mode multiclass; use bce for mode binary"),
        ({"mode": "multilabel", "num_classes": 3, "loss": "ce"}, "loss ce needs mode multiclass"),
        ({"mode": "multiclass", "num_classes": 3, "loss": "bce"}, "loss bce needs mode binary or multilabel"),
        ({"loss": "dicee"}, "unknown segmentation loss ['dicee']: choose from bce, ce, dice"),
        ({"loss": {"bce": 0.5, "dyce": 0.5}}, "unknown segmentation loss ['dyce']"),
        ({"loss": {"terms": "dice", "args": {"focal": {"gamma": 3}}}}, "loss args name loss(es) ['focal']"),
        (
            {"mode": "multiclass", "num_classes": 3, "loss": {"class_weights": [1.0, 2.0]}},
            "class_weights has 2 values but there are 3 classes",
        ),
        ({"loss": {"terms": "focal", "args": {"focal": {"gama": 3}}}}, "loss args for focal"),
        ({"loss": {"terms": "bce", "args": {"bce": {"smoothing": 0.1}}}}, "loss args for bce"),
        (
            {
                "mode": "multiclass",
                "num_classes": 3,
                "loss": {"terms": "ce", "args": {"ce": {"smooth": 0.1}}},
            },
            "loss args for ce",
        ),
    ],
)
def test_invalid_losses_are_input_errors(kwargs, message):
    with pytest.raises(InputError, match=re.escape(message)):
        SegmentationModule(**{**TINY_UNET, **kwargs})


def test_combined_loss_logs_each_term():
    model = small_model(loss={"bce": 0.5, "dice": 0.5})
    fit = trainer(limit_train_batches=2)
    fit.fit(model, datamodule())
    metrics = fit.callback_metrics
    for key in ("train/loss_bce", "train/loss_dice", "val/loss_bce", "val/loss_dice"):
        assert key in metrics and key in fit.logged_metrics
    for stage, loss in (("train", "train/loss_epoch"), ("val", "val/loss")):
        weighted = 0.5 * metrics[f"{stage}/loss_bce"] + 0.5 * metrics[f"{stage}/loss_dice"]
        assert float(metrics[loss]) == pytest.approx(float(weighted), rel=1e-5)

    single = trainer(limit_train_batches=1)
    single.fit(small_model(loss="bce"), datamodule())
    assert "val/loss" in single.callback_metrics
    assert not any(key.startswith(("val/loss_", "train/loss_b")) for key in single.callback_metrics)


# ----------------------------------------------------------------------------- metrics
def scores(mode: str, num_classes: int, predicted, target, names=None, ignore_index=None) -> dict:
    metric = SegmentationScores(mode, num_classes, names, ignore_index)
    metric.update(torch.tensor(predicted), torch.tensor(target))
    return {k: float(v) for k, v in metric.compute().items()}


def test_binary_scores_by_hand():
    target = [[[1, 1, 1, 0], [0, 0, 0, 0]]]
    predicted = [[[1, 1, 0, 0], [1, 0, 0, 0]]]
    # foreground: tp 2, fp 1, fn 1; background: tp 4, fp 1, fn 1
    result = scores("binary", 2, predicted, target, ["background", "foreground"])
    expected = {
        "iou": 2 / 4,
        "dice": 4 / 6,
        "iou_macro": (2 / 4 + 4 / 6) / 2,
        "dice_macro": (4 / 6 + 8 / 10) / 2,
        "pixel_acc": 6 / 8,
        "iou_class/background": 4 / 6,
        "iou_class/foreground": 2 / 4,
    }
    assert result == pytest.approx(expected)


MULTICLASS_TARGET = [[[0, 0, 1, 1], [2, 2, 2, 0]]]
MULTICLASS_PREDICTED = [[[0, 1, 1, 1], [2, 2, 0, 0]]]
# class 0: tp 2, fp 1, fn 1; class 1: tp 2, fp 1, fn 0; class 2: tp 2, fp 0, fn 1; class 3: nowhere
MULTICLASS_EXPECTED = {
    "iou": (2 / 4 + 2 / 3 + 2 / 3) / 3,
    "dice": (4 / 6 + 4 / 5 + 4 / 5) / 3,
    "iou_macro": (2 / 4 + 2 / 3 + 2 / 3) / 3,
    "dice_macro": (4 / 6 + 4 / 5 + 4 / 5) / 3,
    "iou_micro": 6 / 10,
    "dice_micro": 12 / 16,
    "pixel_acc": 6 / 8,
    "iou_class/bg": 2 / 4,
    "iou_class/a": 2 / 3,
    "iou_class/b": 2 / 3,
}


def test_multiclass_scores_by_hand_leave_out_absent_classes():
    result = scores("multiclass", 4, MULTICLASS_PREDICTED, MULTICLASS_TARGET, ["bg", "a", "b", "c"])
    assert result == pytest.approx(MULTICLASS_EXPECTED)
    assert "iou_class/c" not in result


def test_multiclass_scores_leave_out_ignore_index_pixels():
    target = [[*MULTICLASS_TARGET[0], [255, 255, 255, 255]]]
    predicted = [[*MULTICLASS_PREDICTED[0], [3, 1, 0, 3]]]  # class 3 only where ignored
    result = scores("multiclass", 4, predicted, target, ["bg", "a", "b", "c"], ignore_index=255)
    assert result == pytest.approx(MULTICLASS_EXPECTED)


def test_scores_add_up_over_the_epochs_pixels():
    metric = SegmentationScores("multiclass", 4, ["bg", "a", "b", "c"])
    for row in range(2):  # one row per update: the counts, not the per-batch scores, are pooled
        metric.update(
            torch.tensor(MULTICLASS_PREDICTED)[:, row : row + 1],
            torch.tensor(MULTICLASS_TARGET)[:, row : row + 1],
        )
    assert {k: float(v) for k, v in metric.compute().items()} == pytest.approx(MULTICLASS_EXPECTED)


def test_multilabel_scores_by_hand():
    target = [[[[1, 1], [0, 0]], [[0, 0], [0, 0]], [[1, 0], [1, 0]]]]
    predicted = [[[[1, 0], [0, 0]], [[0, 0], [0, 0]], [[1, 1], [1, 0]]]]
    # plane 0: tp 1, fp 0, fn 1; plane 1: empty in both, left out; plane 2: tp 2, fp 1, fn 0
    result = scores("multilabel", 3, predicted, target, ["x", "y", "z"])
    expected = {
        "iou": (1 / 2 + 2 / 3) / 2,
        "dice": (2 / 3 + 4 / 5) / 2,
        "iou_macro": (1 / 2 + 2 / 3) / 2,
        "dice_macro": (2 / 3 + 4 / 5) / 2,
        "iou_micro": 3 / 5,
        "dice_micro": 6 / 8,
        "pixel_acc": 10 / 12,
        "iou_class/x": 1 / 2,
        "iou_class/z": 2 / 3,
    }
    assert result == pytest.approx(expected)
    target[0][2][0][1] = 255  # the one false positive pixel, now ignored
    ignored = scores("multilabel", 3, predicted, target, ["x", "y", "z"], ignore_index=255)
    assert ignored["iou_class/z"] == 1.0 and ignored["pixel_acc"] == pytest.approx(10 / 11)


def test_scores_keep_counting_after_a_reset_in_inference_mode():
    """`trainer.validate` resets the metrics under inference mode; the next `fit` validates under
    no_grad and must still be able to add to them."""
    metric = SegmentationScores("binary", 2)
    with torch.inference_mode():
        metric.update(torch.ones(1, 2, 2), torch.ones(1, 2, 2))
        metric.compute()
        metric.reset()
    with torch.no_grad():
        metric.update(torch.ones(1, 2, 2), torch.zeros(1, 2, 2))
    assert metric.fp.tolist() == [0, 4] and float(metric.compute()["pixel_acc"]) == 0.0


def test_binary_without_any_foreground_is_perfect():
    result = scores("binary", 2, [[[0, 0], [0, 0]]], [[[0, 0], [0, 0]]])
    assert result["iou"] == result["dice"] == result["pixel_acc"] == 1.0


@pytest.mark.parametrize(("threshold", "foreground"), [(0.5, 1), (0.7, 0)])
def test_binary_threshold_applies_to_probabilities(threshold, foreground):
    model = SegmentationModule(arch=ConstantProbability(0.6), threshold=threshold, log_images=0)
    images, masks = torch.zeros(4, 3, 8, 8), torch.ones(4, 8, 8, dtype=torch.uint8)
    assert torch.equal(model.predict_classes(model(images)), torch.full((4, 8, 8), foreground))
    result = trainer().validate(model, dataloaders=loader(images, masks), verbose=False)[0]
    assert result["val/iou"] == foreground and result["val/pixel_acc"] == foreground
    predicted = model.predict_step(
        {"image": images[:1], "path": ["a.png"], "size": torch.tensor([[8, 8]])}, 0
    )
    assert np.all(predicted["masks"][0] == foreground)


def test_multilabel_threshold_applies_to_each_plane():
    model = SegmentationModule(arch=ConstantProbability(0.6, planes=3), mode="multilabel", num_classes=3)
    logits = model(torch.zeros(1, 3, 4, 4))
    assert model.predict_classes(logits).shape == (1, 3, 4, 4)
    assert model.predict_classes(logits).all()
    model.hparams.threshold = 0.7
    assert not model.predict_classes(logits).any()


# ----------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def binary_run(tmp_path_factory) -> SimpleNamespace:
    """A small U-Net trained 3 epochs on 32 px shapes: its validation before and after, its TensorBoard
    folder and its checkpoint."""
    folder = tmp_path_factory.mktemp("binary")
    pl.seed_everything(0)
    data = datamodule(source=SyntheticShapes(160))
    model = small_model(
        loss={"bce": 0.5, "dice": 0.5},
        optimizer=optimizer(lr=0.003),
        log_images=4,
        class_names=data.class_names,
    )
    before = trainer().validate(model, data, verbose=False)[0]  # also: validate, then fit, works
    fit = trainer(max_epochs=3, logger=TensorBoardLogger(folder, name="", version=""))
    fit.fit(model, data)
    checkpoint = folder / "model.ckpt"
    fit.save_checkpoint(checkpoint)
    after = {k: float(v) for k, v in fit.callback_metrics.items()}
    return SimpleNamespace(model=model, before=before, after=after, folder=folder, checkpoint=checkpoint)


def test_binary_training_raises_iou(binary_run):
    before, after = binary_run.before, binary_run.after
    assert after["val/iou"] > 0.5
    assert after["val/iou"] > before["val/iou"] + 0.3
    assert after["val/loss"] < before["val/loss"] - 0.2
    assert after["val/iou_class/foreground"] == after["val/iou"]  # binary: the headline is the foreground


def test_tensorboard_gets_mask_images_and_per_class_scores(binary_run):
    run = events(binary_run.folder)
    assert len(run.Images("val/masks")) == 3  # once per epoch, not in the sanity check
    grid = run.Images("val/masks")[-1]
    assert grid.width >= 3 * 32 and grid.height >= 4 * 32  # 4 samples x (image, true, predicted)
    scalars = set(run.Tags()["scalars"])
    for tag in (
        "val/iou_class/background", "val/iou_class/foreground", "val/iou", "val/dice", "val/iou_macro",
        "val/pixel_acc", "train/iou", "train/loss_epoch", "train/loss_bce", "val/loss_dice",
    ):  # fmt: skip
        assert tag in scalars, tag
    ious = [e.value for e in run.Scalars("val/iou")]
    assert len(ious) == 3 and ious[-1] > 0.5
    foreground = [e.value for e in run.Scalars("val/iou_class/foreground")]
    assert foreground == pytest.approx(ious)


@pytest.fixture(scope="module")
def multiclass_run() -> SimpleNamespace:
    pl.seed_everything(0)
    data = datamodule(mode="multiclass", num_classes=3, source=SyntheticShapes(160))
    model = small_model(
        mode="multiclass", num_classes=3, class_names=data.class_names, optimizer=optimizer(lr=0.003)
    )
    before = trainer().validate(model, data, verbose=False)[0]
    fit = trainer(max_epochs=3)
    fit.fit(model, data)
    after = {k: float(v) for k, v in fit.callback_metrics.items()}
    return SimpleNamespace(model=model, data=data, before=before, after=after)


def test_multiclass_trains(multiclass_run):
    before, after = multiclass_run.before, multiclass_run.after
    assert multiclass_run.data.class_names == ["background", "circle", "square"]
    assert after["val/loss"] < before["val/loss"] / 2
    assert after["val/iou"] > before["val/iou"] + 0.2
    for name in ("background", "circle", "square"):
        assert f"val/iou_class/{name}" in after
    assert after["val/iou_class/background"] > 0.8


# ----------------------------------------------------------------------------- predict
def test_predict_multiclass_pngs_at_the_original_size(multiclass_run, tmp_path):
    truth = write_predict_folder(tmp_path / "images", count=6)
    data = datamodule(
        mode="multiclass", num_classes=3, source=SyntheticShapes(16), predict_root=str(tmp_path / "images")
    )
    out = tmp_path / "out"
    trainer(callbacks=[PredictionWriter(str(out))]).predict(
        multiclass_run.model, datamodule=data, return_predictions=False
    )
    files = sorted((out / "masks").glob("*"))
    assert [f.name for f in files] == [f"{name}.png" for name in sorted(truth)]
    shapes = []
    for file in files:
        mask = np.asarray(Image.open(file))
        assert mask.shape == (PREDICT_HEIGHT, PREDICT_WIDTH) and mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 1, 2}  # class ids
        shapes.append(iou(mask > 0, truth[file.stem] > 0))  # 3 epochs find the shapes, not yet their kinds
    assert np.mean(shapes) > 0.7
    assert not (out / "masks.csv").exists()


def test_predict_binary_pngs_and_rle_with_the_python_api(binary_run, tmp_path):
    truth = write_predict_folder(tmp_path / "images", count=6)
    model = SegmentationModule.load_from_checkpoint(
        binary_run.checkpoint, rle={"format": "carvana", "order": "C"}
    )
    data = datamodule(source=SyntheticShapes(16), predict_root=str(tmp_path / "images"))
    out = tmp_path / "out"
    trainer(callbacks=[PredictionWriter(str(out))]).predict(model, datamodule=data, return_predictions=False)
    with (out / "masks.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["id"] for row in rows) == sorted(truth)
    scores_ = []
    for row in rows:
        mask = np.asarray(Image.open(out / "masks" / f"{row['id']}.png"))
        assert mask.shape == (PREDICT_HEIGHT, PREDICT_WIDTH)
        assert set(np.unique(mask).tolist()) <= {0, 255}
        decoded = rle_decode(row["rle"], mask.shape, "carvana", "C")
        assert np.array_equal(decoded * 255, mask)
        scores_.append(iou(mask > 0, truth[row["id"]] > 0))
    assert np.mean(scores_) > 0.5


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_mask_sink_writes_each_mode(tmp_path):
    mask = np.array([[0, 1, 1, 0], [0, 2, 2, 0], [0, 0, 0, 0]], dtype=np.uint8)
    binary = MaskSink(tmp_path / "binary", "", "binary", ["background", "foreground"], "siim", "C")
    binary.write({"path": ["x/a.png", "y/a.png"], "masks": [mask > 0, np.zeros_like(mask)]})
    assert binary.close() == tmp_path / "binary/masks"
    assert sorted(p.name for p in (tmp_path / "binary").rglob("*")) == [
        "a.png",
        "masks",
        "masks.csv",
        "y_a.png",
    ]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "binary/masks/a.png")), (mask > 0) * 255)
    rows = read_csv(tmp_path / "binary/masks.csv")
    assert [r["id"] for r in rows] == ["a", "y_a"]  # a stem seen before gets its folder's name
    assert np.array_equal(rle_decode(rows[0]["rle"], mask.shape, "siim", "C"), mask > 0)
    assert rows[1]["rle"].strip() == "-1"  # SIIM's empty mask

    multiclass = MaskSink(tmp_path / "multi", ".rank1", "multiclass", ["bg", "a", "b", "c"], "carvana")
    multiclass.write({"path": ["m.png"], "masks": [mask]})
    multiclass.close()
    assert np.array_equal(np.asarray(Image.open(tmp_path / "multi/masks/m.png")), mask)  # class ids
    rows = read_csv(tmp_path / "multi/masks.rank1.csv")
    assert [(r["id"], r["class"]) for r in rows] == [("m", "a"), ("m", "b"), ("m", "c")]  # no background
    for row, class_id in zip(rows, (1, 2, 3)):
        assert np.array_equal(rle_decode(row["rle"], mask.shape, "carvana", "F"), mask == class_id)
    assert rows[2]["rle"] == ""

    multilabel = MaskSink(tmp_path / "labels", "", "multilabel", ["a", "b"])
    planes = np.stack([mask == 1, mask > 0]).astype(np.uint8)
    multilabel.write({"path": ["l.png"], "masks": [planes]})
    multilabel.close()
    assert sorted(p.name for p in (tmp_path / "labels/masks").iterdir()) == ["l_a.png", "l_b.png"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "labels/masks/l_b.png")), planes[1] * 255)
    assert not (tmp_path / "labels/masks.csv").exists()


# ----------------------------------------------------------------------------- checkpoints and weights
def test_checkpoint_round_trip_gives_identical_outputs(binary_run):
    loaded = SegmentationModule.load_from_checkpoint(binary_run.checkpoint, map_location="cpu")
    assert dict(loaded.hparams) == dict(binary_run.model.hparams)
    images = torch.randn(2, 3, 50, 70)
    binary_run.model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(images), binary_run.model(images))


OTHER_ARCHITECTURES = [
    ({"encoder": "resnet34"}, "encoder='resnet18' (this model: 'resnet34')"),
    ({"arch": "FPN", "arch_args": None}, "arch='Unet' (this model: 'FPN')"),
]


@pytest.mark.parametrize(("override", "difference"), OTHER_ARCHITECTURES)
def test_trainer_refuses_a_checkpoint_of_another_architecture(binary_run, override, difference):
    other = small_model(**override)
    with pytest.raises(InputError) as error:
        trainer().validate(other, datamodule(), ckpt_path=binary_run.checkpoint, verbose=False)
    message = str(error.value)
    assert f"checkpoint {binary_run.checkpoint} trained with {difference} does not fit this model" in message


@pytest.mark.parametrize(("override", "difference"), OTHER_ARCHITECTURES)
def test_load_from_checkpoint_refuses_another_architecture(binary_run, override, difference):
    with pytest.raises(InputError, match="does not fit this model"):
        SegmentationModule.load_from_checkpoint(binary_run.checkpoint, **override)


@pytest.mark.parametrize(("override", "difference"), OTHER_ARCHITECTURES)
def test_load_from_checkpoint_names_the_difference(binary_run, override, difference):
    with pytest.raises(InputError, match=re.escape(difference)):
        SegmentationModule.load_from_checkpoint(binary_run.checkpoint, **override)


def test_encoder_weights_from_a_classifier_checkpoint(tmp_path):
    torch.manual_seed(0)
    classifier = ClassifierModule(backbone="resnet18", num_classes=3)
    path = tmp_path / "classifier.ckpt"
    torch.save({"state_dict": classifier.state_dict()}, path)
    model = small_model(weights=str(path))
    encoder, backbone = model.model.encoder, classifier.backbone
    assert torch.equal(encoder.conv1.weight, backbone.conv1.weight)
    assert torch.equal(encoder.layer2[1].bn2.weight, backbone.layer2[1].bn2.weight)
    assert not torch.equal(small_model().model.encoder.conv1.weight, backbone.conv1.weight)

    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": ClassifierModule(backbone="cifar_lenet", num_classes=3).state_dict()}, other)
    with pytest.raises(InputError, match="does not fit this model"):
        small_model(weights=str(other))


# ----------------------------------------------------------------------------- CLI
# The quickstart's data at 32 px (every command on its checkpoint uses the same), its network with the
# decoder of SMALL_UNET: a quarter of the pixels and of the decoder's width, 3 epochs of 160 shapes
# still reach an IoU of 0.87-0.95 (seeds 0-3) where the tests ask for 0.5.
CLI_DATA = ["--data.init_args.image_size", "32", "--data.init_args.source.init_args.samples", "160"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """The segmentation quickstart, shortened to 3 epochs of 160 shapes of 32 px with a narrower
    decoder, predicting RLE too."""
    run = tmp_path_factory.mktemp("quickstart-segmentation")
    run_cli(
        "fit", "--config", QUICKSTART, "--trainer.max_epochs", "3", *CLI_DATA,
        "--model.init_args.arch_args.decoder_channels", "[32, 16, 8]", "--model.init_args.rle", "carvana",
        "--trainer.default_root_dir", run, "--checkpoint.dirpath", run / "checkpoints", *QUIET,
    )  # fmt: skip
    return run


def test_cli_fit_trains_and_checkpoints(cli_run: Path):
    ious = [e.value for e in events(cli_run).Scalars("val/iou")]
    assert len(ious) == 3 and ious[-1] > 0.5
    state = torch.load(cli_run / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 2
    hparams = state["hyper_parameters"]  # linked from the data module
    assert hparams["mode"] == "binary" and hparams["class_names"] == ["background", "foreground"]
    assert hparams["loss"] == {"bce": 0.5, "dice": 0.5} and hparams["rle"] == "carvana"


@pytest.mark.parametrize("subcommand", ["validate", "test"])
def test_cli_validate_and_test(cli_run: Path, tmp_path: Path, subcommand: str):
    run_cli(subcommand, "--config", QUICKSTART, "--ckpt_path", cli_run / "checkpoints/last.ckpt", *CLI_DATA,
            "--trainer.default_root_dir", tmp_path, *QUIET)  # fmt: skip
    prefix = "val" if subcommand == "validate" else "test"
    run = events(tmp_path)
    assert run.Scalars(f"{prefix}/iou")[-1].value > 0.5
    assert f"{prefix}/iou_class/foreground" in run.Tags()["scalars"]


def cli_predict(checkpoint: Path, images: Path, out: Path, *more: str) -> None:
    run_cli(
        "predict", "--config", QUICKSTART, "--ckpt_path", checkpoint, "--data.init_args.predict_root", images,
        "--prediction_writer.output_dir", out, "--trainer.default_root_dir", out.parent, *CLI_DATA, *QUIET, *more,
    )  # fmt: skip


def test_cli_predict_writes_masks_at_the_original_size_and_rle(cli_run: Path, tmp_path: Path):
    truth = write_predict_folder(tmp_path / "images", count=5)
    out = tmp_path / "predictions"
    cli_predict(cli_run / "checkpoints/last.ckpt", tmp_path / "images", out)
    with (out / "masks.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "rle"]
    assert sorted(row["id"] for row in rows) == sorted(truth)
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{name}.png" for name in sorted(truth)]
    scores_ = []
    for row in rows:
        mask = np.asarray(Image.open(out / "masks" / f"{row['id']}.png"))
        assert mask.shape == (PREDICT_HEIGHT, PREDICT_WIDTH)  # not the model's 32x32
        assert set(np.unique(mask).tolist()) <= {0, 255}
        assert np.array_equal(rle_decode(row["rle"], mask.shape, "carvana", "F") * 255, mask)
        scores_.append(iou(mask > 0, truth[row["id"]] > 0))
    assert np.mean(scores_) > 0.5


# ----------------------------------------------------------------------------- masks that do not fit
@pytest.mark.parametrize(
    ("mode", "num_classes", "mask", "message"),
    [
        (
            "multiclass",
            3,
            torch.tensor([0, 1, 2, 5]).repeat(4, 32, 8),
            "mask values [5] are not classes of mode multiclass (ids 0..2) in a batch of user/0.png, user/1.png",
        ),
        ("binary", 2, torch.full((4, 32, 32), 255), "mask values [255] are not classes of mode binary"),
        ("binary", 2, torch.zeros(4, 16, 16), "masks of shape [2, 16, 16] do not fit mode binary"),
        ("binary", 2, torch.zeros(4, 1, 32, 32), "masks of shape [2, 1, 32, 32] do not fit mode binary"),
        ("multilabel", 3, torch.zeros(4, 2, 32, 32), "(expected [2, 3, 32, 32])"),
        ("multilabel", 3, torch.full((4, 3, 32, 32), 2), "are not classes of mode multilabel (ids 0..1)"),
    ],
)
@pytest.mark.parametrize("stage", ["fit", "validate"])
def test_masks_that_do_not_fit_the_model_are_input_errors(mode, num_classes, mask, message, stage):
    model = SegmentationModule(**TINY_UNET, mode=mode, num_classes=num_classes, log_images=0)
    data = loader(torch.randn(4, 3, 32, 32), mask.to(torch.uint8))
    with pytest.raises(InputError, match=re.escape(message)):
        if stage == "fit":
            trainer(fast_dev_run=True).fit(model, data)
        else:
            trainer().validate(model, data, verbose=False)


def test_ignore_index_values_are_accepted_in_masks():
    model = SegmentationModule(**TINY_UNET, mode="binary", ignore_index=255, log_images=0)
    masks = torch.randint(0, 2, (4, 32, 32), dtype=torch.uint8)
    masks[:, :4] = 255
    result = trainer().validate(model, loader(torch.randn(4, 3, 32, 32), masks), verbose=False)[0]
    assert math.isfinite(result["val/loss"])


def test_cli_predict_time_model_arguments_win_over_the_checkpoint(cli_run: Path, tmp_path: Path):
    write_predict_folder(tmp_path / "images", count=2)
    out = tmp_path / "predictions"
    cli_predict(
        cli_run / "checkpoints/last.ckpt", tmp_path / "images", out, "--model.init_args.rle.order", "C"
    )
    with (out / "masks.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows
    for row in rows:
        mask = np.asarray(Image.open(out / "masks" / f"{row['id']}.png"))
        assert np.array_equal(rle_decode(row["rle"], mask.shape, "carvana", "C") * 255, mask)


def test_checkpoint_does_not_need_the_weights_file_it_started_from(tmp_path):
    """A run started from `weights:` keeps that path in its hyperparameters; the checkpoint holds
    every weight, so loading it (Python API and CLI --ckpt_path) must not read the file again."""
    start = tmp_path / "classifier.ckpt"
    torch.save({"state_dict": ClassifierModule(backbone="resnet18", num_classes=3).state_dict()}, start)
    run = tmp_path / "run"
    run_cli(
        "fit", "--config", "configs/quickstart/segmentation.yaml",
        "--model.init_args.weights", start, "--model.init_args.log_images", "0",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
        "--trainer.default_root_dir", run, "--checkpoint.dirpath", run / "checkpoints",
        "--trainer.enable_progress_bar", "false", "--data.init_args.source.init_args.samples", "16",
        "--data.init_args.image_size", "32",
    )  # fmt: skip
    start.unlink()
    checkpoint = run / "checkpoints/last.ckpt"
    model = SegmentationModule.load_from_checkpoint(checkpoint)
    assert model.hparams.weights is None
    out = tmp_path / "predictions"
    run_cli(
        "predict", "--config", "configs/quickstart/segmentation.yaml", "--ckpt_path", checkpoint,
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--data.init_args.source.init_args.samples", "16", "--data.init_args.image_size", "32",
        "--prediction_writer.output_dir", out,
    )  # fmt: skip
    assert len(list((out / "masks").glob("*.png"))) == 4
