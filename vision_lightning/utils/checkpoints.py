"""Reading checkpoints safely: `weights_only=True` whatever the environment says, and one sentence
naming the file and what is wrong with it instead of torch's traceback.

`TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` makes `torch.load` unpickle arbitrary objects (run code) wherever
`weights_only` is left unset, as Lightning's `Trainer.fit(ckpt_path=...)` leaves it. Every load here
passes `weights_only=True` explicitly, and `SafeCheckpointIO` makes the Trainer's own loads do the same.
"""

from __future__ import annotations

import inspect
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.utilities.cloud_io import _load as pl_load
from lightning.pytorch.plugins.io.wrapper import _WrappingCheckpointIO

from vision_lightning.utils.errors import CheckpointError, MissingInputError
from vision_lightning.utils.hparams import import_path, trusted_class_path


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _is_remote(path: str | Path) -> bool:
    return "://" in str(path)


def _check_local_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise CheckpointError(
            f"{what} {path} is a folder, not a checkpoint file: give a file inside it (such as last.ckpt)"
        )
    if not path.is_file():
        raise MissingInputError(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes): it was never written completely")


def _why_unreadable(path: str | Path, error: BaseException) -> str:
    crafted = next((line.strip() for line in str(error).splitlines() if "GLOBAL" in line), None)
    if crafted:
        return (
            f"holds Python objects other than weights and plain values ({crafted.rstrip('.')}); it is "
            "refused because loading it could run code (only weights are read, weights_only=True)"
        )
    if not _is_remote(path) and not zipfile.is_zipfile(path):
        return "is not a complete PyTorch checkpoint (cut short, or not a checkpoint at all)"
    return f"cannot be read as a PyTorch checkpoint: {_first_line(error)}"


def read_checkpoint(
    path: str | Path, map_location: Any = "cpu", what: str = "checkpoint", mmap: bool = False
) -> Any:
    """A checkpoint's contents read with `weights_only=True`, or one sentence (CheckpointError,
    MissingInputError) naming `path` and why it cannot be used: missing, a folder, empty, cut short,
    not a checkpoint, or holding objects that only an unsafe load could build. `mmap` maps tensors instead of reading
    them (cheap checks of a local file's metadata)."""
    local = not _is_remote(path)
    if local:
        _check_local_file(Path(path), what)
    try:
        if mmap and local and zipfile.is_zipfile(path):  # torch maps only its zip format
            import torch

            data = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
        else:
            data = pl_load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"{what} {path} {_why_unreadable(path, error)}") from None
    if what != "checkpoint":
        return data  # a weights file: its reader says what it must hold
    if not isinstance(data, Mapping):
        raise CheckpointError(
            f"{what} {path} is not a Lightning checkpoint (it holds a {type(data).__name__})"
        )
    return dict(data)


def task_class_name(checkpoint: Mapping[str, Any]) -> str:
    """The class that wrote a checkpoint, as it records it (`task_class`, or the CLI's `_class_path`)."""
    hyper_parameters = checkpoint.get("hyper_parameters") or {}
    recorded = checkpoint.get("task_class") or hyper_parameters.get("_class_path") or ""
    return str(recorded)


def _short(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


def check_task_class(checkpoint: Mapping[str, Any], path: str | Path, model_class: type | str) -> None:
    """Refuse, in one sentence, a checkpoint written by a task unrelated to `model_class` (a class or
    a class path): a segmentation checkpoint given to a classifier. A class of the user's that cannot
    be imported safely is not checked here (loading the weights still is)."""
    recorded = task_class_name(checkpoint)
    if not recorded or not trusted_class_path(recorded):
        return
    written_by = import_path(recorded)
    model = import_path(model_class) if isinstance(model_class, str) else model_class
    if not (inspect.isclass(written_by) and inspect.isclass(model)):
        return
    if issubclass(model, written_by) or issubclass(written_by, model):
        return
    raise CheckpointError(
        f"checkpoint {path} was written by {written_by.__name__}, not {model.__name__}: use the "
        f"config it was trained with, or `predict_images --ckpt_path {path}` to predict without one"
    )


def _storage_on_cpu(storage: Any, location: Any) -> Any:
    return storage  # Lightning's default map_location: tensors stay where torch.load puts them (CPU)


class SafeCheckpointIO(_WrappingCheckpointIO):
    """The Trainer's checkpoint IO, reading with `weights_only=True` always and naming a bad file in
    one sentence; saving and removing are the wrapped IO's."""

    def load_checkpoint(
        self, path: Any, map_location: Callable | Any = _storage_on_cpu, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if weights_only is False:
            raise CheckpointError(
                "vision_lightning checkpoints hold only weights and plain values: load them with weights_only=True"
            )
        inner = self.checkpoint_io
        if inner is not None and type(inner).load_checkpoint is not _torch_load_checkpoint():
            return inner.load_checkpoint(path, map_location=map_location, weights_only=True)
        return read_checkpoint(path, map_location=map_location)


def _torch_load_checkpoint() -> Callable:
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    return TorchCheckpointIO.load_checkpoint


def guard_checkpoint_loading(trainer: pl.Trainer) -> None:
    """Make `trainer` read checkpoints through SafeCheckpointIO (idempotent). Called from a task's
    `setup`, which Lightning runs before it restores `ckpt_path`."""
    strategy = trainer.strategy
    current = strategy.checkpoint_io
    if not isinstance(current, SafeCheckpointIO):
        strategy.checkpoint_io = SafeCheckpointIO(current)
