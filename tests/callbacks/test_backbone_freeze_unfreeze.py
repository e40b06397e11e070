"""BackboneFreezeUnfreeze and the backbone's layer groups: which parameters change in each phase (for
classification, segmentation and super-resolution), learning rates per group under one-cycle,
cosine and plateau schedules, BatchNorm statistics, re-freezing, resume from either phase, a
skipped backward pass while frozen, and a 2-process DDP run.

Every fit runs on CPU for a few batches of 32x32 synthetic images.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import timm
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from tests.conftest import cpu_trainer, optimizer
from tests.distributed_helpers import run_ddp_script
from vision_lightning import (
    BackboneFreezeUnfreeze,
    ClassifierModule,
    OneCycleLR,
    SegmentationModule,
    SuperResModule,
    WarmupCosineLR,
)
from vision_lightning.data import segmentation_sources as seg
from vision_lightning.data.classification import ImageClassificationDataModule
from vision_lightning.data.classification_sources import SyntheticShapes
from vision_lightning.data.segmentation import SegmentationDataModule
from vision_lightning.data.superres import SuperResDataModule
from vision_lightning.data.superres_sources import SyntheticTextureImages
from vision_lightning.models.factory import create_backbone
from vision_lightning.optim.layer_groups import backbone_layer_groups
from vision_lightning.utils.errors import InputError

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- helpers
def classification_data(**kwargs) -> ImageClassificationDataModule:
    args = {
        "source": SyntheticShapes(32, num_classes=4),
        "image_size": 32,
        "batch_size": 8,
    }
    return ImageClassificationDataModule(**{**args, **kwargs})


def classifier(**kwargs) -> ClassifierModule:
    """LeNet-5 with BatchNorm (16 backbone tensors, BatchNorm statistics) and a linear head."""
    return ClassifierModule(**{"backbone": "lenet5_bn", "num_classes": 4, "log_images": 0, **kwargs})


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {k for k, v in after.items() if not torch.equal(v, before[k])}


class Record(pl.Callback):
    """Per epoch: the state of backbone and head at its end and whether any optimizer step saw a
    backbone gradient; per step: each group's learning rate and the backbone's mode."""

    def __init__(self) -> None:
        self.states: list[dict[str, dict[str, torch.Tensor]]] = []
        self.lrs: list[dict[str, float]] = []
        self.modes: list[tuple[int, bool]] = []
        self.backbone_grads: dict[int, bool] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = {"backbone": snapshot(pl_module.backbone), "head": snapshot(pl_module.head)}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append({g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups})
        self.modes.append((trainer.current_epoch, pl_module.backbone.training))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = any(p.grad is not None for p in pl_module.backbone.parameters())
        epoch = trainer.current_epoch
        self.backbone_grads[epoch] = self.backbone_grads.get(epoch, False) or grads

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.states.append({"backbone": snapshot(pl_module.backbone), "head": snapshot(pl_module.head)})

    def changes(self, part: str, keys: set[str] | None = None) -> list[bool]:
        """Whether `part` (its `keys` only, if given) changed during each epoch."""
        previous, result = self.start[part], []
        for state in self.states:
            different = changed(previous, state[part])
            result.append(bool(different & keys if keys is not None else different))
            previous = state[part]
        return result


def fit(model, data, callbacks, **kwargs) -> pl.Trainer:
    trainer = cpu_trainer(
        **{"limit_train_batches": 2, "limit_val_batches": 0, "callbacks": callbacks, **kwargs}
    )
    trainer.fit(model, data)
    return trainer


# ----------------------------------------------------------------------------- layer groups
def _check_split(backbone: nn.Module, count: int) -> list[list[nn.Parameter]]:
    groups = backbone_layer_groups(backbone, count)
    assert len(groups) == count and all(groups)
    order = [id(p) for p in backbone.parameters()]
    assert [id(p) for group in groups for p in group] == order  # every parameter once, in order
    return groups


def _first_names(backbone: nn.Module, groups: list[list[nn.Parameter]]) -> list[str]:
    names = {id(p): n for n, p in backbone.named_parameters()}
    return [names[id(group[0])] for group in groups]


def test_layer_groups_of_a_timm_resnet():
    """A timm model's own layer order (`group_matcher`: the stem, then each block) gives the units:
    ResNet-18's stem and 8 blocks dealt into 3 runs of 3, or 4 runs of 3, 2, 2 and 2."""
    backbone = timm.create_model("resnet18", num_classes=0)
    groups = _check_split(backbone, 3)
    assert _first_names(backbone, groups) == [
        "conv1.weight",
        "layer2.0.conv1.weight",
        "layer3.1.conv1.weight",
    ]
    assert _first_names(backbone, _check_split(backbone, 4)) == [
        "conv1.weight",
        "layer2.0.conv1.weight",
        "layer3.0.conv1.weight",
        "layer4.0.conv1.weight",
    ]
    assert len(_check_split(backbone, 1)[0]) == len(list(backbone.parameters()))


def test_layer_groups_descend_into_the_factorys_torchvision_wrapper():
    backbone, _ = create_backbone("vgg11", cut="classifier")  # features only: one parameterised child
    groups = _check_split(backbone, 2)
    assert _first_names(backbone, groups) == ["features.0.weight", "features.11.weight"]  # 4 convs each
    assert len(_check_split(backbone, 8)[0]) == 2  # one conv (weight, bias) per group


def test_layer_groups_of_an_smp_encoder_and_the_superres_body():
    encoder = SegmentationModule(arch="Unet", encoder="resnet18").backbone
    assert _first_names(encoder, _check_split(encoder, 3)) == [
        "conv1.weight", "layer1.0.conv1.weight", "layer3.0.conv1.weight"
    ]  # fmt: skip
    body = SuperResModule(arch="srresnet", scale=2, arch_args={"blocks": 4}).backbone  # conv, 4 blocks, conv
    assert _first_names(body, _check_split(body, 3)) == ["0.weight", "2.body.0.weight", "4.body.0.weight"]


def test_too_many_layer_groups_is_an_input_error():
    with pytest.raises(InputError, match="asks for 3 layer groups but the backbone Conv2d has only 1"):
        backbone_layer_groups(nn.Conv2d(3, 8, 3), 3)
    model = classifier()
    with pytest.raises(InputError, match="layer groups"):
        model.set_backbone_lr_factors([0.1] * 20)
    with pytest.raises(InputError, match="backbone_lr_factor must be"):
        model.set_backbone_lr_factors([0.1, -1])


def test_without_the_callback_the_groups_are_backbone_and_head_at_lr():
    model = classifier(optimizer=optimizer("AdamW", lr=0.02, weight_decay=0.05))
    groups = model.configure_optimizers().param_groups
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in groups] == [
        ("backbone", 0.02, 0.05),
        ("backbone_no_decay", 0.02, 0.0),
        ("head", 0.02, 0.05),
        ("head_no_decay", 0.02, 0.0),
    ]
    assert all(g["params"] for g in groups)


# ----------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"unfreeze_at_epoch": 1, "frozen_epochs": [[0, 1]]}, "either unfreeze_at_epoch or frozen_epochs"),
        ({"unfreeze_at_epoch": -1}, "unfreeze_at_epoch must be"),
        ({"frozen_epochs": [[2, 1]]}, "frozen_epochs holds"),
        ({"backbone_lr_factor": 0}, "backbone_lr_factor must be"),
        ({"backbone_lr_factor": []}, "backbone_lr_factor must be"),
    ],
)
def test_bad_arguments_are_input_errors(kwargs, message):
    with pytest.raises(InputError, match=message):
        BackboneFreezeUnfreeze(**kwargs)


def test_the_schedule_of_frozen_epochs():
    assert [BackboneFreezeUnfreeze().frozen_at(e) for e in range(3)] == [True, False, False]
    assert not BackboneFreezeUnfreeze(unfreeze_at_epoch=0).frozen_at(0)
    ranges = BackboneFreezeUnfreeze(frozen_epochs=[[0, 2], [4, 5]])
    assert [ranges.frozen_at(e) for e in range(6)] == [True, True, False, False, True, False]


def test_a_partly_frozen_backbone_cannot_be_scheduled():
    model = classifier(freeze_backbone=3)
    with pytest.raises(
        InputError, match="freeze_backbone=3 freezes the backbone's first 3 children for good"
    ):
        fit(model, classification_data(), [BackboneFreezeUnfreeze()])


# ----------------------------------------------------------------------------- phases per task
def test_classifier_phases_groups_and_no_eval_mode_warning():
    pl.seed_everything(0, verbose=False)
    # freeze_backbone: the callback takes the freezing over
    model = classifier(freeze_backbone=True, optimizer=optimizer(lr=0.01))
    record = Record()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(
            model,
            classification_data(),
            [BackboneFreezeUnfreeze(unfreeze_at_epoch=1, backbone_lr_factor=[0.01, 0.1]), record],
            max_epochs=2,
            limit_val_batches=1,
        )
    assert not [w for w in caught if "eval mode" in str(w.message)]
    assert record.changes("backbone") == [False, True]  # weights and BatchNorm statistics
    assert record.changes("head") == [True, True]
    assert record.backbone_grads == {0: False, 1: True}
    assert record.modes == [(0, False), (0, False), (1, True), (1, True)]  # frozen BatchNorm in eval
    assert record.lrs[0] == pytest.approx(
        {
            "backbone_0": 1e-4,
            "backbone_0_no_decay": 1e-4,
            "backbone_1": 1e-3,
            "backbone_1_no_decay": 1e-3,
            "head": 1e-2,
            "head_no_decay": 1e-2,
        }
    )
    assert all(lrs == record.lrs[0] for lrs in record.lrs)
    assert not model.backbone_scheduled  # released at teardown


def test_segmentation_phases():
    pl.seed_everything(0, verbose=False)
    model = SegmentationModule(
        arch="Unet", encoder="resnet18", arch_args={"encoder_depth": 3, "decoder_channels": [16, 8, 8]},
        log_images=0, optimizer=optimizer(lr=0.01),
    )  # fmt: skip
    data = SegmentationDataModule(source=seg.SyntheticShapes(16), mode="binary", image_size=32, batch_size=8)
    record = Record()
    fit(model, data, [BackboneFreezeUnfreeze(unfreeze_at_epoch=1), record], max_epochs=2)
    used = {"conv1.weight", "layer1.0.conv1.weight", "layer2.0.conv1.weight"}  # depth 3: layer3/4 unused
    assert record.changes("backbone", used) == [False, True]
    assert record.changes("head") == [True, True]  # decoder and segmentation head


def test_superres_phases():
    pl.seed_everything(0, verbose=False)
    model = SuperResModule(arch="espcn", scale=2, log_images=0, optimizer=optimizer(lr=0.01))
    data = SuperResDataModule(
        SyntheticTextureImages(samples=8, size=48), scale=2, image_size=24, batch_size=4
    )
    record = Record()
    fit(
        model,
        data,
        [BackboneFreezeUnfreeze(unfreeze_at_epoch=1, backbone_lr_factor=[0.1, 0.5]), record],
        max_epochs=2,
    )
    assert record.changes("backbone") == [False, True]  # the LR body
    assert record.changes("head") == [True, True]  # the sub-pixel stage
    assert list(record.lrs[0]) == [
        "backbone_0", "backbone_0_no_decay", "backbone_1", "backbone_1_no_decay", "head", "head_no_decay"
    ]  # fmt: skip


def test_superres_new_layers_first_and_the_callback_freeze_together(tmp_path):
    """Epoch 0: only the new x3 stage trains (body frozen by both); epoch 1: the head trains, the
    body is still frozen by the callback; epoch 2: everything trains. freeze_backbone=True is taken
    over by the callback, so the body is not kept frozen for good."""
    pl.seed_everything(0, verbose=False)
    path = tmp_path / "x2.pt"
    torch.save(SuperResModule(arch="espcn", scale=2).model.state_dict(), path)
    model = SuperResModule(
        arch="espcn",
        scale=3,
        weights=str(path),
        new_layers_first=1,
        freeze_backbone=True,
        log_images=0,
        optimizer=optimizer(lr=0.01),
    )
    assert model.new_parameters  # the x3 sub-pixel convolution
    data = SuperResDataModule(
        SyntheticTextureImages(samples=8, size=48), scale=3, image_size=24, batch_size=4
    )
    record = Record()
    fit(model, data, [BackboneFreezeUnfreeze(unfreeze_at_epoch=2), record], max_epochs=3)
    assert record.changes("backbone") == [False, False, True]
    assert record.changes("head") == [True, True, True]


# ----------------------------------------------------------------------------- learning rates
@pytest.mark.parametrize(
    "lr_scheduler",
    [
        OneCycleLR,
        functools.partial(WarmupCosineLR, warmup_epochs=0.5),
        # a tenfold rise counts as improvement: the rate halves after every epoch but the first
        functools.partial(
            torch.optim.lr_scheduler.ReduceLROnPlateau, mode="max", patience=0, factor=0.5, threshold=10.0
        ),
    ],
    ids=["onecycle", "cosine", "plateau"],
)
def test_schedulers_keep_the_factors_before_and_after_unfreezing(lr_scheduler):
    pl.seed_everything(0, verbose=False)
    model = classifier(optimizer=optimizer(lr=0.01), lr_scheduler=lr_scheduler)
    record = Record()
    callback = BackboneFreezeUnfreeze(unfreeze_at_epoch=1, backbone_lr_factor=[0.01, 0.1])
    fit(model, classification_data(), [callback, record], max_epochs=3, limit_val_batches=1)
    heads = [lrs["head"] for lrs in record.lrs]
    assert len(set(heads)) >= 2  # the schedule moved the rates
    for lrs in record.lrs:  # every step, frozen or not
        assert lrs["backbone_0"] == pytest.approx(0.01 * lrs["head"], rel=1e-9)
        assert lrs["backbone_1"] == pytest.approx(0.1 * lrs["head"], rel=1e-9)
        for name in ("backbone_0", "backbone_1", "head"):  # no weight decay, same rate
            assert lrs[f"{name}_no_decay"] == pytest.approx(lrs[name], rel=1e-9)
    assert record.changes("backbone") == [False, True, True]


# ----------------------------------------------------------------------------- BatchNorm statistics
def _batchnorm_keys(module: nn.Module, suffix: str) -> set[str]:
    return {
        f"{name}.{suffix}"
        for name, m in module.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    }


@pytest.mark.parametrize("freeze_bn_stats", [True, False])
def test_freeze_bn_stats_keeps_running_statistics_while_weights_train(freeze_bn_stats):
    pl.seed_everything(0, verbose=False)
    model = classifier(optimizer=optimizer(lr=0.01))
    record = Record()
    callback = BackboneFreezeUnfreeze(unfreeze_at_epoch=0, freeze_bn_stats=freeze_bn_stats)
    fit(model, classification_data(), [callback, record], max_epochs=2, limit_val_batches=1)
    stats = _batchnorm_keys(model.backbone, "running_mean") | _batchnorm_keys(model.backbone, "running_var")
    weights = _batchnorm_keys(model.backbone, "weight")
    assert record.changes("backbone", weights) == [True, True]  # affine weights train either way
    assert record.changes("backbone", stats) == [not freeze_bn_stats] * 2
    batchnorms = [m for m in model.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.train()  # also after validation and a later train(): statistics stay fixed
    assert all(m.training != freeze_bn_stats for m in batchnorms)
    assert model.backbone[0].training  # the convolutions are in training mode


# ----------------------------------------------------------------------------- re-freezing
def test_frozen_epochs_refreeze_the_backbone():
    """SGD with momentum and weight decay: a step on a frozen parameter holding a stale or zero
    gradient would move it, so an unchanged backbone shows the optimizer skipped it."""
    pl.seed_everything(0, verbose=False)
    model = classifier(optimizer=optimizer("SGD", lr=0.05, momentum=0.9, weight_decay=1e-3))
    record = Record()
    callback = BackboneFreezeUnfreeze(frozen_epochs=[[0, 1], [2, 3]], backbone_lr_factor=0.5)
    fit(model, classification_data(), [callback, record], max_epochs=4)
    assert record.changes("backbone") == [False, True, False, True]
    assert record.backbone_grads == {0: False, 1: True, 2: False, 3: True}
    assert [training for _, training in record.modes] == [False, False, True, True, False, False, True, True]


# ----------------------------------------------------------------------------- backward pass
def test_a_frozen_step_skips_the_backbones_backward_pass():
    pl.seed_everything(0, verbose=False)
    model = classifier()
    calls: list[int] = []

    class Epoch(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.epoch = trainer.current_epoch

    epoch = Epoch()
    model.backbone[0].register_full_backward_hook(lambda module, grad_in, grad_out: calls.append(epoch.epoch))
    fit(model, classification_data(), [BackboneFreezeUnfreeze(unfreeze_at_epoch=1), epoch], max_epochs=2)
    assert calls == [1, 1]  # the first convolution's backward ran only on the two unfrozen steps


# ----------------------------------------------------------------------------- resume
def _resume_run(tmp_path: Path, callback_args: dict, first_epochs: int, total_epochs: int):
    """Fit `first_epochs` with a checkpoint at the end, then resume to `total_epochs` in a new
    Trainer with a new callback and model: (model, record of the resumed part, trainer, checkpoint)."""
    pl.seed_everything(0, verbose=False)
    checkpoints = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)
    first = classifier(optimizer=optimizer(lr=0.01))
    fit(first, classification_data(), [BackboneFreezeUnfreeze(**callback_args), checkpoints],
        max_epochs=first_epochs, enable_checkpointing=True)  # fmt: skip
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    model, record = classifier(optimizer=optimizer(lr=0.01)), Record()
    trainer = cpu_trainer(max_epochs=total_epochs, limit_train_batches=2, limit_val_batches=0,
                          callbacks=[BackboneFreezeUnfreeze(**callback_args), record])  # fmt: skip
    trainer.fit(model, classification_data(), ckpt_path=tmp_path / "last.ckpt")
    return model, record, trainer, saved


def test_resume_from_a_checkpoint_of_the_frozen_phase(tmp_path):
    model, record, trainer, saved = _resume_run(
        tmp_path, {"unfreeze_at_epoch": 2, "backbone_lr_factor": [0.1, 0.5]}, 1, 3
    )
    assert saved["callbacks"]["BackboneFreezeUnfreeze"]["frozen"] is True
    assert record.changes("backbone") == [False, True]  # epoch 1 still frozen, epoch 2 not
    assert record.changes("head") == [True, True]
    assert record.lrs[0] == pytest.approx(
        {
            "backbone_0": 1e-3,
            "backbone_0_no_decay": 1e-3,
            "backbone_1": 5e-3,
            "backbone_1_no_decay": 5e-3,
            "head": 1e-2,
            "head_no_decay": 1e-2,
        }
    )
    state = trainer.optimizers[0].state
    head_weight = model.head.weight
    assert int(state[head_weight]["step"]) == 6  # 2 steps before the checkpoint + 4 after
    assert int(state[next(model.backbone.parameters())]["step"]) == 2  # trained in epoch 2 only


def test_resume_from_a_checkpoint_of_the_unfrozen_phase_into_a_refreeze(tmp_path):
    args = {"frozen_epochs": [[0, 1], [2, 3]], "backbone_lr_factor": 0.1}
    model, record, trainer, saved = _resume_run(tmp_path, args, 2, 4)
    assert saved["callbacks"]["BackboneFreezeUnfreeze"]["frozen"] is False
    assert record.changes("backbone") == [False, True]  # epoch 2 re-frozen, epoch 3 trains
    state = trainer.optimizers[0].state
    assert int(state[next(model.backbone.parameters())]["step"]) == 4  # epochs 1 and 3
    assert int(state[model.head.weight]["step"]) == 8


def test_resume_with_other_factors_is_an_input_error(tmp_path):
    pl.seed_everything(0, verbose=False)
    trainer = fit(classifier(), classification_data(), [BackboneFreezeUnfreeze(backbone_lr_factor=0.1)])
    path = tmp_path / "frozen.ckpt"
    trainer.save_checkpoint(path)
    for callbacks, factors in (
        ([BackboneFreezeUnfreeze(backbone_lr_factor=[0.01, 0.1])], r"\[0.01, 0.1\]"),
        ([BackboneFreezeUnfreeze(backbone_lr_factor=0.5)], r"\[0.5\]"),
        ([], r"\[1.0\]"),
    ):
        resumed = cpu_trainer(max_epochs=2, limit_train_batches=1, limit_val_batches=0, callbacks=callbacks)
        with pytest.raises(
            InputError,
            match=r"trained with other optimizer groups \(backbone learning-rate factors \[0.1\]; "
            rf"this run has {factors}\): resume with the same BackboneFreezeUnfreeze backbone_lr_factor",
        ):
            resumed.fit(classifier(), classification_data(), ckpt_path=path)
    with pytest.raises(InputError, match="backbone_lr_factor=\\[0.1\\], not \\[0.5\\]"):
        BackboneFreezeUnfreeze(backbone_lr_factor=0.5).load_state_dict({"backbone_lr_factor": [0.1]})


# ----------------------------------------------------------------------------- DDP
def test_ddp_is_told_to_find_unused_parameters():
    strategy = DDPStrategy()
    BackboneFreezeUnfreeze()._configure_ddp(SimpleNamespace(strategy=strategy))
    assert strategy._ddp_kwargs["find_unused_parameters"] is True
    with pytest.raises(InputError, match="static_graph"):
        BackboneFreezeUnfreeze()._configure_ddp(SimpleNamespace(strategy=DDPStrategy(static_graph=True)))


def test_two_process_ddp(tmp_path):
    """Epoch 0 frozen, epochs 1-2 unfrozen, on 2 CPU processes (gloo): the backbone gets no gradient
    and stays put while frozen, the head trains every epoch, and both ranks end identical."""
    ranks = run_ddp_script("ddp_finetuning_script.py", tmp_path)
    for record in ranks:
        assert record["world_size"] == 2 and record["find_unused_parameters"]
        backbones = [record["start"]["backbone"]] + [e["backbone"] for e in record["epochs"]]
        heads = [record["start"]["head"]] + [e["head"] for e in record["epochs"]]
        assert [a != b for a, b in zip(backbones, backbones[1:])] == [False, True, True]
        assert [a != b for a, b in zip(heads, heads[1:])] == [True, True, True]
        assert record["backbone_grads"] == [False, True, True]
    assert ranks[0]["all"] == ranks[1]["all"]
    assert ranks[0]["epochs"] == ranks[1]["epochs"]


def _scalars(run: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[str, list[float]] = {}
    for events in sorted(run.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            values.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
    return values


def test_cli_fit_then_resume_across_the_unfreeze(tmp_path: Path):
    """Through the CLI: the callback from the command line, three learning-rate groups in
    TensorBoard at fixed ratios, and a resume from the frozen epoch's last.ckpt that unfreezes."""
    from tests.conftest import run_cli

    config = Path(__file__).resolve().parents[2] / "configs/quickstart/classification.yaml"
    run = tmp_path / "run"
    args = [
        "fit", "--config", config,
        "--trainer.callbacks+=vision_lightning.BackboneFreezeUnfreeze", "--trainer.callbacks.unfreeze_at_epoch", "1",
        "--trainer.callbacks.backbone_lr_factor", "[0.01, 0.1]",
        "--model.init_args.lr_scheduler", "null", "--data.init_args.source.init_args.samples", "64",
        "--data.init_args.batch_size", "16", "--trainer.log_every_n_steps", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
        "--trainer.default_root_dir", run, "--checkpoint.dirpath", run / "checkpoints",
    ]  # fmt: skip
    run_cli(*args, "--trainer.max_epochs", "1")
    frozen = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert frozen["epoch"] == 0
    run_cli(*args, "--trainer.max_epochs", "2", "--ckpt_path", run / "checkpoints/last.ckpt")
    unfrozen = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert unfrozen["epoch"] == 1

    conv = next(k for k in frozen["state_dict"] if k.startswith("backbone.") and k.endswith("weight"))
    assert not torch.equal(
        frozen["state_dict"][conv], unfrozen["state_dict"][conv]
    )  # trained after the resume
    scalars = _scalars(run)
    lrs = {tag.rsplit("/", 1)[-1]: values for tag, values in scalars.items() if tag.startswith("lr-")}
    groups = ("backbone_0", "backbone_1", "head")
    assert set(lrs) == {*groups, *(f"{name}_no_decay" for name in groups)}
    for backbone_lr, head_lr in zip(lrs["backbone_0"], lrs["head"]):
        assert backbone_lr == pytest.approx(head_lr * 0.01)
    for backbone_lr, head_lr in zip(lrs["backbone_1"], lrs["head"]):
        assert backbone_lr == pytest.approx(head_lr * 0.1)
    for name in groups:
        assert lrs[f"{name}_no_decay"] == pytest.approx(lrs[name])
