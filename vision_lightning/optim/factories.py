"""Optimizers and schedulers from injected factories, the Lightning way (`OptimizerCallable`,
`LRSchedulerCallable`): a class (`torch.optim.AdamW`), a `functools.partial`, what LightningCLI makes
of `{class_path: ..., init_args: ...}`, or that dict itself (as a checkpoint from Python stores it).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau

from vision_lightning.optim.schedules import run_length
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.hparams import callable_target, import_path, is_subclass, trusted_class_path


def _import_class(path: str, kind: str, base: tuple[type, ...]) -> type:
    """The class at `path`, if it is a `base` subclass that may be imported (`trusted_class_path`:
    a checkpoint must not make us import arbitrary code)."""
    if not trusted_class_path(path):
        raise InputError(f"{kind} {path!r}: give a class of torch.optim or of an imported module")
    cls = import_path(path)
    if cls is None:
        raise InputError(f"{kind} {path!r} is not a class that can be imported")
    if not is_subclass(cls, base):
        raise InputError(f"{kind} {path!r} is not a subclass of {' or '.join(b.__name__ for b in base)}")
    return cls


def resolve_factory(spec: Any, kind: str = "optimizer") -> Any:
    """A callable from `spec`: callables are returned as they are; `"torch.optim.SGD"` and
    `{"class_path": ..., "init_args": {...}}` are imported (optimizer or scheduler classes only)."""
    if spec is None or callable(spec):
        return spec
    base: tuple[type, ...] = (Optimizer,) if kind == "optimizer" else (LRScheduler, ReduceLROnPlateau)
    if isinstance(spec, str):
        return _import_class(spec, kind, base)
    if isinstance(spec, dict) and isinstance(spec.get("class_path"), str):
        cls = _import_class(spec["class_path"], kind, base)
        return functools.partial(cls, **dict(spec.get("init_args") or {}))
    raise InputError(f"{kind} must be a class, a callable or {{class_path, init_args}}, got {spec!r}")


def factory_argument(factory: Any, name: str) -> Any:
    """The value `factory` passes for argument `name` (its own keyword, else the class default)."""
    target, kwargs = callable_target(factory)
    if name in kwargs:
        return kwargs[name]
    try:
        parameter = inspect.signature(target).parameters.get(name)
    except (TypeError, ValueError):
        return None
    return None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default


def build_optimizer(factory: Any, groups: list[dict[str, Any]], lr: float | None = None) -> Optimizer:
    """`factory(groups)` (with `lr` when given, e.g. by the learning-rate finder), then each group's
    learning rate times its `lr_factor`."""
    own_rate = ["lr" in group for group in groups]  # torch fills the optimizer's rate into the dicts
    try:
        optimizer = factory(groups, lr=lr) if lr is not None else factory(groups)
    except (TypeError, ValueError) as error:
        raise InputError(f"optimizer: {error}") from None
    if not isinstance(optimizer, Optimizer):
        raise InputError(f"optimizer: the factory made a {type(optimizer).__name__}, not a torch Optimizer")
    for group, given in zip(optimizer.param_groups, own_rate):
        if not given:  # a group without its own rate: the optimizer's, times its factor
            group["lr"] = group["lr"] * group.get("lr_factor", 1.0)
    return optimizer


def build_lr_scheduler(
    factory: Any, optimizer: Optimizer, trainer: Any, monitor: str
) -> dict[str, Any] | None:
    """A Lightning `lr_scheduler` config for `factory(optimizer)`, or None without a factory.
    Schedules over the whole run (`run_length_arguments`) get its step counts and step every
    optimizer step; ReduceLROnPlateau follows `monitor`; the others step every epoch."""
    if factory is None:
        return None
    target, _ = callable_target(factory)
    extra = (
        run_length(trainer, getattr(target, "__name__", "schedule"))
        if getattr(target, "run_length_arguments", False)
        else {}
    )
    try:
        scheduler = factory(optimizer, **extra)
    except (TypeError, ValueError) as error:
        raise InputError(f"lr_scheduler: {error}") from None
    config: dict[str, Any] = {"scheduler": scheduler, "interval": getattr(scheduler, "interval", "epoch")}
    if isinstance(scheduler, ReduceLROnPlateau):
        config["monitor"] = monitor
    return config
