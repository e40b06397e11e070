"""Learning-rate schedules that span the whole run, for `lr_scheduler:` in YAML or Python.

One-cycle and warm-up + cosine need the run's number of optimizer steps. Lightning's
`trainer.estimated_stepping_batches` multiplies the first training loader's length by the epochs,
which is wrong when a callback changes the batch size between epochs (progressive resizing): such a
callback follows the `StepSchedule` protocol and `estimated_stepping_batches(trainer)` asks it.
These schedulers take `total_steps` / `steps_per_epoch` left unset in configs: the task fills them
in `configure_optimizers` (any class with `run_length_arguments = True` gets them), and steps
them every optimizer step (`interval = "step"`).
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch.optim import Optimizer

from vision_lightning.utils.errors import InputError


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


def run_length(trainer: Any, name: str) -> dict[str, Any]:
    """`total_steps` and `steps_per_epoch` (one count per epoch, or None when every epoch is as long)
    of the coming run, for a schedule with `run_length_arguments`."""
    per_epoch = stepping_batches_per_epoch(trainer)
    total = sum(per_epoch) if per_epoch is not None else trainer.estimated_stepping_batches
    if not math.isfinite(total):
        raise InputError(f"lr_scheduler {name} needs a finite trainer.max_epochs or trainer.max_steps")
    if per_epoch is None:
        epochs = max(trainer.max_epochs or 1, 1)
        per_epoch = [max(int(total) // epochs, 1)] * epochs
    return {"total_steps": max(int(total), 1), "steps_per_epoch": per_epoch}


def _warmup_steps(warmup_epochs: float, per_epoch: list[int]) -> int:
    """Optimizer steps in the first `warmup_epochs` (fractions count part of the next epoch)."""
    whole = int(warmup_epochs)
    steps = sum(per_epoch[:whole])
    if whole < len(per_epoch):
        steps += (warmup_epochs - whole) * per_epoch[whole]
    return int(round(steps))


class WarmupCosineLR(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up over `warmup_epochs` (fractions allowed), then cosine decay to `min_factor` of
    each group's rate at the end of the run (timm's and most recipes' default schedule).

    `total_steps` / `steps_per_epoch` are filled by the task from the trainer; give them only when
    using the scheduler outside a vision_lightning task."""

    run_length_arguments = True
    interval = "step"

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_epochs: float = 0.0,
        min_factor: float = 0.0,
        total_steps: int | None = None,
        steps_per_epoch: list[int] | None = None,
    ) -> None:
        if total_steps is None:
            raise InputError(
                "WarmupCosineLR needs total_steps (a vision_lightning task fills it from the trainer)"
            )
        if warmup_epochs < 0 or not 0 <= min_factor <= 1:
            raise InputError(
                f"WarmupCosineLR needs warmup_epochs >= 0 and 0 <= min_factor <= 1, got {warmup_epochs}, {min_factor}"
            )
        per_epoch = steps_per_epoch or [total_steps]
        self.total_steps, self.min_factor = max(total_steps, 1), min_factor
        self.warmup_steps = _warmup_steps(warmup_epochs, per_epoch) if warmup_epochs else 0
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 1.0)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    def state_dict(self) -> dict[str, Any]:  # LambdaLR would try to save the bound method
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # LambdaLR's expects `lr_lambdas`
        self.__dict__.update({k: v for k, v in state_dict.items() if k != "lr_lambdas"})


class OneCycleLR(torch.optim.lr_scheduler.OneCycleLR):
    """torch's one-cycle policy over the whole run (fast.ai / Smith 2018), peaking at each group's
    learning rate (so discriminative rates keep their ratios); `total_steps` filled by the task."""

    run_length_arguments = True
    interval = "step"

    def __init__(
        self,
        optimizer: Optimizer,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        cycle_momentum: bool = True,
        total_steps: int | None = None,
        steps_per_epoch: list[int] | None = None,
    ) -> None:
        if total_steps is None:
            raise InputError(
                "OneCycleLR needs total_steps (a vision_lightning task fills it from the trainer)"
            )
        max_lr = [group["lr"] for group in optimizer.param_groups]
        super().__init__(
            optimizer, max_lr=max_lr, total_steps=total_steps, pct_start=pct_start,
            anneal_strategy=anneal_strategy, div_factor=div_factor, final_div_factor=final_div_factor,
            three_phase=three_phase, cycle_momentum=cycle_momentum,
        )  # fmt: skip
