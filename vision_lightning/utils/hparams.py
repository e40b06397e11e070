"""Hyperparameters that a checkpoint can hold and `torch.load(weights_only=True)` can read back.

Lightning's `save_hyperparameters` stores whatever the constructor got: from the CLI that is the
parsed config (plain values, `class_path` dicts), but from Python it may be an optimizer factory,
a data source object or a path. `plain` turns those into plain values; an object it cannot describe
is left out (with its class name), never pickled.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib
import inspect
import sys
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from torch import nn

from vision_lightning.utils.errors import InputError

PRIMITIVES = (str, int, float, bool, type(None))


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def callable_target(factory: Any) -> tuple[type | Any, dict[str, Any]]:
    """The class (or function) a factory calls and its keyword arguments: `torch.optim.SGD` itself,
    `functools.partial(SGD, lr=0.1)`, or what jsonargparse makes of `{class_path, init_args}`."""
    if isinstance(factory, functools.partial):
        classes = [a for a in factory.args if inspect.isclass(a)]
        if classes:  # jsonargparse: partial(call_without_instantiate_context, instantiator, cls, **kw)
            return classes[-1], dict(factory.keywords)
        target, kwargs = callable_target(factory.func)
        return target, {**kwargs, **factory.keywords}
    return factory, {}


def describe_callable(factory: Any) -> dict[str, Any] | str:
    """`{"class_path": ..., "init_args": {...}}` of a class factory; the qualified name otherwise."""
    target, kwargs = callable_target(factory)
    name = class_path(target) if hasattr(target, "__qualname__") else repr(target)
    if inspect.isclass(target):
        return {"class_path": name, "init_args": plain(kwargs)}
    return name


def plain(value: Any) -> Any:
    """`value` as plain data (see the module docstring)."""
    if isinstance(value, PRIMITIVES):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return {"class_path": class_path(type(value)), "init_args": fields}
    if isinstance(value, nn.Module):
        return f"<module {type(value).__name__}>"
    init_args = getattr(value, "init_args", None)  # objects that keep their own arguments
    if isinstance(init_args, Mapping):
        return {"class_path": class_path(type(value)), "init_args": plain(init_args)}
    if callable(value):
        return describe_callable(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return value.item()
    return f"<{type(value).__name__}>"


#: where a class named in a file (a checkpoint, a config) may be imported from; any other module
#: must already be imported, so that reading a file never chooses code to run (as Lightning does)
TRUSTED_PREFIXES = ("torch.", "timm.", "vision_lightning.")


def trusted_class_path(path: str) -> bool:
    """Whether `path` may be imported: a class of torch, timm or this library, or of a module
    already imported."""
    module = path.rpartition(".")[0]
    return bool(module) and (path.startswith(TRUSTED_PREFIXES) or module in sys.modules)


def import_path(path: str) -> Any:
    """What `path` (`package.module.Name`) names, or None when nothing can be imported there."""
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name, None) if module else None
    except ImportError:
        return None


def is_subclass(value: Any, base: type | tuple[type, ...]) -> bool:
    return inspect.isclass(value) and issubclass(value, base)


def from_plain(value: Any, base: type, kind: str | None = None) -> Any:
    """The object that `plain` described, back: `{"class_path": ..., "init_args": {...}}` becomes an
    instance of that class, which must be `base` or a subclass; a dict without `class_path` holds
    `base`'s own arguments. Anything else (an instance already) is returned as is. This is how
    `load_from_checkpoint` rebuilds a data source or `LoaderOptions` from saved hyperparameters."""
    if not isinstance(value, Mapping):
        return value
    if "class_path" not in value:
        if inspect.isabstract(base):
            raise InputError(f"a {base.__name__} needs class_path (its kind), got {dict(value)}")
        return base(**value)
    path = str(value["class_path"])
    cls = import_path(path)
    if not is_subclass(cls, base):
        raise InputError(f"class_path {path!r} does not name a {kind or base.__name__}")
    return cls(**(value.get("init_args") or {}))


def internal(key: str) -> bool:
    """Keys Lightning's CLI adds for itself (`_instantiator`, `_class_path`): not hyperparameters to show."""
    return key.startswith("_")


class PlainHyperparameters:
    """Mixin for LightningModule / LightningDataModule: hyperparameters are stored as plain data, and
    loggers are shown only the user's own (no `_instantiator` column in TensorBoard's HParams)."""

    def save_hyperparameters(
        self, *args: Any, ignore: Any = None, frame: Any = None, logger: bool = True
    ) -> None:
        if frame is None:
            frame = inspect.currentframe().f_back
        # a ready module given to __init__ is not a hyperparameter (and Lightning would warn about it)
        modules = [k for k, v in frame.f_locals.items() if isinstance(v, nn.Module) and k != "self"]
        ignore = [ignore] if isinstance(ignore, str) else list(ignore or [])
        super().save_hyperparameters(*args, ignore=ignore + modules, frame=frame, logger=logger)  # type: ignore[misc]
        for key in [k for k, v in self._hparams.items() if isinstance(v, nn.Module)]:  # type: ignore[has-type]
            self._hparams.pop(key)  # a ready module is passed again to load_from_checkpoint, not saved
            self._hparams_initial.pop(key, None)  # type: ignore[has-type]
        self._hparams = type(self._hparams)(plain(dict(self._hparams)))  # type: ignore[has-type]
        self._hparams_initial = type(self._hparams_initial)(plain(dict(self._hparams_initial)))  # type: ignore[has-type]

    @property
    def hparams_initial(self):  # what Lightning hands the loggers
        initial = super().hparams_initial  # type: ignore[misc]
        return type(initial)({k: v for k, v in initial.items() if not internal(k)})
