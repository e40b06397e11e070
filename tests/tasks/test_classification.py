"""ClassifierModule: losses and metrics of the four label modes, training on synthetic shapes,
freezing, checkpoints, prediction files, optimizers and schedules, and module backbones.

Every fit runs on CPU on a few batches of 32x32 synthetic shapes, so each test takes seconds.
"""

from __future__ import annotations

import csv
import functools
import math

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
import torchvision
from fsspec.implementations.local import LocalFileOpener
from torch import nn
from torch.optim.lr_scheduler import ExponentialLR, ReduceLROnPlateau, StepLR

from tests.conftest import cpu_trainer as trainer
from tests.conftest import optimizer
from vision_lightning.callbacks import PredictionWriter
from vision_lightning.data.classification import ImageClassificationDataModule
from vision_lightning.data.classification_sources import SyntheticShapes
from vision_lightning.optim import OneCycleLR, WarmupCosineLR
from vision_lightning.tasks import ClassifierModule
from vision_lightning.utils.errors import InputError


# ----------------------------------------------------------------------------- helpers
def datamodule(**kwargs) -> ImageClassificationDataModule:
    defaults = {"image_size": 32, "batch_size": 16}
    source = SyntheticShapes(kwargs.pop("samples", 64), num_classes=kwargs.pop("num_classes", 4))
    return ImageClassificationDataModule(source, **{**defaults, **kwargs})


def clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class Recorder(pl.Callback):
    """What the model looks like at the start of every training batch."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.modes: list[tuple[bool, bool]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append([group["lr"] for group in trainer.optimizers[0].param_groups])
        self.modes.append((pl_module.backbone.training, pl_module.head.training))


# ----------------------------------------------------------------------------- label modes
def _multiclass_loss(logits, target, smoothing):
    k = logits.shape[1]
    smoothed = (1 - smoothing) * F.one_hot(target, k).float() + smoothing / k
    return -(smoothed * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _binary_loss(logits, target, smoothing):
    z, y = logits[:, 0], target.float()
    return -(y * F.logsigmoid(z) + (1 - y) * F.logsigmoid(-z)).mean()


def _multilabel_loss(logits, target, smoothing):
    return -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits)).mean()


def _soft_loss(logits, target, smoothing):
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


LABEL_MODES = {
    # mode: (num_classes, targets, hand-made loss, metric names, output width)
    "multiclass": (6, torch.tensor([0, 5, 2, 3]), _multiclass_loss, {"acc", "f1_macro", "top5_acc"}, 6),
    "binary": (2, torch.tensor([0, 1, 1, 0]), _binary_loss, {"acc", "auroc", "f1"}, 1),
    "multilabel": (
        3,
        torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]),
        _multilabel_loss,
        {"acc", "f1_macro", "auroc"},
        3,
    ),
    "soft": (
        4,
        torch.tensor(
            [[0.7, 0.1, 0.1, 0.1], [0.0, 1.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.2, 0.8]]
        ),
        _soft_loss,
        {"acc", "f1_macro", "auroc"},
        4,
    ),
}


@pytest.mark.parametrize("mode", LABEL_MODES)
def test_loss_metrics_and_probabilities_of_each_label_mode(mode):
    num_classes, target, hand_loss, metric_names, width = LABEL_MODES[mode]
    smoothing = 0.1 if mode == "multiclass" else 0.0
    torch.manual_seed(0)
    model = ClassifierModule(
        "mnist_perceptron", num_classes=num_classes, label_mode=mode, label_smoothing=smoothing
    )
    images = torch.randn(4, 1, 28, 28)
    logits = model(images)
    assert logits.shape == (4, width)
    loss = model._loss(logits, target)
    assert loss.ndim == 0
    torch.testing.assert_close(loss, hand_loss(logits, target, smoothing))
    loss.backward()  # a real loss of the parameters
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0

    for stage in ("train", "val", "test"):
        names = {name for name in metric_names if stage != "train" or not name.startswith("top")}
        assert set(getattr(model, f"{stage}_metrics").keys()) == {f"{stage}/{name}" for name in names}

    probs = model.probabilities(logits.detach())
    expected_width = 2 if mode == "binary" else num_classes
    assert probs.shape == (4, expected_width)
    assert ((probs >= 0) & (probs <= 1)).all()
    if mode == "multilabel":
        torch.testing.assert_close(probs, torch.sigmoid(logits.detach()))
    else:
        torch.testing.assert_close(probs.sum(dim=1), torch.ones(4))
    if mode == "binary":
        torch.testing.assert_close(probs[:, 1], torch.sigmoid(logits.detach()[:, 0]))


def test_multiclass_smoothing_changes_the_loss():
    torch.manual_seed(0)
    model = ClassifierModule("mnist_perceptron", num_classes=4)
    logits = model(torch.randn(3, 1, 28, 28))
    target = torch.tensor([0, 1, 3])
    torch.testing.assert_close(model._loss(logits, target), F.cross_entropy(logits, target))
    smoothed = ClassifierModule("mnist_perceptron", num_classes=4, label_smoothing=0.2)
    assert not torch.allclose(smoothed._loss(logits, target), model._loss(logits, target))


@pytest.mark.parametrize(
    ("mode", "num_classes", "metric_names"),
    [
        ("multiclass", 4, {"acc", "f1_macro"}),  # top-5 only with more than 5 classes
        ("multiclass", 5, {"acc", "f1_macro"}),
        ("soft", 4, {"acc", "f1_macro", "auroc"}),
        ("soft", 6, {"acc", "f1_macro", "auroc", "top5_acc"}),
        ("multilabel", 8, {"acc", "f1_macro", "auroc"}),
    ],
)
def test_metric_names(mode, num_classes, metric_names):
    model = ClassifierModule("mnist_perceptron", num_classes=num_classes, label_mode=mode)
    assert set(model.val_metrics.keys()) == {f"val/{name}" for name in metric_names}


def test_bad_arguments():
    with pytest.raises(InputError, match="label_mode must be"):
        ClassifierModule("lenet5", label_mode="regression")
    with pytest.raises(InputError, match="num_classes must be at least 2"):
        ClassifierModule("lenet5", num_classes=1)
    with pytest.raises(InputError, match="class_names has 2 names but num_classes is 3"):
        ClassifierModule("lenet5", num_classes=3, class_names=["a", "b"])


def test_labels_outside_num_classes():
    model = ClassifierModule("lenet5", num_classes=4)
    batch = {"image": torch.randn(3, 3, 32, 32), "label": torch.tensor([0, 7, 2])}
    with pytest.raises(InputError, match=r"0\.\.3 \(num_classes=4\), got \[7\]$"):
        model.training_step(batch, 0)
    batch["label"] = torch.tensor([0, -1, 2])
    with pytest.raises(InputError, match=r"num_classes=4\), got \[-1\]$"):
        model.training_step(batch, 0)


def test_label_rows_of_the_wrong_width():
    model = ClassifierModule("lenet5", num_classes=4, label_mode="soft")
    batch = {"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])}
    with pytest.raises(InputError, match=r"label_mode soft needs label rows of 4 values, got shape \[2, 3\]"):
        model.training_step(batch, 0)


# ----------------------------------------------------------------------------- training
def test_short_fit_learns_synthetic_shapes():
    pl.seed_everything(0, verbose=False)
    dm = datamodule(samples=960, batch_size=32)
    model = ClassifierModule(
        "cifar_lenet", num_classes=4, class_names=dm.class_names, optimizer=optimizer(lr=3e-3)
    )
    fit = trainer(max_epochs=4, num_sanity_val_steps=0)
    fit.fit(model, dm)
    metrics = fit.callback_metrics
    assert set(metrics) >= {"train/loss_epoch", "train/acc", "val/loss", "val/acc", "val/f1_macro"}
    assert metrics["val/acc"] > 0.6  # chance is 0.25
    assert metrics["val/loss"] < math.log(4)
    result = trainer().validate(model, dm, verbose=False)[0]
    torch.testing.assert_close(torch.tensor(result["val/acc"]), metrics["val/acc"].cpu())
    test = trainer().test(model, dm, verbose=False)[0]
    assert test["test/acc"] > 0.6


def test_train_metrics_cover_every_training_image_of_the_epoch():
    """They are updated in bulk at the epoch's end (vision_lightning/metrics/buffered.py) and from
    logits: the figures are those of updating the metrics with every batch's probabilities."""

    class Outputs(pl.Callback):  # the network before each step's update: the step's own logits
        def __init__(self) -> None:
            self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            with torch.no_grad():
                self.batches.append((pl_module(batch["image"]), batch["label"]))

    pl.seed_everything(0, verbose=False)
    dm = datamodule(samples=160, batch_size=16, num_classes=6, val_split=0.1)
    model = ClassifierModule("lenet5", num_classes=6, optimizer=optimizer(lr=3e-3))
    outputs = Outputs()
    fit = trainer(max_epochs=1, num_sanity_val_steps=0, limit_val_batches=0, callbacks=[outputs])
    fit.fit(model, dm)
    reference = ClassifierModule("lenet5", num_classes=6).train_metrics
    for logits, target in outputs.batches:
        reference.update(logits.softmax(dim=1), target)
    expected = reference.compute()
    assert set(expected) == {"train/acc", "train/f1_macro"}  # top-5 only in validation and test
    for name, value in expected.items():
        torch.testing.assert_close(fit.callback_metrics[name], value, msg=name)


@pytest.mark.filterwarnings("ignore:.*module\\(s\\) in eval mode")  # the frozen backbone, on purpose
def test_freeze_backbone_trains_the_head_only():
    pl.seed_everything(0, verbose=False)
    model = ClassifierModule("lenet5_bn", num_classes=4, freeze_backbone=True, optimizer=optimizer(lr=1e-2))
    assert model.backbone_frozen
    assert not model.backbone.training
    backbone_before, head_before = clone_state(model.backbone), clone_state(model.head)
    assert any("running_mean" in k for k in backbone_before)
    recorder = Recorder()
    trainer(limit_train_batches=2, limit_val_batches=1, callbacks=[recorder]).fit(model, datamodule())
    assert recorder.modes == [(False, True), (False, True)]  # BatchNorm of the backbone stays in eval mode
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, backbone_before[key]), key  # weights and running statistics
    assert not torch.equal(model.head.weight, head_before["weight"])
    assert not torch.equal(model.head.bias, head_before["bias"])
    model.train()
    assert not model.backbone.training and model.head.training

    model.unfreeze_backbone()
    assert not model.backbone_frozen and model.backbone.training
    trainer(limit_train_batches=1, limit_val_batches=0).fit(model, datamodule())
    assert not torch.equal(model.backbone[3].running_mean, backbone_before["3.running_mean"])


def test_without_freezing_the_backbone_learns():
    pl.seed_everything(0, verbose=False)
    model = ClassifierModule("lenet5_bn", num_classes=4, optimizer=optimizer(lr=1e-2))
    before = clone_state(model.backbone)
    recorder = Recorder()
    trainer(limit_train_batches=1, limit_val_batches=0, callbacks=[recorder]).fit(model, datamodule())
    assert recorder.modes == [(True, True)]
    assert not torch.equal(model.backbone[0].weight, before["0.weight"])
    assert not torch.equal(model.backbone[3].running_mean, before["3.running_mean"])


# ----------------------------------------------------------------------------- checkpoints
def _fitted(
    backbone: str, dm: ImageClassificationDataModule, **kwargs
) -> tuple[ClassifierModule, pl.Trainer]:
    pl.seed_everything(0, verbose=False)
    model = ClassifierModule(backbone, num_classes=dm.num_classes, class_names=dm.class_names, **kwargs)
    fit = trainer(limit_train_batches=2, limit_val_batches=1)
    fit.fit(model, dm)
    return model, fit


def test_checkpoint_round_trip_needs_no_arguments(tmp_path):
    dm = datamodule()
    model, fit = _fitted(
        "lenet5_bn", dm, head={"kind": "mlp", "hidden": 16}, optimizer=optimizer("SGD", lr=0.05)
    )
    path = tmp_path / "m.ckpt"
    fit.save_checkpoint(path)
    loaded = ClassifierModule.load_from_checkpoint(path)
    assert loaded.hparams == model.hparams
    assert loaded.class_names == dm.class_names
    images = torch.randn(5, 3, 32, 32)
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_checkpoint_backbone_as_weights(tmp_path):
    """A checkpoint of this project gives its backbone to a new model (`weights:`)."""
    dm = datamodule()
    model, fit = _fitted("lenet5", dm)
    path = tmp_path / "m.ckpt"
    fit.save_checkpoint(path)
    transfer = ClassifierModule("lenet5", num_classes=10, weights=str(path))
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(transfer.backbone.state_dict()[key], value), key
    assert transfer.head.out_features == 10


def test_failed_checkpoint_write_leaves_the_old_file(tmp_path, monkeypatch):
    dm = datamodule()
    model, fit = _fitted("lenet5", dm)
    path = tmp_path / "m.ckpt"
    fit.save_checkpoint(path)
    good = path.read_bytes()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.eval()(images)
        for p in model.parameters():
            p.add_(1.0)  # the second checkpoint would differ

    real_write = LocalFileOpener.write
    writes = []

    def write_half_then_fail(self, data):
        writes.append(len(data))
        real_write(self, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(LocalFileOpener, "write", write_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        fit.save_checkpoint(path)
    monkeypatch.undo()
    assert writes, "the checkpoint write was not interrupted"
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ckpt"]
    loaded = ClassifierModule.load_from_checkpoint(path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(images), expected)


def test_checkpoint_of_another_architecture(tmp_path):
    dm = datamodule()
    _, fit = _fitted("lenet5", dm)
    path = tmp_path / "lenet5.ckpt"
    fit.save_checkpoint(path)

    other = ClassifierModule("cifar_lenet", num_classes=4, class_names=dm.class_names)
    with pytest.raises(InputError) as info:
        other.on_load_checkpoint(torch.load(path, weights_only=False))
    message = str(info.value)
    assert "\n" not in message
    assert "another architecture" in message
    assert "backbone='lenet5'" in message and "'cifar_lenet'" in message

    with pytest.raises(InputError, match=r"backbone='lenet5'.*another architecture") as info:
        trainer().validate(other, dm, ckpt_path=path, verbose=False)
    assert f"checkpoint {path} trained with" in str(info.value)  # the Trainer names the file
    with pytest.raises(InputError, match="another architecture"):
        ClassifierModule.load_from_checkpoint(path, backbone="cifar_lenet")


# ----------------------------------------------------------------------------- predict
@pytest.mark.parametrize("mode", ["multiclass", "binary"])
def test_predictions_csv(tmp_path, mode):
    dm = datamodule(label_mode=mode, num_classes=4 if mode == "multiclass" else 2)
    pl.seed_everything(0, verbose=False)
    model = ClassifierModule(
        "lenet5", num_classes=dm.num_classes, class_names=dm.class_names, label_mode=mode
    )
    output_dir = tmp_path / "predictions"
    outputs = trainer(callbacks=[PredictionWriter(output_dir=str(output_dir))]).predict(model, dm)

    with (output_dir / "predictions.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["path", "prediction", *dm.class_names]
    rows = rows[1:]
    assert len(rows) == 64 // 4  # the synthetic test set
    assert len({row[0] for row in rows}) == len(rows)
    probs = torch.cat([batch["probs"] for batch in outputs])
    assert probs.shape == (len(rows), dm.num_classes)
    for row, expected in zip(rows, probs):
        values = [float(v) for v in row[2:]]
        assert len(values) == dm.num_classes
        assert math.isclose(sum(values), 1.0, abs_tol=1e-5)
        assert row[1] == dm.class_names[max(range(len(values)), key=values.__getitem__)]
        torch.testing.assert_close(torch.tensor(values), expected, atol=1e-6, rtol=0)
    assert [row[0] for row in rows] == [p for batch in outputs for p in batch["path"]]
    assert not list(output_dir.glob("*.partial"))


# ----------------------------------------------------------------------------- optimizers and schedules
LR = 0.01
# lr_scheduler: (factory, learning rate at the start of each of the 4 steps, final rate)
SCHEDULES = {
    None: (None, [LR, LR, LR, LR], LR),
    "step": (functools.partial(StepLR, step_size=1), [LR, LR, LR * 0.1, LR * 0.1], LR * 0.01),
    "exponential": (functools.partial(ExponentialLR, gamma=0.9), [LR, LR, LR * 0.9, LR * 0.9], LR * 0.81),
    # two steps of linear warm-up, then cosine down to 0 over the remaining two
    "cosine": (functools.partial(WarmupCosineLR, warmup_epochs=1), [LR * 0.5, LR, LR, LR * 0.5], 0.0),
    "plateau": (ReduceLROnPlateau, [LR, LR, LR, LR], LR),  # patience 10: no change in 2 epochs
    "onecycle": (OneCycleLR, None, None),
}
OPTIMIZERS = {
    "adam": optimizer("Adam", lr=LR),
    "adamw": optimizer("AdamW", lr=LR, weight_decay=0.01),
    "sgd": optimizer("SGD", lr=LR, nesterov=True, momentum=0.9),
    "rmsprop": optimizer("RMSprop", lr=LR),
}


@pytest.fixture(scope="module")
def small_data():
    return datamodule()


@pytest.mark.parametrize("scheduler", SCHEDULES)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizers_and_schedules(name, scheduler, small_data):
    factory, expected_lrs, final = SCHEDULES[scheduler]
    pl.seed_everything(0, verbose=False)
    model = ClassifierModule("lenet5", num_classes=4, optimizer=OPTIMIZERS[name], lr_scheduler=factory)
    head_before = model.head.weight.detach().clone()
    recorder = Recorder()
    fit = trainer(
        max_epochs=2, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0, callbacks=[recorder]
    )
    fit.fit(model, small_data)
    assert fit.global_step == 4

    opt = fit.optimizers[0]
    assert type(opt) is OPTIMIZERS[name].func
    assert [g["name"] for g in opt.param_groups] == ["backbone", "backbone_no_decay", "head", "head_no_decay"]
    if name == "sgd":
        # (the defaults: onecycle cycles the groups' momentum)
        assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    if name == "adamw":  # timm's rule: no weight decay on biases and other 1-d parameters
        assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0, 0.01, 0.0]
    assert not torch.equal(model.head.weight, head_before)

    seen = [lrs[0] for lrs in recorder.lrs]
    assert all(len(set(lrs)) == 1 for lrs in recorder.lrs)  # every group follows one schedule
    end = opt.param_groups[0]["lr"]
    if scheduler == "onecycle":
        # from max_lr / 25 up to max_lr (at 30% of the 4 steps), then cosine down to max_lr / 25 / 1e4
        start, low = LR / 25, LR / 25 / 1e4
        cosine = [low + (LR - low) * (1 + math.cos(math.pi * (step - 0.2) / 2.8)) / 2 for step in (1, 2, 3)]
        assert seen == pytest.approx([start, *cosine], rel=1e-6)
        assert seen[-1] == pytest.approx(low)
    else:
        assert seen == pytest.approx(expected_lrs, abs=1e-12)
        assert end == pytest.approx(final, abs=1e-12)
    if scheduler in ("step", "exponential", "cosine", "onecycle"):
        assert end != pytest.approx(LR)


def test_a_whole_run_schedule_needs_a_finite_run(small_data):
    model = ClassifierModule("lenet5", num_classes=4, lr_scheduler=OneCycleLR)
    with pytest.raises(InputError, match="needs a finite trainer.max_epochs or trainer.max_steps"):
        trainer(max_epochs=-1, limit_train_batches=1).fit(model, small_data)
    with pytest.raises(InputError, match="WarmupCosineLR needs total_steps"):
        WarmupCosineLR(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1))


def test_unknown_optimizer_and_scheduler():
    with pytest.raises(InputError, match="optimizer 'lbfgs': give a class of torch.optim"):
        ClassifierModule("lenet5", num_classes=4, optimizer="lbfgs")
    with pytest.raises(InputError, match="optimizer 'torch.nn.Linear' is not a subclass of Optimizer$"):
        ClassifierModule("lenet5", num_classes=4, optimizer={"class_path": "torch.nn.Linear"})
    # a module that is not imported yet is never imported from a config or checkpoint
    with pytest.raises(
        InputError, match="lr_scheduler 'not_imported_yet.Schedule': give a class of torch.optim"
    ):
        ClassifierModule("lenet5", num_classes=4, lr_scheduler="not_imported_yet.Schedule")
    # an imported one (os) may be named, but only its scheduler classes are taken, never a function
    with pytest.raises(
        InputError, match="lr_scheduler 'os.system' is not a subclass of LRScheduler or ReduceLROnPlateau$"
    ):
        ClassifierModule("lenet5", num_classes=4, lr_scheduler="os.system")


def test_bad_scheduler_and_optimizer_arguments(small_data):
    model = ClassifierModule("lenet5", num_classes=4, lr_scheduler=functools.partial(StepLR, steps=1))
    with pytest.raises(InputError, match="lr_scheduler: .*steps"):
        trainer(limit_train_batches=1).fit(model, small_data)
    model = ClassifierModule("lenet5", num_classes=4, optimizer=optimizer("SGD", lr=-1.0))
    with pytest.raises(InputError, match="optimizer: Invalid learning rate: -1.0"):
        trainer(limit_train_batches=1).fit(model, small_data)


def test_optimizer_from_its_dict_form_as_a_checkpoint_from_python_keeps_it():
    model = ClassifierModule(
        "lenet5", num_classes=4,
        optimizer={"class_path": "torch.optim.SGD", "init_args": {"lr": 0.3, "momentum": 0.5}},
        lr_scheduler={"class_path": "torch.optim.lr_scheduler.StepLR", "init_args": {"step_size": 2}},
    )  # fmt: skip
    config = model.configure_optimizers()
    assert (
        isinstance(config["optimizer"], torch.optim.SGD) and config["optimizer"].defaults["momentum"] == 0.5
    )
    assert config["lr_scheduler"]["scheduler"].step_size == 2 and model.lr == 0.3


# ----------------------------------------------------------------------------- module backbones
def test_module_backbone():
    network = torchvision.models.resnet18()
    network.fc = nn.Identity()
    model = ClassifierModule(backbone=network, num_classes=3)
    assert model.backbone is network
    assert isinstance(model.head, nn.Linear) and model.head.in_features == 512
    assert "backbone" not in model.hparams
    assert model.hparams.num_classes == 3
    assert network.training  # probing the feature size leaves the mode as it was
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_module_backbone_that_is_not_pooled():
    with pytest.raises(InputError, match="returns 4-D features; it must return pooled"):
        ClassifierModule(backbone=nn.Conv2d(3, 8, 3), num_classes=3)


def test_validate_before_fit_then_fit_trains():
    """`trainer.validate` leaves metric states made under inference mode; fit must still update them."""
    data = ImageClassificationDataModule(SyntheticShapes(64), image_size=32, batch_size=16)
    model = ClassifierModule("cifar_lenet", num_classes=data.num_classes)
    options = dict(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    pl.Trainer(**options).validate(model, data, verbose=False)
    trainer = pl.Trainer(max_epochs=1, **options)
    trainer.fit(model, data)
    assert "val/acc" in trainer.callback_metrics and trainer.current_epoch == 1


@pytest.mark.parametrize(
    ("model_args", "message"),
    [
        (
            {"num_classes": 3},
            r"the model has num_classes=3 but the data has 4 classes \(circle, square, triangle, cross\)",
        ),
        (
            {"num_classes": 4, "class_names": ["a", "b", "c", "d"]},
            r"the model's class_names \['a', 'b', 'c', 'd'\] are not the data's \['circle', ",
        ),
    ],
)
def test_a_model_built_for_other_classes_than_the_data_is_refused(model_args, message):
    dm = ImageClassificationDataModule(SyntheticShapes(samples=8), image_size=32, batch_size=4)
    with pytest.raises(InputError, match=message):
        trainer(fast_dev_run=True).fit(ClassifierModule("cifar_lenet", **model_args), dm)
