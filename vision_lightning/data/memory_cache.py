"""The on-disk cache of decoded splits: one `.pt` file per split, found by what it describes and
trusted only when what it was made from has not changed.

Where: `in_memory.cache_dir`, else `$VISION_LIGHTNING_CACHE`, else `$XDG_CACHE_HOME/vision_lightning`,
else `~/.cache/vision_lightning` (data folders are often read-only or shared, so the cache is not
written next to them). Each file is named by a *place* key (the data module, the source's
description, the split, the image size, channels and resize rule) and holds a *content* key: the
place key plus every source file's path, size and modification time (or, for generated data, the
source's own description). A file whose content key differs is stale: it is rebuilt with a warning,
as is one that cannot be read. Files are written under a temporary name and renamed into place
(`os.replace`), so a crash or two processes writing at once never leave half a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

#: raised when the layout of cached files changes, so older files are rebuilt
FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """`$VISION_LIGHTNING_CACHE`, else `$XDG_CACHE_HOME/vision_lightning`, else `~/.cache/vision_lightning`."""
    if os.environ.get("VISION_LIGHTNING_CACHE"):
        return Path(os.environ["VISION_LIGHTNING_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vision_lightning"


def digest(value: Any) -> str:
    """A hex digest of `value` (JSON-able: str, numbers, lists, dicts; other objects by `str`)."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def file_stamps(paths: Iterable[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime in ns) of each file: what says that it changed; a missing file is (path, -1, -1)."""
    stamps = []
    for path in paths:
        try:
            stat = os.stat(path)
            stamps.append((str(path), stat.st_size, stat.st_mtime_ns))
        except OSError:
            stamps.append((str(path), -1, -1))
    return stamps


def cached(
    folder: Path,
    place: dict[str, Any],
    content: dict[str, Any],
    build: Callable[[], dict[str, Any]],
    check: Callable[[dict[str, Any]], str | None],
) -> dict[str, Any]:
    """The cached dict of tensors and lists at `place`, when it was made from `content`; else
    `build()` it and write it. `check` says what is wrong with a loaded dict (None: nothing)."""
    path = folder / f"split-{digest(place)[:20]}.pt"
    content_key = digest({"format": FORMAT_VERSION, "place": place, "content": content})
    if path.exists():
        problem = None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unreadable file is rebuilt
            stored, problem = None, f"cannot be read ({type(error).__name__}: {error})"
        if stored is not None:
            if not isinstance(stored, dict) or stored.get("key") != content_key:
                problem = "is stale (made from other files, or another split of them)"
            else:
                problem = check(stored)
        if problem is None:
            log.info("Read decoded images from %s", path)
            return stored
        log.warning("The in-memory cache %s %s: decoding the images again", path, problem)
    data = build()
    write_atomically(path, {**data, "key": content_key})
    return data


def write_atomically(path: Path, data: dict[str, Any]) -> None:
    """`torch.save(data)` to `path` under a temporary name in the same folder, then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(data, file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    log.info("Wrote decoded images to %s", path)
