"""BatchMixing: MixUp / CutMix targets are convex combinations of two labels that sum to one, images
are the matching mix, only training batches are mixed, the classifier trains them with its soft
cross entropy, runs repeat, and bad settings fail in one sentence naming the argument."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch import nn

from tests.conftest import cpu_trainer, run_cli
from vision_lightning import BatchMixing, ClassifierModule, ImageClassificationDataModule, SegmentationModule
from vision_lightning.data.classification_sources import SyntheticShapes
from vision_lightning.utils.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
CLASSES = 5


@pytest.fixture(autouse=True)
def _restore_seed_env(monkeypatch):
    for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS"):
        monkeypatch.delenv(name, raising=False)


def _batch(n: int = CLASSES, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and labels whose neighbours (the pairs torchvision mixes) differ."""
    images = torch.rand(n, 3, size, size)
    labels = torch.tensor([i % CLASSES for i in range(n)])
    return images, labels


def _one_hot(labels: torch.Tensor) -> torch.Tensor:
    return nn.functional.one_hot(labels, CLASSES).float()


def _shares(rows: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The share of each sample's own label in its row, checking that the rest is its partner's (the
    sample before it, torchvision pairs by rolling the batch by one)."""
    lam = rows[torch.arange(len(rows)), labels]
    expected = lam[:, None] * _one_hot(labels) + (1 - lam[:, None]) * _one_hot(labels.roll(1))
    torch.testing.assert_close(rows, expected)
    torch.testing.assert_close(rows.sum(dim=1), torch.ones(len(rows)))
    assert torch.all((lam >= 0) & (lam <= 1))
    return lam


def test_mixup_mixes_images_and_labels_with_one_weight():
    torch.manual_seed(0)
    images, labels = _batch()
    mixing = BatchMixing(mixup_alpha=1.0, cutmix_alpha=0.0)
    mixing.build(CLASSES)
    mixed, rows = mixing.mix(images.clone(), labels)
    lam = _shares(rows, labels)
    assert torch.allclose(lam, lam[0]) and 0 < lam[0] < 1  # one weight per batch
    torch.testing.assert_close(mixed, lam[0] * images + (1 - lam[0]) * images.roll(1, 0))


def test_cutmix_pastes_a_box_whose_area_is_the_label_share():
    images, labels = _batch(size=16)
    mixing = BatchMixing(mixup_alpha=0.0, cutmix_alpha=1.0)
    mixing.build(CLASSES)
    boxes = 0
    for seed in range(6):
        torch.manual_seed(seed)
        mixed, rows = mixing.mix(images.clone(), labels)
        lam = _shares(rows, labels)
        from_partner = (mixed == images.roll(1, 0)).all(dim=1)  # (N, H, W): pixels taken from b
        from_self = (mixed == images).all(dim=1)
        assert torch.all(from_partner ^ from_self)  # every pixel is a's or b's (random images differ)
        area = from_partner[0]
        assert torch.equal(from_partner, area.expand_as(from_partner))  # one box for the batch
        ys, xs = torch.nonzero(area, as_tuple=True)
        if len(ys):
            boxes += 1
            box = torch.zeros_like(area)
            box[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
            assert torch.equal(area, box)  # a rectangle
        torch.testing.assert_close(lam, torch.full_like(lam, 1 - area.float().mean().item()))
    assert boxes >= 3


def test_soft_label_rows_are_mixed_too():
    torch.manual_seed(1)
    images, _ = _batch()
    soft = torch.softmax(torch.randn(len(images), CLASSES), dim=1)
    mixing = BatchMixing(mixup_alpha=1.0, cutmix_alpha=0.0)
    mixing.build(CLASSES)
    mixed, rows = mixing.mix(images.clone(), soft)
    lam = (mixed - images.roll(1, 0))[0].flatten() / (images - images.roll(1, 0))[0].flatten()
    lam = lam.median()
    torch.testing.assert_close(rows, lam * soft + (1 - lam) * soft.roll(1, 0))
    torch.testing.assert_close(rows.sum(dim=1), torch.ones(len(rows)))


def test_both_choose_cutmix_by_switch_prob():
    images, labels = _batch(size=16)
    mixing = BatchMixing(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=1.0)
    mixing.build(CLASSES)
    torch.manual_seed(0)
    mixed, _ = mixing.mix(images.clone(), labels)
    assert torch.all((mixed == images) | (mixed == images.roll(1, 0)))  # CutMix: no blended pixel


# ----------------------------------------------------------------------------- in training
class Recorder(pl.Callback):
    """What training_step and validation_step get (it runs after BatchMixing)."""

    def __init__(self) -> None:
        self.train: list[dict] = []
        self.val: list[dict] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append({"epoch": trainer.current_epoch, **{k: v for k, v in batch.items() if k != "path"}})

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.val.append(dict(batch))


def _data() -> ImageClassificationDataModule:
    return ImageClassificationDataModule(SyntheticShapes(48, num_classes=4), image_size=16, batch_size=8)


def _model(**kwargs) -> ClassifierModule:
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    return ClassifierModule(backbone=backbone, num_classes=4, log_images=0, **kwargs)


def test_only_training_batches_are_mixed_and_train_metrics_skip_them():
    recorder = Recorder()
    trainer = cpu_trainer(callbacks=[BatchMixing(stop_epoch=1), recorder], max_epochs=2)
    trainer.fit(_model(), _data())
    first = [b for b in recorder.train if b["epoch"] == 0]
    second = [b for b in recorder.train if b["epoch"] == 1]
    assert first and all(b.get("mixed") and b["label"].shape == (len(b["image"]), 4) for b in first)
    assert second and not any(b.get("mixed") for b in second)  # stop_epoch 1: epoch 1 is clean
    assert second[0]["label"].ndim == 1
    assert recorder.val and all("mixed" not in b and b["label"].ndim == 1 for b in recorder.val)
    assert "train/acc" in trainer.callback_metrics  # epoch 1, unmixed
    always = cpu_trainer(callbacks=[BatchMixing()], max_epochs=1)
    always.fit(_model(), _data())
    assert "train/acc" not in always.callback_metrics and "train/loss_epoch" in always.callback_metrics


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # a step called by hand
def test_mixed_rows_train_with_soft_cross_entropy_and_label_smoothing():
    model = _model(label_smoothing=0.1)
    images, labels = torch.rand(6, 3, 16, 16), torch.tensor([0, 1, 2, 3, 0, 1])
    mixing = BatchMixing(mixup_alpha=1.0, cutmix_alpha=0.0)
    mixing.build(4)
    torch.manual_seed(0)
    mixed, rows = mixing.mix(images, labels)
    model.train()
    loss = model.training_step({"image": mixed, "label": rows, "mixed": True}, 0)
    smoothed = rows * 0.9 + 0.1 / 4
    expected = -(smoothed * model(mixed).log_softmax(dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(loss, expected)


def _fit_weights(mixing: bool, seed: int = 5) -> dict[str, torch.Tensor]:
    pl.seed_everything(seed, verbose=False)
    callbacks = [BatchMixing(mixup_alpha=0.4, cutmix_alpha=1.0, p=0.7)] if mixing else []
    model = _model()
    cpu_trainer(callbacks=callbacks, max_epochs=2, num_sanity_val_steps=0).fit(model, _data())
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_same_seed_same_weights():
    first, second, plain = _fit_weights(True), _fit_weights(True), _fit_weights(False)
    for name, value in first.items():
        torch.testing.assert_close(value, second[name], rtol=0, atol=0, msg=name)
    assert any(not torch.equal(value, plain[name]) for name, value in first.items())


# ----------------------------------------------------------------------------- bad settings
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mixup_alpha": 0, "cutmix_alpha": 0}, "mixup_alpha or cutmix_alpha"),
        ({"mixup_alpha": -1}, "mixup_alpha"),
        ({"cutmix_alpha": -0.5}, "cutmix_alpha"),
        ({"p": 1.5}, "BatchMixing p"),
        ({"switch_prob": -0.1}, "switch_prob"),
        ({"stop_epoch": -1}, "stop_epoch"),
    ],
)
def test_bad_settings_name_the_argument(kwargs, message):
    with pytest.raises(InputError, match=message):
        BatchMixing(**kwargs)


def test_multilabel_and_segmentation_tasks_are_refused():
    trainer = cpu_trainer(callbacks=[BatchMixing()])
    with pytest.raises(InputError, match="label_mode multiclass or soft, got 'multilabel'"):
        BatchMixing().setup(trainer, _model(label_mode="multilabel"), "fit")
    with pytest.raises(InputError, match="not a classification task"):
        BatchMixing().setup(trainer, SegmentationModule(arch="Unet", encoder="resnet18"), "fit")


def test_tuple_batches_are_refused():
    mixing = BatchMixing()
    mixing.build(4)
    trainer = cpu_trainer()
    with pytest.raises(InputError, match="dicts with 'image' and 'label'"):
        mixing.on_train_batch_start(trainer, _model(), (torch.rand(2, 3, 8, 8), torch.tensor([0, 1])), 0)


def test_from_yaml_through_the_cli(tmp_path):
    config = {
        "trainer": {
            "callbacks": [
                {"class_path": "vision_lightning.BatchMixing", "init_args": {"mixup_alpha": 0.2, "p": 1.0}}
            ]
        }
    }
    (tmp_path / "mixing.yaml").write_text(yaml.safe_dump(config))
    run_cli(
        "fit", "--config", ROOT / "configs/quickstart/classification.yaml", "--config", tmp_path / "mixing.yaml",
        "--trainer.fast_dev_run", "true", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", tmp_path / "run",
        "--data.init_args.source.init_args.samples", "32", "--data.init_args.batch_size", "4",
    )  # fmt: skip
