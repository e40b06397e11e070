"""Stop training at the first non-finite loss (`nonfinite_loss: error`, the default) or warn once
(`warn`), without making every step wait for the accelerator.

Reading a CUDA loss back on every step would stall the pipeline once per step. Instead each step's
loss is copied to pinned host memory without blocking, with an event recorded behind it; later steps
read the copies whose events have completed (usually the previous step's), and an epoch's end, a
validation start and a backlog of more than `MAX_PENDING` steps wait for the rest. So a run stops
within a step or two of the first non-finite loss, before any checkpoint is written from its
weights (ModelCheckpoint refuses non-finite weights as well). On the CPU and other devices the loss
is read at once (median 16 microseconds a step in the recipe of benchmarks/overhead.py, under 0.1% of its
CPU step).

A step's batch is kept until its loss is known finite, so that a non-finite loss can say whether its
inputs or targets were non-finite too (checked only then: no per-step cost).
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from vision_lightning.utils.errors import InputError, TrainingDivergedError
from vision_lightning.utils.finite import describe_nonfinite

NonFiniteLoss = Literal["error", "warn"]
#: steps whose loss may stay unread before the oldest is waited for
MAX_PENDING = 4


@dataclass
class _Step:
    loss: Tensor  # a host copy (pinned, maybe still being written) or the loss itself on the CPU
    event: Any  # the CUDA event behind the copy, or None
    step: int
    epoch: int
    batch_idx: int
    batch: Any


class LossWatch:
    """What a task does at its loss's first NaN or infinity (see the module docstring)."""

    def __init__(self, mode: NonFiniteLoss = "error") -> None:
        if mode not in ("error", "warn"):
            raise InputError(f"nonfinite_loss must be error or warn, got {mode!r}")
        self.mode = mode
        self.done = False  # warned already: nothing more to watch
        self._pending: deque[_Step] = deque()
        self.step = 0  # the global step of the batch in training, set at its start
        self.suspended = False  # a learning-rate range test drives the loss to diverge on purpose

    def reset(self) -> None:
        self.done = False
        self._pending.clear()

    def add(self, loss: Any, batch: Any, batch_idx: int, trainer: Any) -> None:
        """Watch this training step's loss (`training_step`'s output, as `on_train_batch_end` gets it)."""
        if isinstance(loss, Mapping):
            loss = loss.get("loss")
        if self.done or self.suspended or not isinstance(loss, Tensor):
            return
        where = (self.step, trainer.current_epoch, batch_idx, batch)
        if getattr(trainer, "world_size", 1) > 1:
            loss = _with_decision_of_all(loss, trainer)
        elif not loss.is_cuda:  # read at once: microseconds on the CPU, a sync other devices need anyway
            value = loss.item()
            if not math.isfinite(value):
                self._nonfinite(_Step(loss, None, *where), value, trainer)
            return
        if not loss.is_cuda:
            self._pending.append(_Step(loss, None, *where))
            self.poll(trainer=trainer)
            return
        copy = loss.detach().to("cpu", non_blocking=True)  # lands in pinned memory
        event = torch.cuda.Event()
        event.record()
        self._pending.append(_Step(copy, event, *where))
        self.poll(wait=len(self._pending) > MAX_PENDING, trainer=trainer)

    def poll(self, wait: bool = False, trainer: Any = None) -> None:
        """Read the losses already copied (all of them with `wait`); act on the first non-finite one."""
        while self._pending:
            step = self._pending[0]
            if step.event is not None and not step.event.query():
                if not wait:
                    return
                step.event.synchronize()
            self._pending.popleft()
            values = step.loss.reshape(
                -1
            ).tolist()  # the loss, and under DDP whether any process's was not finite
            value = values[0]
            if not math.isfinite(value) or (len(values) > 1 and values[1] > 0):
                self._pending.clear()
                self._nonfinite(step, value, trainer)
                return

    def _nonfinite(self, step: _Step, value: float, trainer: Any) -> None:
        rate = _learning_rate(trainer)  # read now, not at every step: a step or two later at most
        lr = f" with learning rate {rate:g}" if rate is not None else ""
        where = f"step {step.step} (epoch {step.epoch}, batch {step.batch_idx})"
        if math.isfinite(value):  # finite here: another process's was not
            where += " in another process"
        inputs = nonfinite_batch_entries(step.batch)
        cause = (
            f"; the batch's {', '.join(inputs)} held non-finite values, so check the data"
            if inputs
            else "; try a lower learning rate or gradient clipping (trainer.gradient_clip_val)"
        )
        if self.mode == "warn":
            self.done = True
            warnings.warn(
                f"the training loss was {value} at {where}{lr}{cause}; training goes on (nonfinite_loss: warn)",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        raise TrainingDivergedError(
            f"training diverged: the loss was {value} at {where}{lr}{cause}; {_last_good(trainer)} "
            "(the model's nonfinite_loss: warn trains on regardless)",
            step=step.step,
            epoch=step.epoch,
            batch_idx=step.batch_idx,
            loss=value,
        )


def _with_decision_of_all(loss: Tensor, trainer: Any) -> Tensor:
    """(this process's loss, 1 if any process's loss is not finite): under DDP every process must
    stop at the same step, or the others wait for it in the next gradient all-reduce until a timeout."""
    local = loss.detach().float().reshape(1)
    anywhere = trainer.strategy.reduce((~torch.isfinite(local)).float(), reduce_op="max")
    return torch.cat([local, anywhere])


def _learning_rate(trainer: Any) -> float | None:
    """The highest learning rate of the first optimizer's groups (the head's), or None."""
    optimizers = getattr(trainer, "optimizers", None) or []
    rates = [group.get("lr") for group in optimizers[0].param_groups] if optimizers else []
    rates = [float(rate) for rate in rates if isinstance(rate, int | float | Tensor)]
    return max(rates) if rates else None


def _last_good(trainer: Any) -> str:
    """Which checkpoint holds the weights from before the divergence (none is written after it)."""
    callback = getattr(trainer, "checkpoint_callback", None)
    path = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
    if path:
        return f"the last good weights are in {path}"
    return "no checkpoint was written before it"


def nonfinite_batch_entries(batch: Any) -> list[str]:
    """The names of a batch's floating-point tensors holding NaN or infinity (`image`, `label`,
    or positions `0`, `1` of a tuple), with what they hold."""
    if isinstance(batch, Tensor):
        entries: list[tuple[str, Any]] = [("image", batch)]
    elif isinstance(batch, Mapping):
        entries = [(str(key), value) for key, value in batch.items()]
    elif isinstance(batch, Sequence) and not isinstance(batch, str):
        names = ("image", "target") if len(batch) == 2 else tuple(str(i) for i in range(len(batch)))
        entries = list(zip(names, batch, strict=False))
    else:
        return []
    found = []
    for name, value in entries:
        if isinstance(value, Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            found.append(f"{name!r} ({describe_nonfinite(value)})")
    return found
