"""Optimizers and learning-rate schedules chosen by name in YAML (as timm's train script does).

Names keep checkpoints self-describing (plain hyperparameters) and configs short:
`optimizer: sgd`, `lr: 0.01`, `momentum: 0.9`, `nesterov: true`, `scheduler: onecycle`.

Schedules over the whole run (one-cycle, cosine) need the number of optimizer steps. Lightning's
`trainer.estimated_stepping_batches` multiplies the first training loader's length by the epochs,
which is wrong when a callback changes the batch size between epochs (progressive resizing); such a
callback follows the `StepSchedule` protocol and `estimated_stepping_batches(trainer)` asks it.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch.optim import Optimizer

from vision_lightning.utils.errors import InputError

OptimizerName = Literal["adam", "adamw", "sgd", "rmsprop"]
SchedulerName = Literal["step", "multistep", "exponential", "cosine", "onecycle", "plateau"]


def build_optimizer(
    param_groups: list[dict[str, Any]],
    name: str,
    lr: float,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> Optimizer:
    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            param_groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(param_groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise InputError(f"optimizer must be adam, adamw, sgd or rmsprop, got {name!r}")


class WarmupCosine:
    """Linear warm-up over `warmup_steps`, then cosine decay to `min_factor` of the base rate."""

    def __init__(self, total_steps: int, warmup_steps: int = 0, min_factor: float = 0.0) -> None:
        self.total_steps, self.warmup_steps, self.min_factor = max(total_steps, 1), warmup_steps, min_factor

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 1.0)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


@runtime_checkable
class StepSchedule(Protocol):
    """A callback that changes how many optimizer steps an epoch has (e.g. `ProgressiveResizing`,
    which changes the batch size): it counts the steps of every epoch of the coming run."""

    def stepping_batches_per_epoch(self, trainer: Any) -> list[int]:
        """Optimizer steps of each epoch, the last one cut short by `max_steps`."""
        ...


def stepping_batches_per_epoch(trainer: Any) -> list[int] | None:
    """The per-epoch optimizer steps from the trainer's `StepSchedule` callback, None without one."""
    for callback in getattr(trainer, "callbacks", None) or []:
        if isinstance(callback, StepSchedule):
            return callback.stepping_batches_per_epoch(trainer)
    return None


def estimated_stepping_batches(trainer: Any) -> int | float:
    """`trainer.estimated_stepping_batches`, counted by a `StepSchedule` callback when there is one.
    Use it in place of Lightning's in your own `configure_optimizers`."""
    per_epoch = stepping_batches_per_epoch(trainer)
    return sum(per_epoch) if per_epoch is not None else trainer.estimated_stepping_batches


def _warmup_steps(warmup_epochs: float, per_epoch: list[int] | None, total: int, epochs: int) -> int:
    """Optimizer steps in the first `warmup_epochs` (fractions count part of the next epoch)."""
    if per_epoch is None:
        return int(round(warmup_epochs * total / epochs))
    whole = int(warmup_epochs)
    steps = sum(per_epoch[:whole])
    if whole < len(per_epoch):
        steps += (warmup_epochs - whole) * per_epoch[whole]
    return int(round(steps))


def build_scheduler(
    optimizer: Optimizer,
    name: str | None,
    args: dict[str, Any] | None,
    trainer: Any,
    warmup_epochs: float = 0,
    monitor: str = "val_loss",
) -> dict[str, Any] | None:
    """A Lightning `lr_scheduler` config dict, or None; `args` go to the torch scheduler. One-cycle and
    cosine span `estimated_stepping_batches(trainer)` optimizer steps (see the module docstring)."""
    args = dict(args or {})
    if warmup_epochs and name != "cosine":
        raise InputError(
            f"warmup_epochs works with scheduler: cosine, not {name!r} (onecycle warms up itself)"
        )
    if name is None:
        return None
    if name in ("cosine", "onecycle"):
        per_epoch = stepping_batches_per_epoch(trainer)
        total = sum(per_epoch) if per_epoch is not None else trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise InputError(f"scheduler {name} needs a finite trainer.max_epochs or trainer.max_steps")
        total = int(total)
        if name == "onecycle":
            max_lr = [group["lr"] for group in optimizer.param_groups]
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.pop("max_lr", max_lr),
                                                            total_steps=total, **args)  # fmt: skip
        else:
            epochs = max(trainer.max_epochs or 1, 1)
            warmup_steps = _warmup_steps(warmup_epochs, per_epoch, total, epochs)
            factor = WarmupCosine(total, warmup_steps, args.pop("min_factor", 0.0))
            if args:
                raise InputError(f"scheduler cosine takes scheduler_args min_factor only, got {sorted(args)}")
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"scheduler": scheduler, "interval": "step"}
    classes = {
        "step": torch.optim.lr_scheduler.StepLR,
        "multistep": torch.optim.lr_scheduler.MultiStepLR,
        "exponential": torch.optim.lr_scheduler.ExponentialLR,
        "plateau": torch.optim.lr_scheduler.ReduceLROnPlateau,
    }
    if name not in classes:
        raise InputError(
            f"scheduler must be step, multistep, exponential, cosine, onecycle or plateau, got {name!r}"
        )
    try:
        scheduler = classes[name](optimizer, **args)
    except TypeError as error:
        raise InputError(f"scheduler {name}: bad scheduler_args {args} ({error})") from None
    config = {"scheduler": scheduler, "interval": "epoch"}
    if name == "plateau":
        config["monitor"] = monitor
    return config
