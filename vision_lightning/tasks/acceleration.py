"""Two switches every task has for running its network faster: `compile` and `channels_last`.

- `compile: true` (or `compile: {mode: max-autotune}`) compiles the task's network with
  `torch.compile`, in place (`nn.Module.compile`): the metrics, the loss bookkeeping and the
  Lightning hooks stay eager, and the state dict keeps its eager key names, so checkpoints move
  freely between compiled and eager runs. (A network wrapped by `torch.compile` elsewhere has
  `_orig_mod.` in its keys; the one weight loader matches those too.)
- `channels_last: true` stores the network's convolution weights and the images it receives in
  NHWC order, which CPUs (oneDNN) and tensor cores prefer (timm's `--channels-last`). The images are
  converted as they enter the network (a forward pre-hook), so every path (Lightning's steps,
  `predict_images`, a user's own call) gets them, and a data module's own `on_after_batch_transfer`
  stays free.

The first compiled step takes tens of seconds on a CPU, so compile pays off on long runs.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vision_lightning.utils.errors import InputError
from vision_lightning.utils.hparams import from_plain


@dataclass(frozen=True)
class CompileOptions:
    """`torch.compile` arguments: `mode` (`default`, `reduce-overhead`, `max-autotune`), `dynamic`
    shapes (None: decided after a size changes), `fullgraph` (fail on graph breaks) and `backend`."""

    mode: str | None = None
    dynamic: bool | None = None
    fullgraph: bool = False
    backend: str = "inductor"


def compile_options(value: bool | CompileOptions | dict | None) -> CompileOptions | None:
    """`compile` as given to a task: false/None (eager), true (defaults), options or their dict."""
    if value is None or value is False:
        return None
    if value is True:
        return CompileOptions()
    if isinstance(value, CompileOptions):
        return value
    if isinstance(value, dict):
        try:
            return from_plain(
                value, CompileOptions, "compile options"
            )  # also a checkpoint's {class_path, ...}
        except TypeError as error:
            raise InputError(f"compile: {error}; its options are mode, dynamic, fullgraph, backend") from None
    raise InputError(f"compile must be true, false or options such as {{mode: max-autotune}}, got {value!r}")


def to_channels_last(batch: Any) -> Any:
    """`batch` with its 4-D floating-point tensors (images) in channels-last memory order."""
    if isinstance(batch, Tensor):
        if batch.ndim == 4 and batch.is_floating_point():
            return batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, dict):
        return {key: to_channels_last(value) for key, value in batch.items()}
    if isinstance(batch, list | tuple) and not hasattr(batch, "_fields"):
        return type(batch)(to_channels_last(value) for value in batch)
    return batch


class Accelerated:
    """Mixin for a LightningModule: `compile` and `channels_last` applied to `networks()`.

    Call `set_acceleration(compile, channels_last)` in `__init__` and `accelerate()` once the
    networks exist."""

    compile_options: CompileOptions | None = None
    channels_last: bool = False

    def set_acceleration(self, compile: bool | CompileOptions | dict | None, channels_last: bool) -> None:
        if not isinstance(channels_last, bool):
            raise InputError(f"channels_last must be true or false, got {channels_last!r}")
        self.compile_options = compile_options(compile)
        self.channels_last = channels_last

    def networks(self) -> list[nn.Module]:
        """The modules that `compile` and `channels_last` apply to: the network being trained or
        run, not the metrics or the loss bookkeeping."""
        raise NotImplementedError

    def accelerate(self) -> None:
        for network in self.networks():
            if self.channels_last:
                network.to(memory_format=torch.channels_last)
                network.register_forward_pre_hook(_inputs_to_channels_last)
            if self.compile_options is not None:
                network.compile(**asdict(self.compile_options))

    def compile_networks_instead(self) -> None:
        """`trainer.fit(torch.compile(task))` makes Lightning compile the whole `training_step` (and the
        other steps), metric updates and logging included, which dynamo cannot trace (torchmetrics
        fails inside `update`). Undo that and compile the task's networks instead, as `compile: true`
        does, with a warning that says so. Call it from `setup`, which runs after Lightning's change."""
        context = getattr(self, "_compiler_ctx", None)
        if not context:
            return
        for name in ("forward", "training_step", "validation_step", "test_step", "predict_step"):
            self.__dict__.pop(name, None)  # Lightning set compiled copies on the instance
        self._compiler_ctx = None
        if self.compile_options is None:
            self.compile_options = CompileOptions()
            for network in self.networks():
                network.compile(**asdict(self.compile_options))
        warnings.warn(
            f"trainer.fit(torch.compile(task)) would compile {type(self).__name__}'s whole steps, metrics "
            "and logging included, which torch cannot trace; its network is compiled instead (as "
            "compile: true does, the way to ask for it)",
            stacklevel=2,
        )


def _inputs_to_channels_last(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    if torch.compiler.is_exporting():  # a memory order is no part of an exported graph (export/)
        return args
    return to_channels_last(args)
