"""Predicted images (super-resolved, stylised) as PNG files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vision_lightning.outputs.files import UniqueNames, save_png
from vision_lightning.outputs.run import current_run


class ImageSink:
    """One PNG per predicted image under `output_dir/images/`, named after its input file.

    The task's `predict_step` returns `{"path": [...], "images": [uint8 HxWx3 arrays]}`.
    """

    def __init__(self, output_dir: Path, suffix: str = "") -> None:
        self.folder = output_dir / "images"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.names = UniqueNames()
        self.run = current_run()
        self.count = 0

    def write(self, outputs: dict[str, Any], indices: Sequence[int] | None = None) -> None:
        for path, image in zip(outputs["path"], outputs["images"]):
            save_png(image, self.folder / f"{self.names(path)}.png", self.run)
            self.count += 1

    def close(self) -> Path:
        return self.folder

    def merge_parts(self, world_size: int) -> Path:
        return self.folder  # one file per image, each already in place
