"""`fit --ckpt_path FILE`: the checkpoint checked before anything is built, and the logs of the run it
continues.

The CLI reads the checkpoint first (`VisionCLI._parse_ckpt_path`: readable, of the task fitted) and
checks here that it holds a training state. When it lies where fit saves them, `<root>/lightning_logs/
version_N/checkpoints/`, the default TensorBoard logger writes on into `version_N` rather than a new
folder, from the checkpoint's step: `purge_step` makes TensorBoard hide what the interrupted run
logged after that step (a partial epoch, which the resumed run trains again), so every step is shown
once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vision_lightning.utils.errors import InputError

LOG_NAME = "lightning_logs"  # TensorBoardLogger's default `name`


def check_resumable(checkpoint: dict[str, Any], path: str | Path) -> None:
    """A checkpoint that fit can resume from holds weights and the step it was saved at (a file of
    weights alone does not)."""
    if "state_dict" not in checkpoint or "global_step" not in checkpoint:
        raise InputError(f"checkpoint {path} is not a Lightning training checkpoint (no weights or step)")


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
