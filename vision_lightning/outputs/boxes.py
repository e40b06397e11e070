"""Predicted boxes: a COCO-style JSON, a CSV, and optionally the images with their boxes drawn.

Everything is in the original image's pixels. `detections.json` is a self-contained COCO file:
`images` (id, file_name, height, width), `categories` (id = the data's class id 0..K-1, name) and
`annotations`, the results (`image_id`, `category_id`, `bbox` [x, y, w, h], `score`, plus `id`,
`area`, `iscrowd` so that `pycocotools.coco.COCO("detections.json")` loads it too); a COCO ground
truth with the same image ids takes the list as `coco_gt.loadRes(json.load(f)["annotations"])`.
`detections.csv` has a row per box: path, class_name, score, x1, y1, x2, y2.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vision_lightning.outputs.files import (
    CsvSink,
    UniqueNames,
    is_rank_part,
    merged_path,
    part_paths,
    replace_atomically,
    save_png,
)
from vision_lightning.outputs.run import current_run
from vision_lightning.utils.visualize import RED, draw_boxes

CSV_HEADER = ["path", "class_name", "score", "x1", "y1", "x2", "y2"]


def _round(value: float) -> float:
    return round(float(value), 2)


class BoxSink:
    """`detections{suffix}.json` and `detections{suffix}.csv` under `output_dir`, and with
    `draw_score_threshold` set (and `images` in the outputs) `images/<name>.png`: each image with its
    boxes of at least that score drawn.

    Each predict output is `{"path", "size": [(H, W)], "boxes": [(k, 4) xyxy], "scores": [(k,)],
    "labels": [(k,)]}` (tensors or arrays, original pixels), optionally `"images"`: HWC uint8 arrays
    at the original size. Image ids are data-set indices when known (several processes), else counts.
    """

    def __init__(
        self,
        output_dir: Path,
        suffix: str,
        class_names: Sequence[str],
        draw_score_threshold: float | None = None,
    ) -> None:
        self.class_names = list(class_names)
        self.json_path = output_dir / f"detections{suffix}.json"
        self.csv = CsvSink(output_dir / f"detections{suffix}.csv", CSV_HEADER, self._rows)
        self.draw_score_threshold = draw_score_threshold
        self.folder = output_dir / "images"
        self.names = UniqueNames()
        self.run = current_run()
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self.count = 0

    def _name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    def _rows(self, items: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]):
        for path, boxes, scores, labels in items:
            yield [
                [path, self._name(int(label)), f"{score:.4f}", *(_round(v) for v in box)]
                for box, score, label in zip(boxes, scores, labels)
            ]

    def write(self, outputs: dict[str, Any], indices: Sequence[int] | None = None) -> None:
        items = []
        for position, path in enumerate(outputs["path"]):
            boxes = np.asarray(outputs["boxes"][position], dtype=np.float64).reshape(-1, 4)
            scores = np.asarray(outputs["scores"][position], dtype=np.float64).reshape(-1)
            labels = np.asarray(outputs["labels"][position], dtype=np.int64).reshape(-1)
            height, width = (int(v) for v in outputs["size"][position])
            image_id = int(indices[position]) if indices is not None else self.count
            self.images.append({"id": image_id, "file_name": str(path), "height": height, "width": width})
            for box, score, label in zip(boxes, scores, labels):
                x1, y1, x2, y2 = (float(v) for v in box)
                self.annotations.append({
                    "image_id": image_id, "category_id": int(label),
                    "bbox": [_round(x1), _round(y1), _round(x2 - x1), _round(y2 - y1)],
                    "score": round(float(score), 4), "area": _round((x2 - x1) * (y2 - y1)), "iscrowd": 0,
                })  # fmt: skip
            items.append((str(path), boxes, scores, labels))
            if self.draw_score_threshold is not None and "images" in outputs:
                self._draw(path, outputs["images"][position], boxes, scores, labels)
            self.count += 1
        self.csv.write(items, indices)

    def _draw(self, path: str, image: np.ndarray, boxes, scores, labels) -> None:
        import torch

        keep = scores >= self.draw_score_threshold
        captions = [f"{self._name(int(c))} {s:.2f}" for c, s in zip(labels[keep], scores[keep])]
        drawn = draw_boxes(image, torch.as_tensor(boxes[keep]), captions, RED, width=2)
        self.folder.mkdir(parents=True, exist_ok=True)
        save_png(drawn, self.folder / f"{self.names(path)}.png", self.run)

    def _document(self, images: list[dict], annotations: list[dict]) -> dict[str, Any]:
        images = sorted(images, key=lambda image: image["id"])
        annotations = sorted(annotations, key=lambda a: (a["image_id"], -a["score"]))
        for number, annotation in enumerate(annotations, start=1):
            annotation["id"] = number
        categories = [{"id": i, "name": name} for i, name in enumerate(self.class_names)]
        return {"images": images, "categories": categories, "annotations": annotations}

    def _write_json(self, path: Path, document: dict[str, Any]) -> Path:
        def write(partial: Path) -> None:
            partial.write_text(json.dumps(document))

        return replace_atomically(path, write, self.run, rows=len(document["annotations"]))

    def close(self) -> Path:
        self.csv.close()
        return self._write_json(self.json_path, self._document(self.images, self.annotations))

    def merge_parts(self, world_size: int) -> Path:
        """Every process's CSV and JSON parts become one of each, in data-set order."""
        self.csv.merge_parts(world_size)
        if not is_rank_part(self.json_path):
            return self.json_path
        images, annotations = [], []
        parts = part_paths(self.json_path, world_size)
        for part in parts:
            document = json.loads(part.read_text())
            images += document["images"]
            annotations += document["annotations"]
        path = self._write_json(merged_path(self.json_path), self._document(images, annotations))
        for part in parts:
            part.unlink()
        return path
