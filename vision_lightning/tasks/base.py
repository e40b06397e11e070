"""BaseTask: what every task shares. A task reads top to bottom: `configure_models`,
`configure_losses`, `configure_metrics`, then its steps (the TorchGeo trainer layout).

Every task splits its network into `backbone` and `head`. All parameter groups are created in
`configure_optimizers`, frozen ones included: freezing only switches `requires_grad`, so
schedulers, DDP and resume never see a group appear mid-run (Lightning #8720, #20340, #21901).
The backbone may be one group or several of consecutive layers, each at its own fraction of `lr`
(discriminative learning rates, set by the `BackboneFinetuning` callback before the optimizer is
built).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.utilities.cloud_io import _load as pl_load
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torchmetrics import Metric

from vision_lightning.tasks.layer_groups import backbone_layer_groups
from vision_lightning.tasks.optimization import OptimizerName, SchedulerName, build_optimizer, build_scheduler
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.weights import check_compatible, strip_prefixes


class BaseTask(pl.LightningModule):
    backbone: nn.Module
    head: nn.Module
    #: the metric that checkpointing and plateau schedules follow
    monitor: str = "val_loss"
    #: The backbone's learning rates as fractions of `lr`, one per group of consecutive layers, first
    #: layers first (see `parameter_groups`); the head trains at `lr`. One group at `lr` unless
    #: `set_backbone_lr_factors` is called before the optimizer is built (BackboneFinetuning does so
    #: in `setup`, which Lightning calls before `configure_optimizers`).
    backbone_lr_factors: tuple[float, ...] = (1.0,)
    #: True while a callback (BackboneFinetuning) decides at every epoch start whether the backbone
    #: trains; a task's own freezing (SuperResModule's `new_layers_first`) then only adds to it.
    backbone_scheduled: bool = False
    _bn_stats_fixed: bool = False

    def __init__(
        self,
        optimizer: OptimizerName = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        nesterov: bool = False,
        scheduler: SchedulerName | None = None,
        scheduler_args: dict[str, Any] | None = None,
        warmup_epochs: float = 0,
        freeze_backbone: bool | int = False,
    ) -> None:
        super().__init__()
        # Arguments given as ready modules (a backbone, say) are not hyperparameters: keep them
        # aside for configure_models; everything else is saved so load_from_checkpoint(path) works.
        frame = inspect.currentframe().f_back
        self.init_modules = {
            k: v
            for k, v in frame.f_locals.items()
            if isinstance(v, nn.Module) and k not in ("self", "__class__")
        }
        self.save_hyperparameters(ignore=list(self.init_modules), frame=frame)
        self.configure_models()
        self.configure_losses()
        self.configure_metrics()
        if freeze_backbone is True:
            self.freeze_backbone()
        elif freeze_backbone:  # an int: the backbone's first N children (seed 002)
            self.freeze_backbone(children=int(freeze_backbone))

    def configure_models(self) -> None:
        raise NotImplementedError

    def configure_losses(self) -> None:
        pass

    def configure_metrics(self) -> None:
        pass

    # ---------------------------------------------------------------- freezing
    @property
    def backbone_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.backbone.parameters())

    def freeze_backbone(self, children: int | None = None) -> None:
        """Stop training the backbone, or its first `children` child modules: no gradients (their
        backward pass is skipped) and BatchNorm statistics fixed, so they are exact feature extractors."""
        parts = list(self.backbone.children()) if children is not None else [self.backbone]
        if children is not None and not 0 < children <= len(parts):
            raise InputError(f"freeze_backbone={children}: the backbone has {len(parts)} child modules")
        for part in parts[:children]:
            part.requires_grad_(False)
            part.eval()

    def unfreeze_backbone(self, freeze_bn_stats: bool = False) -> None:
        """Train the whole backbone again. `freeze_bn_stats` keeps its BatchNorm layers in eval mode,
        also through `train()`: running statistics stay those of the pretrained network while the
        affine weights train (seed 004, for small batches or a shifted data distribution)."""
        self.backbone.requires_grad_(True)
        self.backbone.train(self.training)
        self._bn_stats_fixed = freeze_bn_stats
        self._keep_bn_stats_fixed()

    def _keep_bn_stats_fixed(self) -> None:
        """The backbone's BatchNorm layers in eval mode while `unfreeze_backbone(freeze_bn_stats=True)`
        holds; called again by `train()`, which would otherwise put them back in training mode."""
        if self._bn_stats_fixed:
            for module in self.backbone.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()

    def _frozen_parts(self) -> list[nn.Module]:
        if self.backbone_frozen:
            return [self.backbone]
        return [
            child for child in self.backbone.children()
            if any(True for _ in child.parameters()) and not any(p.requires_grad for p in child.parameters())
        ]  # fmt: skip

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            for part in self._frozen_parts():
                part.eval()
            self._keep_bn_stats_fixed()
        return self

    def on_fit_start(self) -> None:
        """Fresh metric states: a `trainer.validate` before `fit` leaves them created under inference
        mode, and updating those in place during fit fails."""
        for module in self.modules():
            if isinstance(module, Metric):
                module.reset()

    # ---------------------------------------------------------------- metrics
    def _log_epoch_metrics(self, stage: str) -> None:
        """Log `<stage>_metrics` (a torchmetrics Metric or MetricCollection whose compute() gives a
        dict) once per epoch: they are updated every step, but handing Lightning the metrics on every
        step costs milliseconds per step for the same figures. Names get the `<stage>_` prefix;
        per-class names (`iou_class/<name>`) stay off the progress bar."""
        metrics = getattr(self, f"{stage}_metrics", None)
        if metrics is None:  # a task without metrics for this stage (style transfer has only losses)
            return
        parts = [metrics] if isinstance(metrics, Metric) else list(metrics.values())
        if any(part.update_count for part in parts):
            prefix = f"{stage}_"
            values = {k if k.startswith(prefix) else prefix + k: v for k, v in metrics.compute().items()}
            self.log_dict({k: v for k, v in values.items() if "/" not in k}, prog_bar=stage != "train")
            per_class = {k: v for k, v in values.items() if "/" in k}
            if per_class:
                self.log_dict(per_class)
        metrics.reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch_metrics("train")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    # ---------------------------------------------------------------- optimisation
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
        """Named groups, frozen parameters included (the optimizer skips parameters without grads):
        the backbone as `backbone` (or `backbone_0`, `backbone_1`, ... with several factors) at
        `lr * factor`, then everything else as `head` at `lr`. Each group records its `lr_factor`,
        so a resume can tell whether it continues the same groups."""
        lr, factors = self.hparams.lr, self.backbone_lr_factors
        layers = backbone_layer_groups(self.backbone, len(factors))
        names = ["backbone"] if len(factors) == 1 else [f"backbone_{i}" for i in range(len(factors))]
        groups = [
            {"name": name, "params": params, "lr": lr * factor, "lr_factor": factor}
            for name, params, factor in zip(names, layers, factors)
        ]
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        rest = [p for p in self.parameters() if id(p) not in backbone_ids]
        return [*groups, {"name": "head", "params": rest, "lr": lr, "lr_factor": 1.0}]

    def configure_optimizers(self):
        hp = self.hparams
        groups = [g for g in self.parameter_groups() if g["params"]]
        optimizer = build_optimizer(groups, hp.optimizer, hp.lr, hp.weight_decay, hp.momentum, hp.nesterov)
        scheduler = build_scheduler(
            optimizer, hp.scheduler, hp.scheduler_args, self.trainer, hp.warmup_epochs, self.monitor
        )
        return {"optimizer": optimizer, "lr_scheduler": scheduler} if scheduler else optimizer

    # ---------------------------------------------------------------- checkpoints
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another architecture with one sentence instead of torch's wall of keys."""
        state_dict = strip_prefixes(checkpoint.get("state_dict", {}))
        checkpoint["state_dict"] = state_dict
        differences = _architecture_differences(checkpoint.get("hyper_parameters", {}), self.hparams)
        path = getattr(self._trainer, "ckpt_path", None) if self._trainer is not None else None
        source = f"checkpoint {path}" if path else "checkpoint"
        source += f" trained with {', '.join(differences)}" if differences else ""
        check_compatible(self, state_dict, source, strict=self.strict_loading)
        self._check_resumed_groups(checkpoint, source)

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
        current = [
            (group["name"], group["lr_factor"]) for group in self.parameter_groups() if group["params"]
        ]
        if saved != current:
            trained = [factor for name, factor in saved if name != "head"]
            raise InputError(
                f"{source} was trained with backbone learning-rate factors {trained}, this run has "
                f"{list(self.backbone_lr_factors)}: resume with the same BackboneFinetuning backbone_lr_factor "
                "(no callback means [1.0])"
            )

    @classmethod
    def load_from_checkpoint(
        cls, checkpoint_path, map_location=None, hparams_file=None, strict=None, **kwargs
    ):
        """Lightning's, except that the network is not initialised from `pretrained` / `weights`
        again, and a refusal names the architecture arguments that differ (Lightning writes
        `kwargs` into the checkpoint's hyperparameters before `on_load_checkpoint` sees them)."""
        # The checkpoint holds every weight: no ImageNet download, no re-reading a `weights:` file.
        parameters = inspect.signature(cls.__init__).parameters
        for key, value in (("pretrained", False), ("weights", None)):
            if key in parameters:
                kwargs.setdefault(key, value)
        try:
            return super().load_from_checkpoint(checkpoint_path, map_location, hparams_file, strict, **kwargs)
        except InputError as error:
            trained = pl_load(checkpoint_path, map_location="cpu", weights_only=True).get(
                "hyper_parameters", {}
            )
            differences = _architecture_differences(trained, kwargs)
            if not differences:
                raise
            message = str(error).replace(
                "checkpoint", f"checkpoint {checkpoint_path} trained with {', '.join(differences)}", 1
            )
            raise InputError(message) from None


class NetworkTask(BaseTask):
    """A task whose whole network is `self.model`, built by name from `arch` or passed as a ready
    `nn.Module`; its child `backbone_child` is the backbone and its other children are the head
    (segmentation: `encoder`; super-resolution: `features`; style transfer: `encoder`)."""

    backbone_child: str = "encoder"
    task_name: str = "task"

    def _set_model(self, build: Callable[[], nn.Module]) -> None:
        """`self.model` from an `arch` module given to `__init__`, else from `build()`."""
        if "arch" in self.init_modules:
            self.model = self.init_modules.pop("arch")
            if not isinstance(getattr(self.model, self.backbone_child, None), nn.Module):
                article = "an" if self.backbone_child[0] in "aeiou" else "a"
                raise InputError(
                    f"a {self.task_name} network passed as arch needs {article} `{self.backbone_child}` attribute"
                )
        else:
            self.model = build()

    @property
    def backbone(self) -> nn.Module:
        return getattr(self.model, self.backbone_child)

    @property
    def head(self) -> nn.ModuleList:
        return nn.ModuleList(m for name, m in self.model.named_children() if name != self.backbone_child)


ARCHITECTURE_KEYS = ("backbone", "arch", "encoder", "num_classes", "label_mode", "mode", "head", "scale")


def _architecture_differences(trained: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    return [
        f"{key}={trained[key]!r} (this model: {current[key]!r})"
        for key in ARCHITECTURE_KEYS
        if key in trained and key in current and trained[key] != current[key]
    ]
