"""Output folders checked before a run starts writing to them."""

from __future__ import annotations

import tempfile
from pathlib import Path

from vision_lightning.utils.errors import InputError


def check_output_folder(path: str | Path, what: str) -> None:
    """Make the folder `path` (with its parents) and try writing in it, or refuse in one sentence
    naming `what` (the argument) and `path`: a file in its place or above it, no permission, a
    read-only filesystem. Checked before the work, not when the first result is due. Remote URLs
    (`s3://...`) are left to their filesystem."""
    if "://" in str(path):
        return
    folder = Path(path).expanduser()
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        where = "is a file" if blocking == folder else f"cannot be made: {blocking} is a file"
        raise InputError(f"{what} {path} {where}, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise InputError(f"{what} {path} cannot be written: {error.strerror or error}") from None
