"""The files of an export: their names, the `existing` policy, and atomic writing (each file is
written under a temporary name and moved into place once all are written and checked;
`preprocessing.json` last, so its presence means a complete export)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from vision_lightning.outputs.run import new_run_id
from vision_lightning.utils.errors import InputError

Existing = Literal["error", "overwrite"]
FORMATS = {"onnx": "model.onnx", "torch_export": "model.pt2"}
PREPROCESSING = "preprocessing.json"
TORCHSCRIPT = (
    "TorchScript is deprecated in torch 2.x (torch.jit.trace says to use torch.export) and a trace "
    "freezes the image size: use torch_export (a .pt2 file) or onnx"
)


def check_formats(formats: Iterable[str]) -> list[str]:
    """The formats asked for, each known, in the order given, without repeats."""
    chosen = list(dict.fromkeys([formats] if isinstance(formats, str) else formats))
    if not chosen:
        raise InputError(f"formats: name one or more of {', '.join(FORMATS)}")
    for name in chosen:
        if name == "torchscript":
            raise InputError(f"format torchscript is not written: {TORCHSCRIPT}")
        if name not in FORMATS:
            raise InputError(f"unknown export format {name!r}: choose from {', '.join(FORMATS)}")
    return chosen


class ExportFiles:
    """The files `formats` write into `folder` (plus preprocessing.json), refused when one exists
    unless `existing` is `overwrite`."""

    def __init__(self, folder: str | Path, formats: Sequence[str], existing: str = "error") -> None:
        if existing not in ("error", "overwrite"):
            raise InputError(f"existing must be error or overwrite, got {existing!r}")
        self.folder = Path(folder)
        self.paths = {name: self.folder / FORMATS[name] for name in formats}
        self.paths["preprocessing"] = self.folder / PREPROCESSING
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"output folder {self.folder} is a file, not a folder")
        if existing == "error":
            for path in self.paths.values():
                if path.exists():
                    raise InputError(
                        f"{path} exists already: export into another folder, or set existing='overwrite' "
                        "(CLI: --existing overwrite)"
                    )
        self._run_id = new_run_id()
        self._partials: dict[str, Path] = {}

    def partial(self, name: str) -> Path:
        """The temporary path file `name` is written to (a hidden name unique to this export, ending
        as the file does: torch.export.save wants `.pt2`)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.paths[name]
        self._partials[name] = path.with_name(f".{path.stem}.{self._run_id}.partial{path.suffix}")
        return self._partials[name]

    def commit(self) -> dict[str, Path]:
        """Every written file moved into place, preprocessing.json last."""
        order = sorted(self._partials, key=lambda name: name == "preprocessing")
        for name in order:
            os.replace(self._partials[name], self.paths[name])
        self._partials.clear()
        return dict(self.paths)

    def discard(self) -> None:
        """Remove the temporary files (the export failed)."""
        for path in self._partials.values():
            path.unlink(missing_ok=True)
        self._partials.clear()
