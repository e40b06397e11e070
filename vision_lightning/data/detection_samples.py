"""The samples behind the detection sources, and the checks every annotation goes through.

A sample loads as `(uint8 HxWxC image, {"boxes": float (k, 4) xyxy original pixels, "labels": int64
(k,)}, name)`. Sources parse every annotation before training and hand each box to `BoxChecks`:

- malformed annotations (a wrong field count, a value that is not a number, a class out of range)
  are errors, collected over all files and raised together, each naming file:line (or object);
- boxes with no area (zero or negative width or height) and boxes entirely outside their image are
  dropped, with one warning naming the files and how many boxes each lost;
- boxes partly outside are clipped to the image; one warning names the files where a box reached
  more than 1% of the image's size past its edge (less is rounding, clipped quietly).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vision_lightning.utils.errors import InputError
from vision_lightning.utils.images import image_size_of, read_image

log = logging.getLogger(__name__)

#: a box may reach this share of the image's size past an edge before its clipping is reported
CLIP_TOLERANCE = 0.01


def _listed(counts: Counter, limit: int = 5) -> str:
    names = [f"{name} ({count})" for name, count in list(counts.items())[:limit]]
    more = f" and {len(counts) - limit} more" if len(counts) > limit else ""
    return ", ".join(names) + more


class BoxChecks:
    """Problems found while reading annotations: errors (raised together by `report`), dropped and
    clipped boxes (one warning each)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.dropped: Counter = Counter()
        self.clipped: Counter = Counter()

    def error(self, message: str) -> None:
        self.errors.append(message)

    def clean(self, boxes: np.ndarray, labels: np.ndarray, width: float, height: float, name: str):
        """`boxes` (k, 4) xyxy of an image of (`width`, `height`) (1, 1 for normalised boxes) clipped
        to it; those with no area before or after clipping dropped. Returns (boxes, labels)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if not len(boxes):
            return boxes.astype(np.float32), labels
        limits = np.array([width, height, width, height])
        clipped = np.clip(boxes, 0.0, limits)
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        valid &= (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        if (~valid).any():
            self.dropped[name] += int((~valid).sum())
        past = np.abs(boxes - clipped) / limits > CLIP_TOLERANCE
        if (past.any(axis=1) & valid).any():
            self.clipped[name] += int((past.any(axis=1) & valid).sum())
        return clipped[valid].astype(np.float32), labels[valid]

    def report(self, location: str) -> None:
        """Raise the errors as one InputError; warn once about dropped and once about clipped boxes."""
        if self.errors:
            if len(self.errors) == 1:
                raise InputError(self.errors[0])
            more = f" (and {len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
            raise InputError(
                f"{len(self.errors)} problems in the annotations of {location}{more}: "
                + "; ".join(self.errors[:5])
            )
        if self.dropped:
            log.warning(
                "Dropped %d box(es) with no area or entirely outside their image in %d file(s) of %s: %s",
                sum(self.dropped.values()), len(self.dropped), location, _listed(self.dropped),
            )  # fmt: skip
        if self.clipped:
            log.warning(
                "Clipped %d box(es) reaching more than %g%% of the image past its edge in %d file(s) of %s: %s",
                sum(self.clipped.values()), CLIP_TOLERANCE * 100, len(self.clipped), location,
                _listed(self.clipped),
            )  # fmt: skip


class BoxSamples:
    """Image files with their boxes: pixels, or normalised to [0, 1] (YOLO: multiplied by the
    image's size when it is read). `sizes` holds the (height, width) the annotations declare, when
    they do (COCO, VOC), which `problem` compares with the file."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        boxes: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        normalized: bool = False,
        sizes: Sequence[tuple[int, int] | None] | None = None,
        channels: int = 3,
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.boxes, self.labels = list(boxes), list(labels)
        self.normalized, self.channels = normalized, channels
        self.sizes = list(sizes) if sizes is not None else [None] * len(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def files(self, index: int) -> list[str]:
        return [self.paths[index]]

    def target(self, index: int, height: int, width: int) -> dict[str, np.ndarray]:
        boxes = self.boxes[index].astype(np.float32)
        if self.normalized:
            boxes = boxes * np.array([width, height, width, height], dtype=np.float32)
        return {"boxes": boxes.reshape(-1, 4), "labels": self.labels[index].astype(np.int64)}

    def load(self, index: int) -> tuple[np.ndarray, dict[str, Any], str]:
        image = read_image(self.paths[index], self.channels)
        return image, self.target(index, *image.shape[:2]), self.paths[index]

    def problem(self, index: int) -> str | None:
        """A declared image size that is not the file's (boxes would land elsewhere), or None."""
        declared = self.sizes[index]
        if declared is None:
            return None
        height, width = image_size_of(self.paths[index])
        if (height, width) != tuple(declared):
            return (
                f"the annotations give {self.paths[index]} as {declared[1]}x{declared[0]} but the file is "
                f"{width}x{height} (width x height)"
            )
        return None
