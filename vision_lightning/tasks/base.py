"""BaseTask: what every task shares. A task reads top to bottom: `configure_models`,
`configure_losses`, `configure_metrics`, then its steps (the TorchGeo trainer layout).

Subclassing (a task of your own with one more argument and its own loss):

    class FocalClassifier(ClassifierModule):
        def __init__(self, gamma: float = 2.0, **kwargs):
            super().__init__(**kwargs)
            self.gamma = gamma
            self.save_hyperparameters()

        def configure_losses(self):
            self.loss_fn = FocalLoss(self.gamma)

The `configure_*` hooks run once the whole `__init__` chain has returned, so a subclass's own
attributes exist when its model, loss and metrics are built. Each concrete task saves its own
hyperparameters (`save_hyperparameters()` in its `__init__`), so `load_from_checkpoint(path)` needs
nothing else.

Optimizers and schedulers are injected (`optimizer: OptimizerCallable`, `lr_scheduler:
LRSchedulerCallable`, as Lightning's CLI does): `optimizer: {class_path: torch.optim.AdamW, init_args:
{lr: 3e-4, weight_decay: 0.05}}`. The task builds the parameter groups it hands them: the backbone
(one group, or several of consecutive layers each at its own fraction of the learning rate, set by
`BackboneFreezeUnfreeze`) and the head, with no weight decay on norms, biases and other 1-d
parameters. Every group exists from the first step, so schedulers, DDP and resume never see a group
appear mid-run (Lightning #8720, #20340, #21901).

Batches (one contract, also in the README):

| task | training / validation / test batch | predict batch |
|---|---|---|
| classification | `{"image": (N,C,H,W), "label": ids (N,) or rows (N,K)}` or `(image, label)` | `{"image"}`, optional `"path"` |
| segmentation | `{"image": (N,C,H,W), "mask": (N,H,W) ids or (N,K,H,W) planes}` or `(image, mask)` | `{"image"}`, optional `"path"`, `"size"` (original H, W) |
| super-resolution | `{"lr": (N,3,h,w), "hr": (N,3,sh,sw)}` in [0, 1] | `{"lr"}`, optional `"path"` |
| style transfer | `{"image": (N,3,H,W)}` in [0, 1] | `{"image"}`, optional `"path"` |
| features | `{"image", "label"?}` | `{"image"}`, optional `"path"`, `"label"` |
| detection | `{"image": (N,3,S,S), "boxes": [(k,4) xyxy input pixels], "labels": [(k,) ids 0..K-1], "path", "size": (N,2) original H, W, "scale": (N,4) sx, sy, pad_x, pad_y}` | the same without `"boxes"`, `"labels"` |

Without `"path"`, outputs are named by index (`image_000012`); without `"size"`, masks keep the
input size.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torchmetrics import Metric

from vision_lightning.models.freezing import freeze_module, is_frozen, keep_batchnorm_fixed, unfreeze_module
from vision_lightning.optim import (
    backbone_layer_groups,
    build_lr_scheduler,
    build_optimizer,
    parameter_groups,
)
from vision_lightning.optim.factories import factory_argument, resolve_factory
from vision_lightning.outputs.files import BatchNames
from vision_lightning.outputs.run import OutputRun, write_run
from vision_lightning.tasks.acceleration import Accelerated, CompileOptions
from vision_lightning.tasks.divergence import LossWatch, NonFiniteLoss
from vision_lightning.utils.checkpoints import check_task_class, guard_checkpoint_loading, read_checkpoint
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.finite import check_finite_weights
from vision_lightning.utils.hparams import PlainHyperparameters
from vision_lightning.utils.images import drop_bad_images, list_images, read_image
from vision_lightning.utils.loggers import StepLogGate, describe_run, no_default_hp_metric
from vision_lightning.utils.rng import rng_states, set_rng_states
from vision_lightning.utils.weights import check_compatible, match_keys


class _BuildAfterInit(type):
    """Runs `_configure()` once the whole `__init__` chain of a task has returned, so the
    `configure_*` hooks see every attribute a subclass sets after `super().__init__()`."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        task = super().__call__(*args, **kwargs)
        if not task._configured:
            task._configure()
        return task

    @property
    def __signature__(cls) -> inspect.Signature:  # `inspect.signature(Task)` shows `__init__`'s arguments
        signature = inspect.signature(cls.__init__)
        return signature.replace(parameters=list(signature.parameters.values())[1:])


class BaseTask(Accelerated, PlainHyperparameters, pl.LightningModule, metaclass=_BuildAfterInit):
    backbone: nn.Module
    head: nn.Module
    #: the metric that checkpointing, plateau schedules and TensorBoard's HParams follow
    monitor: str = "val/loss"
    #: whether `monitor` is better lower (`min`) or higher (`max`); the CLI's checkpoint follows both
    monitor_mode: Literal["min", "max"] = "min"
    #: The backbone's learning rates as fractions of the optimizer's, one per group of consecutive
    #: layers, first layers first; the head trains at the optimizer's rate. `BackboneFreezeUnfreeze`
    #: sets them in `setup`, which Lightning calls before `configure_optimizers`.
    backbone_lr_factors: tuple[float, ...] = (1.0,)
    #: True while a callback (BackboneFreezeUnfreeze) decides at every epoch start whether the
    #: backbone trains; a task's own freezing (SuperResModule's `new_layers_first`) then only adds to it.
    backbone_scheduled: bool = False
    _bn_stats_fixed: bool = False
    _configured: bool = False

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        freeze_backbone: bool | int = False,
        compile: bool | CompileOptions = False,
        channels_last: bool = False,
        nonfinite_loss: NonFiniteLoss = "error",
        tta: bool = False,
    ) -> None:
        """The arguments every task shares (concrete tasks pass `compile`, `channels_last` and
        `nonfinite_loss` on through `**kwargs`; see `vision_lightning.tasks.acceleration`).
        `nonfinite_loss`: at the first NaN or infinite training loss, `error` stops the run with a
        `TrainingDivergedError`; `warn` warns once and trains on (`vision_lightning.tasks.divergence`).
        `tta`: test-time augmentation in `test` and `predict` (`vision_lightning.tasks.tta`)."""
        super().__init__()
        self.tta = tta
        self._loss_watch = LossWatch(nonfinite_loss)
        self.set_acceleration(compile, channels_last)
        self.optimizer_factory = resolve_factory(optimizer, "optimizer")
        self.lr_scheduler_factory = resolve_factory(lr_scheduler, "lr_scheduler")
        if not (
            isinstance(freeze_backbone, bool) or (isinstance(freeze_backbone, int) and freeze_backbone >= 0)
        ):
            raise InputError(
                f"freeze_backbone must be true, false or a number of children, got {freeze_backbone!r}"
            )
        self.freeze_backbone_setting = freeze_backbone
        self._lr: float | None = None
        self._batch_names = BatchNames()
        self._loss_step_gate = StepLogGate()
        #: how evaluation prepared images (from the data module; saved in checkpoints) for `predict_images`
        self.preprocessing: dict[str, Any] = {}

    def hold_module(self, name: str, value: Any) -> None:
        """Keep a ready `nn.Module` given to `__init__` (a backbone, an arch) for `configure_models`,
        outside the module tree until it is placed there (a name or None is kept as None). Such a
        module is not a hyperparameter: `load_from_checkpoint` then needs it passed again."""
        held = self.__dict__.setdefault("_given_modules", {})
        held[name] = value if isinstance(value, nn.Module) else None

    @property
    def given_modules(self) -> dict[str, nn.Module | None]:
        return self.__dict__.setdefault("_given_modules", {})

    def _configure(self) -> None:
        self._configured = True
        self.configure_models()
        self.accelerate()
        self.configure_losses()
        self.configure_metrics()
        freeze = self.freeze_backbone_setting
        if freeze is True:
            self.freeze_backbone()
        elif freeze:  # an int: the backbone's first N children (seed 002)
            self.freeze_backbone(children=int(freeze))

    def configure_models(self) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------------- test-time augmentation
    #: why the task has no test-time augmentation (None: it has, `augmented_forward`)
    no_tta_reason: str | None = "it has no test-time augmentation"

    @property
    def tta(self) -> bool:
        """Test-time augmentation in `test` and `predict` (and `predict_images`); never in
        validation. Settable on a loaded task: `task.tta = True`."""
        return self.__dict__.get("_tta", False)

    @tta.setter
    def tta(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise InputError(f"tta must be true or false, got {value!r}")
        if value and self.no_tta_reason is not None:
            raise InputError(
                f"tta: {type(self).__name__} cannot use test-time augmentation: {self.no_tta_reason}"
            )
        self.__dict__["_tta"] = value

    def evaluation_forward(self, inputs: Tensor) -> Tensor:
        """The network's output in `test` and `predict`: `self(inputs)`, or with `tta` the mean
        over the task's test-time augmentations (`augmented_forward`)."""
        return self.augmented_forward(inputs) if self.tta else self(inputs)

    def augmented_forward(self, inputs: Tensor) -> Tensor:
        """`forward`'s output averaged over test-time augmentations, transformed back (see `tasks/tta.py`)."""
        raise NotImplementedError

    def configure_losses(self) -> None:
        pass

    def networks(self) -> list[nn.Module]:
        """What `compile` and `channels_last` apply to: the backbone and the head."""
        return [self.backbone, self.head]

    def configure_metrics(self) -> None:
        pass

    @property
    def data_config(self) -> dict[str, Any] | None:
        """The preprocessing the network was pretrained with (`mean`, `std`, `input_size`): a timm
        backbone's pretrained config. Data modules use it when their mean/std are not given."""
        return None

    # ---------------------------------------------------------------- batches
    @staticmethod
    def unpack(batch: Any, target_key: str | None = None) -> dict[str, Any]:
        """The batch as a dict: `(image, target)` tuples of a data module of your own become
        `{"image": image, target_key: target}`; a lone tensor is `{"image": tensor}`."""
        if isinstance(batch, Mapping):
            return dict(batch)
        if isinstance(batch, Tensor):
            return {"image": batch}
        if isinstance(batch, Sequence) and 1 <= len(batch) <= 2 and isinstance(batch[0], Tensor):
            if len(batch) == 1 or target_key is None:
                return {"image": batch[0]}
            return {"image": batch[0], target_key: batch[1]}
        raise InputError(
            f"a batch must be a dict or an (image, target) tuple, got {type(batch).__name__}"
            + (f" of {len(batch)} items" if isinstance(batch, Sequence) else "")
        )

    def batch_names(self, batch: Mapping[str, Any], count: int, batch_idx: int) -> list[str]:
        """The batch's `"path"` entries, or names by position (`image_000012`) without them."""
        return self._batch_names(batch, count, batch_idx, self._trainer)

    # ---------------------------------------------------------------- freezing
    @property
    def backbone_frozen(self) -> bool:
        return is_frozen(self.backbone)

    def freeze_backbone(self, children: int | None = None) -> None:
        """Stop training the backbone, or its first `children` child modules: no gradients (their
        backward pass is skipped) and BatchNorm statistics fixed, so they are exact feature extractors."""
        parts = list(self.backbone.children()) if children is not None else [self.backbone]
        if children is not None and not 0 < children <= len(parts):
            raise InputError(f"freeze_backbone={children}: the backbone has {len(parts)} child modules")
        for part in parts[:children]:
            freeze_module(part)

    def unfreeze_backbone(self, freeze_bn_stats: bool = False) -> None:
        """Train the whole backbone again. `freeze_bn_stats` keeps its BatchNorm layers in eval mode,
        also through `train()`: running statistics stay those of the pretrained network while the
        affine weights train (seed 004, for small batches or a shifted data distribution)."""
        unfreeze_module(self.backbone, training=self.training, freeze_bn_stats=freeze_bn_stats)
        self._bn_stats_fixed = freeze_bn_stats

    def _frozen_parts(self) -> list[nn.Module]:
        if self.backbone_frozen:
            return [self.backbone]
        return [
            child for child in self.backbone.children()
            if any(True for _ in child.parameters()) and is_frozen(child)
        ]  # fmt: skip

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self._configured:
            for part in self._frozen_parts():
                part.eval()
            if self._bn_stats_fixed:
                keep_batchnorm_fixed(self.backbone)
        return self

    # ---------------------------------------------------------------- logging
    def log_loss(
        self, stage: str, loss: Tensor, batch_size: int, parts: Mapping[str, Tensor] | None = None
    ) -> None:
        """`<stage>/loss` (training: per step and per epoch), and each term of a combined loss."""
        # Epoch values are reduced over processes, so checkpoint selection, plateau schedules and
        # early stopping follow the whole data set under DDP. Training sums are kept here and reduced
        # in `on_train_epoch_end`, which every process runs: a `sync_dist` epoch value logged from
        # `training_step` is reduced whenever something first reads it, and the progress bar, which
        # only rank 0 draws, reads it at the epoch's end, leaving rank 0 waiting forever for the others
        # (Lightning #19604, #21264). The per-step training value is each process's own.
        if stage == "train":
            if self._loss_step_gate.due(self._trainer):  # the steps a logger or the progress bar shows
                self.log("train/loss_step", loss, on_step=True, prog_bar=True, batch_size=batch_size)
            self._add_to_epoch("train/loss_epoch", loss, batch_size)
            for name, value in (parts or {}).items():
                self._add_to_epoch(f"train/loss_{name}", value, batch_size)
            return
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True, batch_size=batch_size, sync_dist=True)
        for name, value in (parts or {}).items():
            self.log(f"{stage}/loss_{name}", value, on_epoch=True, batch_size=batch_size, sync_dist=True)

    def _add_to_epoch(self, name: str, value: Tensor, batch_size: int) -> None:
        """Add a training value to its epoch's (sum over images, images) pair; the count stays a
        number until the epoch's end, so a step costs two tensor operations."""
        sums = self.__dict__.setdefault("_epoch_sums", {})
        total, images = sums.get(name, (0.0, 0))
        sums[name] = (value.detach().float() * batch_size + total, images + batch_size)

    def _log_epoch_sums(self) -> None:
        """Each training value's mean over the epoch's images of every process."""
        sums, self.__dict__["_epoch_sums"] = self.__dict__.get("_epoch_sums", {}), {}
        for name in sorted(sums):  # one order on every process: each reduction meets its partners
            value, images = sums[name]
            total = torch.stack([value, value.new_tensor(float(images))])
            if self._trainer is not None and self.trainer.world_size > 1:
                total = self.trainer.strategy.reduce(total, reduce_op="sum")
            # already global: the reduction Lightning adds changes nothing and keeps it quiet
            self.log(name, total[0] / total[1].clamp_min(1), sync_dist=True)

    def _log_epoch_metrics(self, stage: str) -> None:
        """Log `<stage>_metrics` (a torchmetrics Metric or MetricCollection whose compute() gives a
        dict) once per epoch as `<stage>/<name>`: they are updated every step, but handing Lightning
        the metrics on every step costs milliseconds per step for the same figures. Per-class values
        (`<stage>/iou_class/<name>`) stay off the progress bar."""
        metrics = getattr(self, f"{stage}_metrics", None)
        if metrics is None:  # a task without metrics for this stage (style transfer has only losses)
            return
        parts = [metrics] if isinstance(metrics, Metric) else list(metrics.values())
        if any(part.update_count for part in parts):
            prefix = f"{stage}/"
            values = {k if k.startswith(prefix) else prefix + k: v for k, v in metrics.compute().items()}
            # compute() has already gathered every process's counts: the reduction changes no value,
            # it tells Lightning that the figure is global.
            self.log_dict(
                {k: v for k, v in values.items() if k.count("/") == 1},
                prog_bar=stage != "train",
                sync_dist=True,
            )
            per_class = {k: v for k, v in values.items() if k.count("/") > 1}
            if per_class:
                self.log_dict(per_class, sync_dist=True)
        metrics.reset()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._loss_watch.step = self.trainer.global_step

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._loss_watch.add(outputs, batch, batch_idx, self.trainer)

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == TrainerFn.FITTING:  # validation inside fit: not on a diverged state
            self._loss_watch.poll(wait=True, trainer=self.trainer)

    def on_train_epoch_end(self) -> None:
        self._loss_watch.poll(wait=True, trainer=self.trainer)
        self._log_epoch_sums()
        self._log_epoch_metrics("train")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def on_fit_start(self) -> None:
        """Fresh metric states (a `trainer.validate` before `fit` leaves them created under inference
        mode, and updating those in place during fit fails); TensorBoard's layout and HParams."""
        for module in self.modules():
            if isinstance(module, Metric):
                module.reset()
        self._loss_watch.reset()
        describe_run(self.trainer, self.hparams_initial, self.monitor, self.chart_layout())

    def chart_layout(self) -> dict[str, list[str]]:
        """TensorBoard charts that put training and validation curves of one quantity together
        (chart title: tag patterns)."""
        return {"loss": [r"train/loss_epoch", r"val/loss"]}

    # ---------------------------------------------------------------- optimisation
    @property
    def lr(self) -> float | None:
        """The optimizer's learning rate (the head's; the backbone's is a fraction of it). Setting it
        (the learning-rate finder does) overrides the optimizer's own."""
        return self._lr if self._lr is not None else factory_argument(self.optimizer_factory, "lr")

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = float(value)
        # the saved optimizer says so too: a checkpoint reloads with the rate it was trained at
        optimizer = getattr(self, "_hparams", {}).get("optimizer")
        if isinstance(optimizer, dict) and isinstance(optimizer.get("init_args"), dict):
            optimizer["init_args"]["lr"] = self._lr

    def set_backbone_lr_factors(self, factors: Sequence[float]) -> None:
        """Split the backbone into `len(factors)` groups of consecutive layers (first layers first)
        whose learning rates are `lr * factor` (seed 004: `[0.01, 0.1]` gives lr/100, lr/10 and the
        head lr). Call it before the optimizer is built: the groups are made in `configure_optimizers`."""
        factors = tuple(float(f) for f in factors)
        if not factors or not all(math.isfinite(f) and f > 0 for f in factors):
            raise InputError(f"backbone_lr_factor must be one or more positive numbers, got {list(factors)}")
        backbone_layer_groups(self.backbone, len(factors))  # an InputError if it has too few layers
        self.backbone_lr_factors = factors

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's groups (see `vision_lightning.optim.parameter_groups`)."""
        return parameter_groups(self, self.backbone_lr_factors)

    def configure_optimizers(self):
        optimizer = build_optimizer(self.optimizer_factory, self.parameter_groups(), self._lr)
        scheduler = build_lr_scheduler(self.lr_scheduler_factory, optimizer, self._trainer, self.monitor)
        return {"optimizer": optimizer, "lr_scheduler": scheduler} if scheduler else optimizer

    # ---------------------------------------------------------------- checkpoints and inference
    def setup(self, stage: str) -> None:
        self.compile_networks_instead()
        if self._trainer is None:  # called by hand, outside a Trainer: nothing to read from it
            return
        guard_checkpoint_loading(self._trainer)
        no_default_hp_metric(self._trainer)
        datamodule = getattr(self._trainer, "datamodule", None)
        if datamodule is not None:
            check_classes_agree(self.hparams, datamodule)
        if callable(getattr(datamodule, "preprocessing", None)):
            self.preprocessing = datamodule.preprocessing()
            self._check_input_size(self.preprocessing.get("image_size"))

    def _check_input_size(self, image_size: Any) -> None:
        """A network that takes one input size only (a timm ViT's pretrained config says so) named
        in one sentence, instead of an assertion deep inside timm at the first batch."""
        config = self.data_config or {}
        size = list(config.get("input_size") or [])[-2:]
        if (
            config.get("fixed_input_size")
            and size
            and isinstance(image_size, int)
            and [image_size] * 2 != size
        ):
            raise InputError(
                f"the backbone takes {size[0]}x{size[1]} images only (its pretrained config), but the data "
                f"module's image_size is {image_size}: set image_size: {size[0]}"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["preprocessing"] = dict(self.preprocessing)
        checkpoint["task_class"] = f"{type(self).__module__}.{type(self).__qualname__}"
        checkpoint["rng_states"] = rng_states()  # a resumed fit draws on as this one would

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another architecture with one sentence instead of torch's wall of keys."""
        self.preprocessing = dict(checkpoint.get("preprocessing") or self.preprocessing)
        state_dict = match_keys(self, checkpoint.get("state_dict", {}))
        checkpoint["state_dict"] = state_dict
        differences = _architecture_differences(checkpoint.get("hyper_parameters", {}), self.hparams)
        path = getattr(self._trainer, "ckpt_path", None) if self._trainer is not None else None
        check_task_class(checkpoint, path or "", type(self))
        source = f"checkpoint {path}" if path else "checkpoint"
        check_finite_weights(state_dict, source)  # predict, validate, test and resume alike
        source += f" trained with {', '.join(differences)}" if differences else ""
        check_compatible(self, state_dict, source, strict=self.strict_loading)
        self._check_resumed_groups(checkpoint, source)
        fitting = self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
        if not fitting and "current_model_state" in checkpoint:
            # Weight averaging (EMA) keeps the weights being trained beside the averaged `state_dict`
            # for resuming. A WeightAveraging callback that still holds an average (the Trainer of a
            # finished fit) would load them over the averaged ones in validate / test / predict.
            checkpoint["current_model_state"] = state_dict
        if fitting and "rng_states" in checkpoint:  # resuming: draw on as the saved run would have
            set_rng_states(checkpoint["rng_states"])

    def _check_resumed_groups(self, checkpoint: dict[str, Any], source: str) -> None:
        """A resumed fit must rebuild the optimizer groups it saved: other backbone learning-rate
        factors give other groups, which torch refuses with a parameter-group mismatch, or, with as
        many groups, silently replaces by the checkpoint's learning rates."""
        states = checkpoint.get("optimizer_states")
        if not states or self._trainer is None or self.trainer.state.fn != TrainerFn.FITTING:
            return
        saved = [(group.get("name"), group.get("lr_factor", 1.0)) for group in states[0]["param_groups"]]
        if any(name is None for name, _ in saved):  # groups of a task of the user's own
            return
        current = [(group["name"], group["lr_factor"]) for group in self.parameter_groups()]
        if saved != current:
            trained = sorted({factor for name, factor in saved if name.startswith("backbone")})
            raise InputError(
                f"{source} was trained with other optimizer groups (backbone learning-rate factors "
                f"{trained}; this run has {list(self.backbone_lr_factors)}): resume with the same "
                "BackboneFreezeUnfreeze backbone_lr_factor (no callback means [1.0])"
            )

    @classmethod
    def load_from_checkpoint(
        cls, checkpoint_path, map_location=None, hparams_file=None, strict=None, weights_only=True, **kwargs
    ):
        """Lightning's, except that the network is not initialised from `pretrained` / `weights`
        again, the file is read with `weights_only=True` whatever the environment says, and a
        refusal names the architecture arguments that differ."""
        if weights_only is not True:
            raise InputError(
                "vision_lightning checkpoints hold only weights and plain values: load them with weights_only=True"
            )
        check_task_class(read_checkpoint(checkpoint_path, mmap=True), checkpoint_path, cls)
        parameters = inspect.signature(cls.__init__).parameters
        for key, value in (("pretrained", False), ("weights", None)):
            if key in parameters:
                kwargs.setdefault(key, value)
        try:
            return super().load_from_checkpoint(
                checkpoint_path, map_location, hparams_file, strict, weights_only=True, **kwargs
            )
        except InputError as error:
            trained = read_checkpoint(checkpoint_path, mmap=True).get("hyper_parameters", {})
            differences = _architecture_differences(trained, kwargs)
            if not differences:
                if str(checkpoint_path) in str(error) or not str(error).startswith("checkpoint "):
                    raise
                raise type(error)(
                    str(error).replace("checkpoint", f"checkpoint {checkpoint_path}", 1)
                ) from None
            message = str(error).replace(
                "checkpoint", f"checkpoint {checkpoint_path} trained with {', '.join(differences)}", 1
            )
            raise InputError(message) from None

    @torch.no_grad()
    def predict_images(
        self, images: str | Path | Iterable[str | Path], batch_size: int = 8
    ) -> list[dict[str, Any]]:
        """Predict image files (a file, a folder searched recursively, or a list of files), preparing
        them the way evaluation did in training (the checkpoint's `preprocessing`): one result dict
        per image with its `"path"` (see each task's `prediction_results` for the rest)."""
        return [
            result
            for outputs in self._predict_files(images, batch_size)
            for result in self.prediction_results(outputs)
        ]

    @torch.no_grad()
    def predict_to_folder(
        self,
        images: str | Path | Iterable[str | Path],
        output_dir: str | Path,
        batch_size: int = 8,
        existing: Literal["error", "overwrite", "add"] = "error",
        checkpoint: str | Path | None = None,
    ) -> Path:
        """Like `predict_images`, but written as `predict` writes them (the task's `prediction_sink`),
        by a run that owns its files as PredictionWriter's do: `existing` says what to do with a
        folder that is not empty (`error`, `overwrite`, `add`); unreadable images are skipped with a
        warning and listed in `prediction_run.json` (with `checkpoint`, if given); none readable is an
        error."""
        paths = self._image_paths(images)
        what = f"images {images}" if isinstance(images, str | Path) else "the images given"
        keep = drop_bad_images(paths, "skip", what)
        if not keep:
            raise InputError(
                f"nothing could be read to predict in {what}: all {len(paths)} image(s) are unreadable"
            )
        run = OutputRun(output_dir, existing, option="existing (CLI predict_images: --existing)")
        return write_run(
            run,
            lambda: self.prediction_sink(Path(output_dir), ""),
            self._predict_files([paths[i] for i in keep], batch_size),
            skipped=[str(path) for i, path in enumerate(paths) if i not in set(keep)],
            checkpoint=None if checkpoint is None else str(checkpoint),
            task=type(self).__name__,
        )

    def _image_paths(self, images: str | Path | Iterable[str | Path]) -> list[Path]:
        """The image files of a file, a folder (searched recursively) or a list; missing files and
        no files at all are errors."""
        if isinstance(images, str | Path):
            images = list_images(images) if Path(images).is_dir() else [Path(images)]
        paths = [Path(p) for p in images]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise InputError(f"predict_images: no such image file(s): {', '.join(missing[:5])}")
        if not paths:
            raise InputError("predict_images: no images given (an empty folder?)")
        return paths

    def _predict_files(self, images: str | Path | Iterable[str | Path], batch_size: int) -> Iterable[Any]:
        """`predict_step` outputs for batches made from the image files (see `predict_batches`)."""
        paths = self._image_paths(images)
        channels = int(self.preprocessing.get("channels", 3))
        was_training = self.training
        self.eval()
        try:
            index = 0
            for start in range(0, len(paths), batch_size):
                chunk = paths[start : start + batch_size]
                arrays = [read_image(p, channels) for p in chunk]
                for batch in self.predict_batches(arrays, [str(p) for p in chunk]):
                    batch = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in batch.items()}
                    yield self.predict_step(batch, index)
                    index += 1
        finally:
            self.train(was_training)

    def predict_batches(self, images: list[Any], paths: list[str]) -> list[dict[str, Any]]:
        """Predict batches (the task's batch contract) of decoded HWC uint8 images."""
        raise NotImplementedError(f"{type(self).__name__} does not predict images from Python")

    def prediction_results(self, outputs: dict[str, Any]) -> list[dict[str, Any]]:
        """One result per image of a `predict_step` output."""
        raise NotImplementedError(f"{type(self).__name__} does not predict images from Python")

    # ---------------------------------------------------------------- export (vision_lightning/export)
    #: the names of `export_network`'s outputs, in the order it returns them
    export_outputs: tuple[str, ...] = ()
    #: False for networks that take pixels in [0, 1] with no mean/std (super-resolution, style transfer)
    export_normalized_inputs: bool = True

    @property
    def export_fixed_size(self) -> str | None:
        """Why the exported network takes `image_size` inputs only, where torch.export cannot see it
        (None: the heights and widths torch.export finds the network takes): a backbone whose
        pretrained config says it takes one size (a timm ViT)."""
        config = self.data_config or {}
        if config.get("fixed_input_size"):
            size = "x".join(map(str, list(config.get("input_size") or [])[-2:]))
            return f"the backbone takes {size} images only (its pretrained config)"
        return None

    def export_network(self) -> nn.Module:
        """The network as deployed (`vision_lightning.export`): a plain module, no task around it,
        taking one float batch (N, C, H, W) prepared as `preprocessing` says and returning a tensor
        or a tuple of tensors, named by `export_outputs`."""
        raise InputError(f"{type(self).__name__} cannot be exported: it defines no export_network")

    # ---------------------------------------------------------------- per-step cost
    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets `_current_fx_name` around every hook it calls, about 40 times a training
        # step; nn.Module's checks for parameters, buffers and submodules, none of which applies to
        # a hook's name, make each set several times slower than a plain attribute.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


class NetworkTask(BaseTask):
    """A task whose whole network is `self.model`, built by name from `arch` or passed as a ready
    `nn.Module`; its child `backbone_child` is the backbone and its other children are the head
    (segmentation: `encoder`; super-resolution: `features`; style transfer: `encoder`)."""

    backbone_child: str = "encoder"
    task_name: str = "task"

    def _set_model(self, arch: nn.Module | None, build) -> None:
        """`self.model` from a ready `arch` module, else from `build()`."""
        if arch is not None:
            if not isinstance(getattr(arch, self.backbone_child, None), nn.Module):
                article = "an" if self.backbone_child[0] in "aeiou" else "a"
                raise InputError(
                    f"a {self.task_name} network passed as arch needs {article} `{self.backbone_child}` attribute"
                )
            self.model = arch
        else:
            self.model = build()

    @property
    def backbone(self) -> nn.Module:
        return getattr(self.model, self.backbone_child)

    def networks(self) -> list[nn.Module]:
        return [self.model]

    @property
    def head(self) -> nn.ModuleList:
        return nn.ModuleList(m for name, m in self.model.named_children() if name != self.backbone_child)


def check_classes_agree(hparams: Mapping[str, Any], datamodule: Any) -> None:
    """A model built for other classes than its data's is an error naming both: the CLI links the
    data's classes into the model, a model built in Python must be given them (`datamodule.num_classes`)."""
    ours, theirs = hparams.get("num_classes"), getattr(datamodule, "num_classes", None)
    data_names = getattr(datamodule, "class_names", None)
    shown = (
        f" ({', '.join(map(str, data_names[:8]))}{', ...' if len(data_names) > 8 else ''})"
        if data_names
        else ""
    )
    if isinstance(ours, int) and isinstance(theirs, int) and ours != theirs:
        raise InputError(
            f"the model has num_classes={ours} but the data has {theirs} classes{shown}: build the model "
            "with num_classes=datamodule.num_classes"
        )
    names = hparams.get("class_names")
    if names is not None and data_names is not None and list(names) != list(data_names):
        raise InputError(
            f"the model's class_names {list(names)} are not the data's {list(data_names)}: the data "
            "decides the classes and their order"
        )


ARCHITECTURE_KEYS = ("backbone", "arch", "encoder", "num_classes", "label_mode", "mode", "head", "scale")


def _architecture_differences(trained: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    return [
        f"{key}={trained[key]!r} (this model: {current[key]!r})"
        for key in ARCHITECTURE_KEYS
        if key in trained and key in current and trained[key] != current[key]
    ]
