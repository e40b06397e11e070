"""Losses and metrics in float32 whatever the Trainer's precision.

Under `bf16-mixed` / `16-mixed` the network's outputs arrive in half precision, and inside an
autocast region even float32 inputs are cast down again by matrix products and convolutions. smp's
Lovasz loss then fails (`dot` of bf16 and float32) and Dice, Jaccard and Tversky, SSIM and Gram
matrices silently lose precision. `in_float32` wraps a loss's or a metric's entry point: its tensor
arguments become float32 and autocast is off while it runs, so the figures do not depend on the
precision flag.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])

_AUTOCAST_DEVICES = ("cpu", "cuda", "mps", "xpu")


def float32(value: Any) -> Any:
    """`value` with every floating-point tensor (also inside lists, tuples and dicts) as float32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() and value.dtype != torch.float32 else value
    if isinstance(value, dict):
        return {key: float32(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(float32(item) for item in value)
    return value


@contextmanager
def autocast_off() -> Iterator[None]:
    """Leave every active autocast region for the duration of the block."""
    with ExitStack() as stack:
        for device in _AUTOCAST_DEVICES:
            try:
                enabled = torch.is_autocast_enabled(device)
            except (RuntimeError, TypeError):  # a device type this torch build does not know
                continue
            if enabled:
                stack.enter_context(torch.autocast(device, enabled=False))
        yield


def in_float32(function: F) -> F:
    """Run `function` on float32 copies of its tensor arguments with autocast off."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with autocast_off():
            return function(*float32(args), **float32(kwargs))

    return wrapper  # type: ignore[return-value]
