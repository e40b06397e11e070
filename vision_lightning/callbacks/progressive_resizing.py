"""ProgressiveResizing: train on small images first, then larger ones (seed 004's 128 -> 512 -> 1024).

A schedule of `ResizeStage`s says from which epoch the data module's `image_size` (and optionally
`batch_size`) changes. At a stage boundary the callback sets those attributes on `trainer.datamodule`
and drops the fit loop's train and validation loaders, so Lightning builds new ones before the next
epoch (as Lightning's batch-size finder does); between boundaries nothing is rebuilt.

- Classification (`ImageClassificationDataModule`): images are resized to the stage's size; an eval
  `resize` (shorter side before the centre crop) is scaled by the same ratio as `image_size`, so
  256 -> 224 at the configured size becomes 146 -> 128 at a 128 stage.
- Segmentation: images and masks are resized (or, with `crop`, cropped) to the stage's size.
- Super-resolution: `image_size` is the HR crop, so HR and LR crops (`image_size // scale`) grow
  together; every stage must be a multiple of `scale` and fit in the training images.
- Synthetic sources are generated once, at the data module's configured `image_size`, when the data
  module is set up; later stages resize (or crop) those samples rather than drawing new ones.

Every stage's training loader is built once when fitting starts, so a bad stage (a size the data
cannot give) fails then with the data module's own message, not hours later. The current size and
batch size are logged every epoch as `image_size` and `batch_size`. The state (current stage and
schedule) is checkpointed; on resume the stage of the resumed epoch is applied from the schedule.

Changing the batch size changes the number of optimizer steps per epoch, so a schedule built from
`trainer.estimated_stepping_batches` (which sees only the first stage's loader) would be wrong;
`stepping_batches_per_epoch` / `estimated_stepping_batches` give the counts over the whole schedule,
and the project's tasks use them (`vision_lightning.optim.build_lr_scheduler`).
"""

from __future__ import annotations

import dataclasses
import math
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch.utils.data import IterableDataset

from vision_lightning.utils.errors import InputError


@dataclass
class ResizeStage:
    """From epoch `epoch` (0-based) on, train at `image_size` with `batch_size` (None: keep the batch
    size of the previous stage, or the data module's own for the first stage)."""

    epoch: int
    image_size: int
    batch_size: int | None = None


def _as_stage(value: ResizeStage | Mapping[str, Any], index: int) -> ResizeStage:
    if isinstance(value, ResizeStage):
        return value
    if isinstance(value, Mapping):
        try:
            return ResizeStage(**value)
        except TypeError:
            fields = ", ".join(f.name for f in dataclasses.fields(ResizeStage))
            raise InputError(
                f"ProgressiveResizing stage {index} {dict(value)} must have the keys {fields} (batch_size optional)"
            ) from None
    raise InputError(
        f"ProgressiveResizing stage {index} must be a ResizeStage or a mapping, got {type(value).__name__}"
    )


def _check_stages(stages: list[ResizeStage]) -> None:
    """One sentence naming the first bad stage: the schedule starts at epoch 0, epochs increase."""
    if not stages:
        raise InputError("ProgressiveResizing needs at least one stage (e.g. [{epoch: 0, image_size: 128}])")
    for index, stage in enumerate(stages):
        where = f"ProgressiveResizing stage {index} ({stage})"
        for name in ("epoch", "image_size", "batch_size"):
            value = getattr(stage, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InputError(f"{where}: {name} must be a whole number, got {value!r}")
        if index == 0 and stage.epoch != 0:
            raise InputError(
                f"{where}: the first stage must start at epoch 0 (it sets the size the run starts with)"
            )
        if index and stage.epoch <= stages[index - 1].epoch:
            raise InputError(
                f"{where}: epochs must increase from stage to stage, but the previous stage starts at "
                f"epoch {stages[index - 1].epoch}"
            )
        if stage.image_size < 1:
            raise InputError(f"{where}: image_size must be positive")
        if stage.batch_size is not None and stage.batch_size < 1:
            raise InputError(f"{where}: batch_size must be positive (or left out to keep the previous one)")


@dataclass(frozen=True)
class _Base:
    """The data module's own settings when fitting first started: the reference for `resize` and for
    stages that keep the batch size."""

    image_size: int
    batch_size: int
    resize: int | None


class ProgressiveResizing(pl.Callback):
    """Change the data module's `image_size` and `batch_size` at chosen epochs and rebuild its loaders.

    Args:
        stages: the schedule, e.g. `[{epoch: 0, image_size: 128, batch_size: 64}, {epoch: 4,
            image_size: 512, batch_size: 16}, {epoch: 8, image_size: 1024, batch_size: 4}]`. The first
            stage starts at epoch 0, epochs strictly increase; a stage lasts until the next one (the
            last until the end of training). `batch_size` may be left out to keep the previous one.

    The data module must be the trainer's (`trainer.fit(model, datamodule=...)`) and have `image_size`
    and `batch_size` attributes that its loaders read when built (all of this project's do). After
    `fit` the data module stays at the stage of the last epoch, so `trainer.validate/test` evaluate at
    the final size. A `configure_optimizers` of your own that sizes a schedule should read
    `vision_lightning.optim.estimated_stepping_batches(trainer)` (or this callback's
    `estimated_stepping_batches`) rather than `trainer.estimated_stepping_batches`.
    """

    def __init__(self, stages: Sequence[ResizeStage]) -> None:
        super().__init__()
        if isinstance(stages, str | bytes | Mapping) or not isinstance(stages, Sequence):
            raise InputError(
                f"ProgressiveResizing stages must be a list of stages, got {type(stages).__name__}"
            )
        self.stages = [_as_stage(stage, index) for index, stage in enumerate(stages)]
        _check_stages(self.stages)
        self.current_stage: ResizeStage | None = None  # the stage whose settings the data module has
        self._base: tuple[weakref.ref, _Base] | None = None
        self._batches: dict[tuple[int, int, int], int] = {}  # (id(dm), stage index, replicas) -> batches

    # ----------------------------------------------------------------- the schedule
    def stage_index(self, epoch: int) -> int:
        """The index of the stage that epoch `epoch` trains in."""
        return max(i for i, stage in enumerate(self.stages) if stage.epoch <= epoch)

    def _resolved(self, index: int, base: _Base) -> ResizeStage:
        """Stage `index` with its batch size filled in (a stage without one keeps the previous one)."""
        batch_size = base.batch_size
        for stage in self.stages[: index + 1]:
            batch_size = stage.batch_size if stage.batch_size is not None else batch_size
        return ResizeStage(self.stages[index].epoch, self.stages[index].image_size, batch_size)

    def _values(self, index: int, base: _Base) -> dict[str, int]:
        """The data module attributes of stage `index`."""
        stage = self._resolved(index, base)
        values = {"image_size": stage.image_size, "batch_size": stage.batch_size}
        if base.resize is not None:
            # Same ratio as the configured resize / image_size; never below the crop it feeds.
            values["resize"] = max(round(base.resize * stage.image_size / base.image_size), stage.image_size)
        return values

    # ----------------------------------------------------------------- the data module
    @staticmethod
    def _datamodule(trainer: pl.Trainer) -> pl.LightningDataModule:
        dm = trainer.datamodule
        if dm is None:
            raise InputError(
                "ProgressiveResizing needs a data module: pass it as trainer.fit(model, datamodule=...), "
                "not as dataloaders"
            )
        missing = [name for name in ("image_size", "batch_size") if not hasattr(dm, name)]
        if missing:
            raise InputError(
                f"ProgressiveResizing needs a data module with image_size and batch_size attributes; "
                f"{type(dm).__name__} has no {' or '.join(missing)}"
            )
        return dm

    def _base_of(self, dm: pl.LightningDataModule) -> _Base:
        """The data module's settings before this callback first changed them (kept per data module,
        so fitting the same data module again does not take a stage's size for the configured one)."""
        if self._base is not None and self._base[0]() is dm:
            return self._base[1]
        # `resize` scales with image_size when it is a size; detection's `resize: letterbox` is a mode
        resize = getattr(dm, "resize", None)
        resize = resize if isinstance(resize, int) and not isinstance(resize, bool) else None
        base = _Base(int(dm.image_size), int(dm.batch_size), resize)
        self._base = (weakref.ref(dm), base)
        return base

    @staticmethod
    @contextmanager
    def _values_set(dm: pl.LightningDataModule, values: dict[str, int]) -> Iterator[None]:
        """`dm` with `values` set for the duration (building a stage's loader to look at it)."""
        before = {name: getattr(dm, name) for name in values}
        try:
            for name, value in values.items():
                setattr(dm, name, value)
            yield
        finally:
            for name, value in before.items():
                setattr(dm, name, value)

    def _apply(self, trainer: pl.Trainer, epoch: int) -> bool:
        """Give the data module the settings of `epoch`'s stage; True (and loaders dropped so that
        Lightning rebuilds them) when that changed anything."""
        dm = self._datamodule(trainer)
        base = self._base_of(dm)
        index = self.stage_index(epoch)
        values = self._values(index, base)
        self.current_stage = self._resolved(index, base)
        before = {name: getattr(dm, name) for name in values}
        if before == values:
            return False
        for name, value in values.items():
            setattr(dm, name, value)
        change = ", ".join(f"{k} {before[k]} -> {v}" for k, v in values.items() if before[k] != v)
        rank_zero_info(f"ProgressiveResizing: epoch {epoch} (stage {index}): {change}")
        # Lightning's own way to force new loaders (tuner/batch_size_scaling.py `_reset_dataloaders`):
        # the fit loop and its validation loop build them again the next time they run.
        trainer.fit_loop._combined_loader = None
        trainer.fit_loop.epoch_loop.val_loop._combined_loader = None
        return True

    def _train_batches(self, trainer: pl.Trainer, dm: pl.LightningDataModule, index: int) -> int:
        """Training batches per device of stage `index`, from the stage's own loader (its dataset
        length and `drop_last`), split across devices as Lightning's DistributedSampler splits it."""
        kwargs = trainer.distributed_sampler_kwargs or {}
        # Lightning adds a DistributedSampler only when use_distributed_sampler is on (the default).
        distributed = getattr(trainer._accelerator_connector, "use_distributed_sampler", True)
        replicas = int(kwargs.get("num_replicas", 1)) if distributed else 1
        key = (id(dm), index, replicas)
        if key not in self._batches:
            with self._values_set(dm, self._values(index, self._base_of(dm))):
                loader = dm.train_dataloader()
            batch_size = getattr(loader, "batch_size", None)
            # A streamed (iterable) data set shares itself out across ranks: its length is per device.
            sampled = not isinstance(loader.dataset, IterableDataset)
            shared = getattr(loader.sampler, "num_replicas", 1) == replicas  # already a share per device
            if replicas > 1 and batch_size and sampled and not shared:
                per_device = math.ceil(len(loader.dataset) / replicas)  # DistributedSampler pads
                batches = per_device // batch_size if loader.drop_last else math.ceil(per_device / batch_size)
            else:
                batches = len(loader)
            self._batches[key] = batches
        return self._batches[key]

    def _check_all_stages(self, trainer: pl.Trainer) -> None:
        """Build every stage's training loader once, so a stage the data cannot give (a super-resolution
        crop that is not a multiple of the scale or larger than the images) fails now."""
        dm = self._datamodule(trainer)
        for index, stage in enumerate(self.stages):
            try:
                self._train_batches(trainer, dm, index)
            except InputError as error:
                raise InputError(
                    f"ProgressiveResizing stage {index} (epoch {stage.epoch}, image_size {stage.image_size}): {error}"
                ) from None

    # ----------------------------------------------------------------- optimizer steps
    def stepping_batches_per_epoch(self, trainer: pl.Trainer) -> list[int]:
        """Optimizer steps of every epoch of the run (the last one cut short by `max_steps`), with each
        epoch's stage's loader, `limit_train_batches` and `accumulate_grad_batches` as Lightning counts
        them; schedules that span the run (one-cycle, cosine) need their sum."""
        dm = self._datamodule(trainer)
        max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
        if max_epochs is None:  # not parsed yet: Lightning's own default
            max_epochs = 1000 if max_steps == -1 else -1
        if max_epochs == -1 and max_steps == -1:
            raise InputError(
                "a schedule over the whole run needs a finite trainer.max_epochs or trainer.max_steps"
            )
        limit, accumulate = trainer.limit_train_batches, trainer.accumulate_grad_batches
        steps: list[int] = []
        total, epoch = 0, 0
        while (max_epochs == -1 or epoch < max_epochs) and (max_steps == -1 or total < max_steps):
            batches = self._train_batches(trainer, dm, self.stage_index(epoch))
            # Lightning's _parse_num_batches: an int caps the batches, a float takes that fraction.
            batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
            count = math.ceil(batches / accumulate)  # a last partial accumulation still steps
            if max_steps != -1:
                count = min(count, max_steps - total)
            if count == 0 and max_epochs == -1:
                break  # no batches: Lightning stops training
            steps.append(count)
            total += count
            epoch += 1
        return steps

    def estimated_stepping_batches(self, trainer: pl.Trainer) -> int:
        """The number of optimizer steps of the whole run: `trainer.estimated_stepping_batches` for a
        schedule whose batch size (and so steps per epoch) changes."""
        return sum(self.stepping_batches_per_epoch(trainer))

    # ----------------------------------------------------------------- hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Check every stage, then start at the first (the sanity check and first loaders use it)."""
        if stage != "fit":
            return
        self._batches.clear()
        self._check_all_stages(trainer)
        self._apply(trainer, 0)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """On resume the epoch is known by now: validate at the resumed epoch's size."""
        self._apply(trainer, trainer.current_epoch)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The restored epoch's stage (a resumed run starts past epoch 0)."""
        self._apply(trainer, trainer.current_epoch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log this epoch's size, then switch to the next epoch's stage when it starts one."""
        dm = self._datamodule(trainer)
        pl_module.log("image_size", float(dm.image_size), on_step=False, on_epoch=True, sync_dist=True)
        pl_module.log("batch_size", float(dm.batch_size), on_step=False, on_epoch=True, sync_dist=True)
        following = trainer.current_epoch + 1
        if trainer.max_epochs is not None and trainer.max_epochs != -1 and following >= trainer.max_epochs:
            return  # the last epoch: keep the final size for evaluating after fit
        self._apply(trainer, following)

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "stage": dataclasses.asdict(self.current_stage) if self.current_stage else None,
            "stages": [dataclasses.asdict(stage) for stage in self.stages],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the current stage; the configured schedule decides the sizes from here on, and a
        schedule that differs from the checkpoint's is reported."""
        stage = state_dict.get("stage")
        self.current_stage = ResizeStage(**stage) if stage else None
        saved = state_dict.get("stages")
        if saved is not None and saved != [dataclasses.asdict(stage) for stage in self.stages]:
            rank_zero_warn(
                f"ProgressiveResizing: the checkpoint was trained with stages {saved}; resuming with the "
                f"configured stages {[dataclasses.asdict(s) for s in self.stages]}"
            )
