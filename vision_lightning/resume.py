"""`fit --ckpt_path FILE`: the checkpoint checked before anything is built, and the logs of the run it
continues.

The checkpoint must be readable and written by the task being fitted (one sentence otherwise, not a
traceback halfway through setup). When it lies where fit saves them, `<root>/lightning_logs/
version_N/checkpoints/`, the default TensorBoard logger writes on into `version_N` rather than a new
folder, from the checkpoint's step: `purge_step` makes TensorBoard hide what the interrupted run
logged after that step (a partial epoch, which the resumed run trains again), so every step is shown
once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vision_lightning.tasks.base import BaseTask
from vision_lightning.tasks.loading import read_checkpoint
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.hparams import import_path, is_subclass, trusted_class_path

#: what Lightning's `ckpt_path` accepts besides a file: checked by Lightning itself
SPECIAL_PATHS = ("last", "best", "hpc", "registry")
LOG_NAME = "lightning_logs"  # TensorBoardLogger's default `name`


def is_checkpoint_file(ckpt_path: str | None) -> bool:
    """Whether `ckpt_path` names a local file (not `last`, `best`, ... nor a URL)."""
    if not ckpt_path:
        return False
    text = str(ckpt_path)
    return "://" not in text and text.split(":")[0] not in SPECIAL_PATHS


def check_resume_checkpoint(ckpt_path: str | Path, model_class_path: str | None) -> dict[str, Any]:
    """The checkpoint `fit` resumes from, read once (weights only) and checked to be of the model
    class being fitted (or a class related to it by inheritance)."""
    path = Path(ckpt_path)
    data = read_checkpoint(path)
    if "state_dict" not in data or "global_step" not in data:
        raise InputError(f"checkpoint {path} is not a Lightning training checkpoint (no weights or step)")
    written_by = str(data.get("task_class") or (data.get("hyper_parameters") or {}).get("_class_path") or "")
    fitted = import_path(model_class_path) if model_class_path else None
    trained = import_path(written_by) if written_by and trusted_class_path(written_by) else None
    if is_subclass(fitted, BaseTask) and is_subclass(trained, BaseTask):
        if not (issubclass(fitted, trained) or issubclass(trained, fitted)):
            raise InputError(
                f"checkpoint {path} was written by {trained.__name__}, not {fitted.__name__}: "
                f"resume it with a {trained.__name__} config, or start a new fit without --ckpt_path"
            )
    return data


def resumed_version(ckpt_path: str | Path, save_dir: str | Path) -> int | None:
    """N when `ckpt_path` lies under `<save_dir>/lightning_logs/version_N/` (where fit saves
    checkpoints by default), else None (a new version is made)."""
    logs = (Path(save_dir) / LOG_NAME).resolve()
    try:
        parts = Path(ckpt_path).resolve().relative_to(logs).parts
    except ValueError:
        return None
    match = re.fullmatch(r"version_(\d+)", parts[0]) if len(parts) > 1 else None
    return int(match.group(1)) if match else None


def resumed_logger_args(
    ckpt_path: str | Path, save_dir: str | Path, checkpoint: dict[str, Any]
) -> dict[str, Any]:
    """TensorBoardLogger arguments that continue the checkpoint's run: its `version` and, as
    `purge_step`, the step it was saved at. Empty when the checkpoint is not in a run folder."""
    version = resumed_version(ckpt_path, save_dir)
    if version is None:
        return {}
    return {"version": version, "purge_step": int(checkpoint["global_step"])}
