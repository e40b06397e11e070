"""Non-finite weights found in one pass: one flag per tensor on its own device, one read back."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from vision_lightning.utils.errors import InputError


def first_nonfinite(tensors: Iterable[tuple[str, Any]]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, or None."""
    named = [
        (name, t) for name, t in tensors if isinstance(t, Tensor) and t.is_floating_point() and t.numel()
    ]
    if not named:
        return None
    by_device: dict[torch.device, list[int]] = {}
    for index, (_, tensor) in enumerate(named):
        by_device.setdefault(tensor.device, []).append(index)
    bad: list[int] = []
    for indices in by_device.values():  # one read back per device
        flags = torch.stack([~torch.isfinite(named[i][1]).all() for i in indices])
        bad += [i for i, flag in zip(indices, flags.tolist(), strict=True) if flag]
    return named[min(bad)][0] if bad else None


def describe_nonfinite(tensor: Tensor) -> str:
    """`nan`, `inf` or `nan and inf`: what a tensor known to be non-finite holds."""
    kinds = [kind for kind, found in (("nan", tensor.isnan().any()), ("inf", tensor.isinf().any())) if found]
    return " and ".join(kinds) or "no non-finite value"


def check_finite_weights(state_dict: Mapping[str, Any], source: str) -> None:
    """Refuse weights from a diverged run (`source`: "checkpoint PATH") in one sentence naming the
    first tensor that is not finite; cheap enough to run at every load."""
    name = first_nonfinite(state_dict.items())
    if name is not None:
        raise InputError(
            f"{source} holds weights that are not finite ({name} has {describe_nonfinite(state_dict[name])}): "
            "it was saved after training diverged; use a checkpoint from before, or train again with a "
            "lower learning rate or gradient clipping"
        )


@contextmanager
def loss_watch_suspended(model: Any) -> Iterator[None]:
    """No stop at a non-finite loss inside this block, for a task watching its loss
    (`tasks/divergence.LossWatch`): the learning-rate range test raises the rate until the loss
    diverges, and stops there itself."""
    watch = getattr(model, "_loss_watch", None)
    if watch is None:
        yield
        return
    watch.suspended = True
    try:
        yield
    finally:
        watch.suspended = False
        watch.reset()
