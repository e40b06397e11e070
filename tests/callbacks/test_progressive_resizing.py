"""ProgressiveResizing: sizes and batch sizes per epoch for every data module, loaders rebuilt only at
stage boundaries, schedules over the whole run, checks before training, resume, CLI and logging."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from tests.conftest import cpu_trainer, optimizer, run_cli
from vision_lightning import (
    ClassifierModule,
    ImageClassificationDataModule,
    OneCycleLR,
    ProgressiveResizing,
    ResizeStage,
    SegmentationDataModule,
    SegmentationModule,
    SuperResDataModule,
    SuperResModule,
    WarmupCosineLR,
)
from vision_lightning.data import segmentation_sources as seg
from vision_lightning.data.classification_sources import SyntheticShapes
from vision_lightning.data.superres_sources import SyntheticTextureImages
from vision_lightning.optim import StepSchedule, estimated_stepping_batches
from vision_lightning.utils.errors import InputError

SMALL_THEN_LARGE = [
    {"epoch": 0, "image_size": 16, "batch_size": 4},
    {"epoch": 2, "image_size": 32, "batch_size": 2},
]


# ----------------------------------------------------------------------------- helpers
class Recorder(pl.Callback):
    """The batches training_step and validation_step see, per epoch, and the loaders they come from."""

    def __init__(self, key: str = "image") -> None:
        self.key = key
        self.train: dict[int, set[tuple]] = {}
        self.val: dict[int, set[tuple]] = {}
        self.sanity: set[tuple] = set()
        self.train_loaders: dict[int, int] = {}
        self.val_loaders: dict[int, int] = {}
        self.lrs: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.train_loaders[trainer.current_epoch] = id(trainer.train_dataloader)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        shapes = tuple(tuple(batch[key].shape) for key in self.key.split(","))
        self.train.setdefault(trainer.current_epoch, set()).add(shapes)
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        shape = tuple(batch[self.key.split(",")[0]].shape)
        if trainer.sanity_checking:
            self.sanity.add(shape)
        else:
            self.val.setdefault(trainer.current_epoch, set()).add(shape)
            self.val_loaders[trainer.current_epoch] = id(trainer.val_dataloaders)


def classification_data(**kwargs) -> ImageClassificationDataModule:
    args = {"source": SyntheticShapes(32, num_classes=4), "image_size": 16, "batch_size": 4, **kwargs}
    return ImageClassificationDataModule(**args)


def classifier(**kwargs) -> ClassifierModule:
    """A classifier that takes any image size (pooled features)."""
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return ClassifierModule(backbone=backbone, num_classes=4, log_images=0, **kwargs)


def trainer(*callbacks: pl.Callback, **kwargs) -> pl.Trainer:
    return cpu_trainer(callbacks=list(callbacks), **{"max_epochs": 4, **kwargs})


def resizing(stages=SMALL_THEN_LARGE) -> ProgressiveResizing:
    return ProgressiveResizing([dict(stage) for stage in stages])


# ----------------------------------------------------------------------------- each data module
def test_classification_sizes_and_batch_sizes_per_epoch():
    data, recorder = classification_data(resize=20), Recorder()
    trainer(resizing(), recorder).fit(classifier(), data)
    assert recorder.train == {0: {((4, 3, 16, 16),)}, 1: {((4, 3, 16, 16),)},
                              2: {((2, 3, 32, 32),)}, 3: {((2, 3, 32, 32),)}}  # fmt: skip
    assert {epoch: {s[2:] for s in shapes} for epoch, shapes in recorder.val.items()} == {
        0: {(16, 16)},
        1: {(16, 16)},
        2: {(32, 32)},
        3: {(32, 32)},
    }
    assert {s[0] for s in recorder.val[3]} <= {1, 2}  # validation batches follow the batch size too
    # Loaders are rebuilt at the stage boundary only.
    assert recorder.train_loaders[0] == recorder.train_loaders[1] != recorder.train_loaders[2]
    assert recorder.train_loaders[2] == recorder.train_loaders[3]
    assert (
        recorder.val_loaders[0]
        == recorder.val_loaders[1]
        != recorder.val_loaders[2]
        == recorder.val_loaders[3]
    )
    # The eval resize (before the centre crop) keeps its ratio to image_size: 20/16 -> 40/32.
    assert (data.image_size, data.batch_size, data.resize) == (32, 2, 40)


def test_segmentation_images_and_masks_follow_the_stages():
    data = SegmentationDataModule(source=seg.SyntheticShapes(24), image_size=16, batch_size=4)
    model = SegmentationModule(arch="classic_unet", arch_args={"base_channels": 4}, log_images=0)
    recorder = Recorder("image,mask")
    trainer(resizing(), recorder, limit_train_batches=2, limit_val_batches=1).fit(model, data)
    small, large = ((4, 3, 16, 16), (4, 16, 16)), ((2, 3, 32, 32), (2, 32, 32))
    assert recorder.train == {0: {small}, 1: {small}, 2: {large}, 3: {large}}
    assert recorder.val[3] == {(2, 3, 32, 32)}


def test_superres_hr_and_lr_crops_grow_together():
    data = SuperResDataModule(
        SyntheticTextureImages(samples=8, size=48), scale=2, image_size=16, batch_size=4
    )
    recorder = Recorder("hr,lr")
    trainer(resizing(), recorder, limit_train_batches=2, limit_val_batches=1).fit(
        SuperResModule(arch="espcn", scale=2), data
    )
    small, large = ((4, 3, 16, 16), (4, 3, 8, 8)), ((2, 3, 32, 32), (2, 3, 16, 16))
    assert recorder.train == {0: {small}, 1: {small}, 2: {large}, 3: {large}}
    assert data.lr_size == 16


def test_a_stage_keeps_the_batch_size_when_it_gives_none():
    stages = [
        {"epoch": 0, "image_size": 16},
        {"epoch": 1, "image_size": 24},
        {"epoch": 2, "image_size": 32, "batch_size": 2},
    ]
    recorder = Recorder()
    trainer(resizing(stages), recorder, max_epochs=3, limit_train_batches=1, limit_val_batches=0).fit(
        classifier(), classification_data(batch_size=3)
    )
    assert recorder.train == {0: {((3, 3, 16, 16),)}, 1: {((3, 3, 24, 24),)}, 2: {((2, 3, 32, 32),)}}


# ----------------------------------------------------------------------------- checks before training
@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([], "at least one stage"),
        ([{"epoch": 1, "image_size": 16}], r"stage 0 .*must start at epoch 0"),
        ([{"epoch": 0, "image_size": 16}, {"epoch": 0, "image_size": 32}], r"stage 1 .*epochs must increase"),
        (
            [{"epoch": 0, "image_size": 16}, {"epoch": 2, "image_size": 0}],
            r"stage 1 .*image_size must be positive",
        ),
        ([{"epoch": 0, "image_size": 16, "batch_size": 0}], r"stage 0 .*batch_size must be positive"),
        ([{"epoch": 0, "image_size": 16.5}], r"stage 0 .*image_size must be a whole number"),
        ([{"epoch": 0, "size": 16}], r"stage 0 .*must have the keys epoch, image_size, batch_size"),
    ],
)
def test_bad_schedules_name_the_stage(stages, message):
    with pytest.raises(InputError, match=message):
        ProgressiveResizing(stages)


def test_stage_objects_and_mappings_are_the_same_schedule():
    made = ProgressiveResizing([ResizeStage(0, 16, 4), ResizeStage(epoch=2, image_size=32)])
    assert (
        made.stages
        == ProgressiveResizing(
            [{"epoch": 0, "image_size": 16, "batch_size": 4}, {"epoch": 2, "image_size": 32}]
        ).stages
    )
    assert [made.stage_index(epoch) for epoch in range(4)] == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("image_size", "message"),
    [(33, r"stage 1 \(epoch 2, image_size 33\): image_size 33 must be a multiple of scale 2"),
     (64, r"stage 1 \(epoch 2, image_size 64\): .*smaller than the 64x64 HR crop")],
)  # fmt: skip
def test_a_stage_the_data_cannot_give_fails_before_training(image_size, message):
    data = SuperResDataModule(
        SyntheticTextureImages(samples=8, size=48), scale=2, image_size=16, batch_size=4
    )
    recorder = Recorder("hr")
    stages = [{"epoch": 0, "image_size": 16}, {"epoch": 2, "image_size": image_size}]
    with pytest.raises(InputError, match=message):
        trainer(resizing(stages), recorder).fit(SuperResModule(arch="espcn", scale=2), data)
    assert recorder.train == {}
    assert data.image_size == 16  # checking a stage leaves the data module as it was


def test_needs_a_data_module_with_sizes():
    loader = classification_data().train_dataloader()
    with pytest.raises(InputError, match="needs a data module"):
        trainer(resizing()).fit(classifier(), train_dataloaders=loader)

    class NoSizes(pl.LightningDataModule):
        def train_dataloader(self):
            return loader

    with pytest.raises(InputError, match="NoSizes has no image_size or batch_size"):
        trainer(resizing()).fit(classifier(), NoSizes())


# ----------------------------------------------------------------------------- schedules over the run
def test_onecycle_runs_to_its_end_when_the_batch_size_halves():
    data, recorder = classification_data(), Recorder()
    callback = resizing()
    run = trainer(callback, recorder, limit_val_batches=0)
    run.fit(classifier(optimizer=optimizer(lr=1e-2), lr_scheduler=OneCycleLR), data)
    train = len(data.train_dataloader().dataset)
    first_stage_estimate = (train // 4) * 4  # what Lightning's estimate sees: the first loader x epochs
    total = callback.estimated_stepping_batches(run)
    assert total == 2 * (train // 4) + 2 * (train // 2) > first_stage_estimate
    assert run.global_step == len(recorder.lrs) == total == estimated_stepping_batches(run)
    assert max(recorder.lrs) == pytest.approx(1e-2, rel=0.01)
    assert recorder.lrs[-1] == pytest.approx(1e-2 / 25 / 1e4, abs=1e-9)  # OneCycleLR's minimum


def test_cosine_warmup_counts_the_epochs_steps():
    """`warmup_epochs: 1` warms up over epoch 0's steps, not a third of the run's (3 epochs)."""
    recorder, callback = (
        Recorder(),
        resizing(
            [{"epoch": 0, "image_size": 16, "batch_size": 8}, {"epoch": 1, "image_size": 32, "batch_size": 2}]
        ),
    )
    run = trainer(callback, recorder, max_epochs=3, limit_val_batches=0)
    model = classifier(
        optimizer=optimizer(lr=1e-2), lr_scheduler=functools.partial(WarmupCosineLR, warmup_epochs=1)
    )
    run.fit(model, classification_data())
    per_epoch = callback.stepping_batches_per_epoch(run)
    assert per_epoch[0] < sum(per_epoch) / 3
    warmup = per_epoch[0]
    assert recorder.lrs[:warmup] == pytest.approx([1e-2 * (step + 1) / warmup for step in range(warmup)])
    assert recorder.lrs[warmup] == pytest.approx(1e-2) and recorder.lrs[-1] < 1e-3  # then cosine decay


@pytest.mark.parametrize(
    "options",
    [
        {"accumulate_grad_batches": 3},
        {"limit_train_batches": 0.5},
        {"limit_train_batches": 5, "accumulate_grad_batches": 2},
        {"max_steps": 17, "max_epochs": 10},
    ],
)
def test_the_estimate_is_the_number_of_optimizer_steps_taken(options):
    callback = resizing()
    run = trainer(callback, **{"limit_val_batches": 0, **options})
    run.fit(classifier(), classification_data())
    assert isinstance(callback, StepSchedule)
    assert callback.estimated_stepping_batches(run) == run.global_step


def test_the_estimate_splits_each_stage_across_devices():
    """Under DDP Lightning gives each device ceil(n / devices) samples (DistributedSampler pads)."""
    data = classification_data(source=SyntheticShapes(40, num_classes=4))
    data.setup("fit")
    samples = len(data.train_dataloader().dataset)
    fake = SimpleNamespace(
        datamodule=data, max_epochs=4, max_steps=-1, limit_train_batches=1.0, accumulate_grad_batches=1,
        distributed_sampler_kwargs={"num_replicas": 3, "rank": 0},
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=True),
    )  # fmt: skip
    per_device = math.ceil(samples / 3)
    expected = [per_device // 4] * 2 + [per_device // 2] * 2  # training loaders drop the ragged end
    assert resizing().stepping_batches_per_epoch(fake) == expected
    assert (data.image_size, data.batch_size) == (16, 4)  # counting leaves the data module as it was


# ----------------------------------------------------------------------------- resume
def test_resume_uses_the_stage_of_the_resumed_epoch(tmp_path: Path):
    first = trainer(resizing(), max_epochs=2, limit_train_batches=2, limit_val_batches=1)
    first.fit(classifier(), classification_data())
    path = tmp_path / "epoch2.ckpt"
    first.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)["callbacks"]["ProgressiveResizing"]
    assert saved["stage"] == {"epoch": 0, "image_size": 16, "batch_size": 4}
    assert saved["stages"] == SMALL_THEN_LARGE

    data, recorder, callback = classification_data(), Recorder(), resizing()  # fresh: configured at 16 px
    run = trainer(callback, recorder, limit_train_batches=2, limit_val_batches=1)
    run.fit(classifier(), data, ckpt_path=path)
    assert recorder.train == {2: {((2, 3, 32, 32),)}, 3: {((2, 3, 32, 32),)}}
    assert recorder.sanity == {(2, 3, 32, 32)}  # the sanity check runs at the resumed size too
    assert callback.current_stage == ResizeStage(2, 32, 2)


def test_resume_from_the_middle_of_an_epoch(tmp_path: Path):
    stages = [
        {"epoch": 0, "image_size": 16, "batch_size": 4},
        {"epoch": 1, "image_size": 32, "batch_size": 2},
    ]
    steps = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=6, save_top_k=-1, filename="{step}")
    options = {"max_epochs": 3, "limit_train_batches": 4, "limit_val_batches": 1}
    trainer(resizing(stages), steps, enable_checkpointing=True, **options).fit(
        classifier(), classification_data()
    )
    middle = tmp_path / "step=6.ckpt"  # epoch 0 has 4 steps: step 6 is half-way through epoch 1
    assert middle.is_file()

    recorder = Recorder()
    run = trainer(resizing(stages), recorder, **options)
    run.fit(classifier(), classification_data(), ckpt_path=middle)
    assert recorder.train == {1: {((2, 3, 32, 32),)}, 2: {((2, 3, 32, 32),)}}
    assert run.global_step == 12


def test_a_changed_schedule_is_reported_on_resume(tmp_path: Path):
    first = trainer(resizing(), max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    first.fit(classifier(), classification_data())
    first.save_checkpoint(tmp_path / "last.ckpt")
    other = [{"epoch": 0, "image_size": 16, "batch_size": 4}, {"epoch": 1, "image_size": 24}]
    recorder = Recorder()
    run = trainer(resizing(other), recorder, max_epochs=2, limit_train_batches=1, limit_val_batches=0)
    with pytest.warns(UserWarning, match="checkpoint was trained with stages .*resuming with the configured"):
        run.fit(classifier(), classification_data(), ckpt_path=tmp_path / "last.ckpt")
    assert recorder.train == {1: {((4, 3, 24, 24),)}}


# ----------------------------------------------------------------------------- CLI and logging
CONFIG = """
trainer:
  max_epochs: 3
  limit_train_batches: 2
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: vision_lightning.ProgressiveResizing
      init_args:
        stages:
          - {epoch: 0, image_size: 16, batch_size: 4}
          - {epoch: 1, image_size: 24}
          - epoch: 2
            image_size: 32
            batch_size: 2
model:
  class_path: vision_lightning.ClassifierModule
  init_args:
    backbone: timm:test_resnet
    log_images: 0
data:
  class_path: vision_lightning.ImageClassificationDataModule
  init_args:
    source:
      class_path: vision_lightning.data.classification_sources.SyntheticShapes
      init_args: {samples: 20}   # 4 validation images
    image_size: 16
    batch_size: 4
"""


def test_cli_schedule_and_tensorboard_logs(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    run_cli("fit", "--config", config, "--trainer.default_root_dir", tmp_path)
    files = sorted(tmp_path.rglob("events.out.tfevents.*"))
    events = EventAccumulator(str(files[0].parent), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.value for e in events.Scalars("image_size")] == [16, 24, 32]
    assert [e.value for e in events.Scalars("batch_size")] == [4, 4, 2]


def test_cli_reports_a_bad_stage_in_one_line(tmp_path: Path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.replace("epoch: 2\n", "epoch: 1\n"))
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", config, "--trainer.default_root_dir", tmp_path)
    assert exit_info.value.code == 2
    assert "error: ProgressiveResizing stage 2" in capsys.readouterr().err
