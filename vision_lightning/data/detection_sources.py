"""Where detection data comes from: one typed source per annotation format, chosen by `class_path`.

- `YoloFolders`: the YOLO / ultralytics layout, `images/` + `labels/*.txt` (a root folder or a data.yaml);
- `CocoJson`: one COCO instances JSON and its image folder;
- `VocXml`: Pascal VOC, `JPEGImages/` + `Annotations/*.xml` (+ `ImageSets/Main/<split>.txt`);
- `SyntheticBoxes`: generated shapes with their exact boxes (no download: the quickstart and tests).

A source checks its own arguments when built and knows its class names right after (`classes`, read
from classes.txt, the YAML, the JSON's categories or the XML files), so the CLI links them into the
model. `splits` reads every annotation (data/detection_samples.py: malformed ones are errors naming
file and line, all at once; boxes with no area or outside the image are dropped and partly outside
ones clipped, with one warning each) and returns `{"train": (samples, indices), "val"?, "test"?}`;
without "val" the data module splits "train". Classes are ids 0..K-1 (no background id). In YAML:

    source:
      class_path: vision_lightning.data.YoloFolders
      init_args: {root: data/traffic/data.yaml}
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vision_lightning.data.base import Split
from vision_lightning.data.detection_samples import BoxChecks, BoxSamples
from vision_lightning.data.detection_synthetic import BOX_SHAPES, SyntheticBoxSamples, check_box_classes
from vision_lightning.data.splits import find_split_folder
from vision_lightning.utils.errors import InputError, MissingInputError
from vision_lightning.utils.hparams import from_plain
from vision_lightning.utils.images import image_size_of, is_image_file, list_images

SPLITS = ("train", "val", "test")


class DetectionSource(ABC):
    """Base of the detection sources (see the module docstring). Subclasses keep their constructor
    arguments in `init_args` (how checkpoints and `repr` describe them)."""

    init_args: dict[str, Any]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.init_args.items())
        return f"{type(self).__name__}({args})"

    @property
    def location(self) -> str:
        """Where the data is, for messages."""
        return type(self).__name__

    @abstractmethod
    def classes(self) -> list[str] | None:
        """The class names in id order, or None when the data does not name them (YOLO without
        classes.txt or names: then the data module's class_names / num_classes decide)."""

    @abstractmethod
    def splits(self, class_names: list[str], image_size: int) -> dict[str, Split]:
        """Every split's samples, annotations checked (`image_size`: what synthetic data is drawn at)."""


def as_source(value: DetectionSource | Mapping[str, Any]) -> DetectionSource:
    """`value`, or the source a `{class_path, init_args}` mapping describes (saved hyperparameters)."""
    if isinstance(value, Mapping) and isinstance(value.get("class_path"), str):
        return from_plain(value, DetectionSource, "detection source")
    if not isinstance(value, DetectionSource):
        raise InputError(
            f"source must be a detection source (YoloFolders, CocoJson, VocXml, SyntheticBoxes), got {value!r}"
        )
    return value


def _whole(source: Any) -> Split:
    return source, list(range(len(source)))


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# ----------------------------------------------------------------------------- YOLO
def label_path(image: Path) -> Path:
    """ultralytics' rule: the last `images` folder of the path becomes `labels`, the suffix `.txt`
    (an image outside any `images` folder has its label file beside it)."""
    parts = list(image.parts)
    folders = [i for i, part in enumerate(parts[:-1]) if part == "images"]
    if folders:
        parts[folders[-1]] = "labels"
    return Path(*parts).with_suffix(".txt")


def read_yolo_labels(path: Path, num_classes: int, checks: BoxChecks) -> tuple[np.ndarray, np.ndarray]:
    """Normalised xyxy boxes and classes of one label file (`class cx cy w h` per line; a class and
    polygon points, ultralytics' segment labels, become the polygon's box). Blank lines are skipped."""
    boxes, labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) != 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            checks.error(
                f"{where}: has {len(fields)} fields, expected 5 (class cx cy w h) or a class and polygon points"
            )
            continue
        values = [_number(field) for field in fields]
        bad = [field for field, value in zip(fields, values) if value is None]
        if bad:
            checks.error(f"{where}: {bad[0]!r} is not a number")
            continue
        if values[0] != int(values[0]):
            checks.error(f"{where}: class {fields[0]!r} is not a whole number")
            continue
        label = int(values[0])
        if not 0 <= label < num_classes:
            checks.error(
                f"{where}: class {label} is out of range: there are {num_classes} classes (ids 0..{num_classes - 1})"
            )
            continue
        if len(fields) == 5:
            cx, cy, w, h = values[1:]
            boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        else:
            xs, ys = values[1::2], values[2::2]
            boxes.append([min(xs), min(ys), max(xs), max(ys)])
        labels.append(label)
    return checks.clean(np.array(boxes).reshape(-1, 4), np.array(labels), 1.0, 1.0, str(path))


def _yolo_names(value: Any, where: str) -> list[str]:
    """A YAML `names`: a list, or `{id: name}` with ids 0..K-1."""
    if isinstance(value, list):
        return [str(name) for name in value]
    if isinstance(value, Mapping):
        try:
            ids = sorted(int(key) for key in value)
        except (TypeError, ValueError):
            raise InputError(
                f"{where}: names must map class ids 0, 1, ... to names, got keys {list(value)}"
            ) from None
        if ids != list(range(len(ids))):
            raise InputError(f"{where}: names must have the ids 0..{len(ids) - 1}, got {ids}")
        return [str(value.get(i, value.get(str(i)))) for i in ids]
    raise InputError(f"{where}: names must be a list of class names or {{id: name}}, got {value!r}")


class YoloFolders(DetectionSource):
    """The YOLO (ultralytics) layout: images and one `labels/<name>.txt` per image, each line
    `class cx cy w h` normalised to [0, 1] (a class and polygon points become the polygon's box).

    A label file is found from its image by ultralytics' rule: the last `images` folder of the path
    becomes `labels` and the suffix `.txt`. An image without a label file has no objects (a
    background image, as in ultralytics), and so has an empty label file.

    Args:
        root: a data folder or a data.yaml. A folder holds `images/` and `labels/`, either flat
            (validation is split off) or with split folders `images/train`, `images/val` (or
            `valid`), `images/test`; Roboflow's `train/images` + `train/labels` work too. Class names
            come from `classes.txt` (one per line) or a `data.yaml` beside them. A data.yaml
            (ultralytics) gives `names` (a list or `{id: name}`), `nc`, and `train` / `val` / `test`:
            image folders (or .txt lists of images, relative to the list) relative to its `path`, or
            to the YAML's folder without one.
    """

    def __init__(self, root: str) -> None:
        if not root:
            raise InputError("YoloFolders needs root: the data folder or its data.yaml")
        self.root = Path(root)
        if not self.root.exists():
            raise MissingInputError(f"YOLO data {self.root} does not exist")
        self.init_args = {"root": str(root)}
        self.yaml_path = self.root if self.root.is_file() else self._yaml_beside()
        self._config = self._read_yaml() if self.yaml_path else {}

    @property
    def location(self) -> str:
        return str(self.root)

    def _yaml_beside(self) -> Path | None:
        return next((self.root / n for n in ("data.yaml", "dataset.yaml") if (self.root / n).is_file()), None)

    def _read_yaml(self) -> dict[str, Any]:
        import yaml

        try:
            config = yaml.safe_load(self.yaml_path.read_text())
        except yaml.YAMLError as error:
            raise InputError(f"{self.yaml_path} is not valid YAML: {str(error).splitlines()[0]}") from None
        if not isinstance(config, dict):
            raise InputError(f"{self.yaml_path} must be a mapping with train, val and names, got {config!r}")
        if self.root.is_file() and "train" not in config:
            raise InputError(f"{self.yaml_path} has no train: the folder of training images")
        return config

    def classes(self) -> list[str] | None:
        folder = self.root.parent if self.root.is_file() else self.root
        if not self.root.is_file() and (folder / "classes.txt").is_file():
            names = [
                line.strip() for line in (folder / "classes.txt").read_text().splitlines() if line.strip()
            ]
            if not names:
                raise InputError(f"{folder / 'classes.txt'} lists no class names")
            return names
        config, where = self._config, str(self.yaml_path)
        names = _yolo_names(config["names"], where) if config.get("names") is not None else None
        count = config.get("nc")
        if count is not None and names is not None and int(count) != len(names):
            raise InputError(f"{where}: nc is {count} but names lists {len(names)} classes")
        if names is None and count is not None:
            names = [str(i) for i in range(int(count))]
        return names

    def _base(self) -> Path:
        base = Path(self._config.get("path") or ".")
        return base if base.is_absolute() else self.yaml_path.parent / base

    def _images_of(self, entry: Any, split: str) -> list[Path]:
        """The images a data.yaml split names: folders or .txt lists, one or a list of them."""
        images: list[Path] = []
        for item in entry if isinstance(entry, list) else [entry]:
            path = Path(str(item))
            path = path if path.is_absolute() else self._base() / path
            if path.is_dir():
                images += list_images(path)
            elif path.is_file() and path.suffix == ".txt":
                lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
                images += [Path(line) if Path(line).is_absolute() else path.parent / line for line in lines]
            else:
                raise MissingInputError(
                    f"{self.yaml_path}: {split} {item!r} is not a folder or .txt list ({path})"
                )
        return images

    def _split_images(self) -> dict[str, list[Path]]:
        if self.root.is_file():
            return {s: self._images_of(self._config[s], s) for s in SPLITS if self._config.get(s)}
        images = self.root / "images"
        if images.is_dir():
            found = {s: find_split_folder(images, s) for s in SPLITS}
            if found["train"] is not None:
                return {s: list_images(folder) for s, folder in found.items() if folder is not None}
            return {"train": list_images(images)}
        found = {s: find_split_folder(self.root, s) for s in SPLITS}
        if found["train"] is not None and (found["train"] / "images").is_dir():  # Roboflow's export
            return {
                s: list_images(f / "images")
                for s, f in found.items()
                if f is not None and (f / "images").is_dir()
            }
        raise MissingInputError(
            f"YOLO data {self.root} has no images/ folder (expected images/ + labels/, images/train + "
            "labels/train, or a data.yaml)"
        )

    def splits(self, class_names: list[str], image_size: int) -> dict[str, Split]:
        checks, out = BoxChecks(), {}
        labelled = 0
        for split, images in self._split_images().items():
            if not images:
                raise InputError(f"the {split} images of {self.location} are an empty folder")
            boxes, labels = [], []
            for image in images:
                path = label_path(image)
                if path.is_file():
                    labelled += 1
                    b, c = read_yolo_labels(path, len(class_names), checks)
                else:
                    b, c = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
                boxes.append(b)
                labels.append(c)
            out[split] = _whole(BoxSamples(images, boxes, labels, normalized=True))
        if not labelled:
            first = next(iter(out.values()))[0].paths[0]
            raise InputError(
                f"no label file found for any image of {self.location}: the labels of {first} would be "
                f"{label_path(Path(first))}"
            )
        checks.report(self.location)
        return out


# ----------------------------------------------------------------------------- COCO
class CocoJson(DetectionSource):
    """One COCO instances JSON (`images`, `annotations`, `categories`) and its image folder.

    Category ids become classes 0..K-1 in sorted id order, named by `categories`. A `bbox` is
    `[x, y, width, height]` in pixels. Crowd regions (`iscrowd: 1`) are left out: COCO evaluation
    ignores them rather than counting them as objects. Images without annotations have no objects.

    Args:
        annotations: the JSON file.
        images: the folder `file_name`s are relative to (default: `images/` beside the JSON, else its
            folder).
    """

    def __init__(self, annotations: str, images: str | None = None) -> None:
        if not annotations:
            raise InputError("CocoJson needs annotations: the COCO instances JSON file")
        self.path = Path(annotations)
        if not self.path.is_file():
            raise MissingInputError(f"COCO file {self.path} does not exist")
        default = self.path.parent / "images"
        self.images = Path(images) if images else default if default.is_dir() else self.path.parent
        if not self.images.is_dir():
            raise MissingInputError(f"COCO image folder {self.images} does not exist")
        self.init_args = {"annotations": str(annotations), "images": None if images is None else str(images)}
        self._data = self._read()

    @property
    def location(self) -> str:
        return str(self.path)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"COCO file {self.path} is not JSON: {error}") from None
        if not isinstance(data, dict):
            raise InputError(
                f"COCO file {self.path} must hold an object with images, annotations and categories"
            )
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise InputError(
                    f"COCO file {self.path} has no {key!r} list: an instances file has images, annotations and categories"
                )
        for i, category in enumerate(data["categories"]):
            if not isinstance(category, dict) or "id" not in category or "name" not in category:
                raise InputError(
                    f"COCO file {self.path}: categories[{i}] needs an id and a name, got {category!r}"
                )
        if not data["categories"]:
            raise InputError(f"COCO file {self.path} has no categories")
        for i, image in enumerate(data["images"]):
            if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
                raise InputError(
                    f"COCO file {self.path}: images[{i}] needs an id and a file_name, got {image!r}"
                )
        return data

    def classes(self) -> list[str]:
        return [str(c["name"]) for c in sorted(self._data["categories"], key=lambda c: c["id"])]

    def splits(self, class_names: list[str], image_size: int) -> dict[str, Split]:
        data, checks = self._data, BoxChecks()
        ids = sorted(c["id"] for c in data["categories"])
        category_class = {cid: k for k, cid in enumerate(ids)}
        images = {image["id"]: image for image in data["images"]}
        found: dict[Any, list] = {key: [] for key in images}
        for i, ann in enumerate(data["annotations"]):
            where = f"COCO file {self.path} annotations[{i}]"
            if not isinstance(ann, dict) or ann.get("image_id") not in images:
                checks.error(
                    f"{where}: image_id {ann.get('image_id') if isinstance(ann, dict) else ann!r} is not in images"
                )
                continue
            if ann.get("iscrowd"):
                continue
            where += f" (image {images[ann['image_id']]['file_name']})"
            if ann.get("category_id") not in category_class:
                checks.error(
                    f"{where}: category_id {ann.get('category_id')!r} is not in categories (ids {ids})"
                )
                continue
            bbox = ann.get("bbox")
            values = [_number(str(v)) for v in bbox] if isinstance(bbox, list) and len(bbox) == 4 else None
            if values is None or None in values:
                checks.error(f"{where}: bbox must be [x, y, width, height] in pixels, got {bbox!r}")
                continue
            found[ann["image_id"]].append((values, category_class[ann["category_id"]]))
        paths = [self.images / str(images[key]["file_name"]) for key in images]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            checks.error(
                f"COCO file {self.path} lists {len(missing)} image(s) missing from {self.images}: "
                + ", ".join(missing[:5])
                + more
            )
            checks.report(self.location)
        boxes, labels, sizes = [], [], []
        for key, path in zip(images, paths):
            image = images[key]
            declared = (image.get("height"), image.get("width"))
            size = tuple(int(v) for v in declared) if all(declared) else image_size_of(path)
            xywh = np.array([v for v, _ in found[key]], dtype=np.float64).reshape(-1, 4)
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            b, c = checks.clean(xyxy, np.array([c for _, c in found[key]]), size[1], size[0], str(path))
            boxes.append(b)
            labels.append(c)
            sizes.append(size if all(declared) else None)
        checks.report(self.location)
        if not paths:
            raise InputError(f"COCO file {self.path} lists no images")
        return {"train": _whole(BoxSamples(paths, boxes, labels, sizes=sizes))}


# ----------------------------------------------------------------------------- Pascal VOC
class VocXml(DetectionSource):
    """Pascal VOC: `root/JPEGImages/*` and `root/Annotations/*.xml`, one XML per image (`<object>`s
    with `<name>` and `<bndbox>` xmin ymin xmax ymax, VOC's 1-based pixel indices: xmin 1 is the first
    pixel, so the box is [xmin - 1, ymin - 1, xmax, ymax] in pixels).

    Args:
        root: the VOC folder (VOC2012/, or one of one's own in that layout).
        class_names: the classes in id order (default: every `<name>` found, sorted); an object of
            another class is an error.
        keep_difficult: keep objects marked `<difficult>1` (default: drop them, as VOC's evaluation
            ignores them).
    Splits: `ImageSets/Main/train.txt`, `val.txt`, `test.txt` (image ids) where they exist (`train`
    needed), else every XML is training data and validation is split off.
    """

    def __init__(self, root: str, class_names: list[str] | None = None, keep_difficult: bool = False) -> None:
        if not root:
            raise InputError("VocXml needs root: the folder with JPEGImages/ and Annotations/")
        self.root = Path(root)
        for folder in ("JPEGImages", "Annotations"):
            if not (self.root / folder).is_dir():
                raise MissingInputError(f"VOC folder {self.root / folder} does not exist")
        if class_names is not None and (not class_names or len(set(class_names)) != len(class_names)):
            raise InputError(f"VocXml class_names must list distinct names, got {class_names}")
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.keep_difficult = keep_difficult
        self.init_args = {
            "root": str(root),
            "class_names": self.class_names,
            "keep_difficult": keep_difficult,
        }
        self._parsed = self._parse_all()

    @property
    def location(self) -> str:
        return str(self.root)

    def _ids(self) -> dict[str, list[str]]:
        sets = self.root / "ImageSets" / "Main"
        lists = {s: sets / f"{s}.txt" for s in SPLITS if (sets / f"{s}.txt").is_file()}
        if lists and "train" not in lists:
            raise InputError(f"VOC image sets in {sets} need train.txt (found {', '.join(sorted(lists))})")
        if not lists:
            return {"train": sorted(p.stem for p in (self.root / "Annotations").glob("*.xml"))}
        return {
            s: [line.split()[0] for line in p.read_text().splitlines() if line.strip()]
            for s, p in lists.items()
        }

    def _parse_all(self) -> dict[str, list[tuple[Path, list, tuple[int, int] | None]]]:
        """Per split, (image, [(name, xyxy, difficult, where)], declared size) of every XML."""
        errors, out = BoxChecks(), {}
        images = {p.stem: p for p in (self.root / "JPEGImages").iterdir() if is_image_file(p)}
        for split, ids in self._ids().items():
            if not ids:
                raise InputError(f"the {split} split of VOC data {self.root} lists no images")
            out[split] = []
            for image_id in ids:
                xml = self.root / "Annotations" / f"{image_id}.xml"
                if not xml.is_file():
                    errors.error(f"{xml} does not exist (image {image_id} of the {split} split)")
                    continue
                if image_id not in images:
                    errors.error(f"{xml} has no image {image_id} in {self.root / 'JPEGImages'}")
                    continue
                out[split].append((images[image_id], *self._parse(xml, errors)))
        errors.report(self.location)
        return out

    def _parse(self, xml: Path, checks: BoxChecks) -> tuple[list, tuple[int, int] | None]:
        try:
            tree = ET.parse(xml).getroot()
        except ET.ParseError as error:
            checks.error(f"{xml}: not valid XML ({error})")
            return [], None
        objects = []
        for i, obj in enumerate(tree.findall("object"), start=1):
            where = f"{xml} object {i}"
            name, box = obj.findtext("name"), obj.find("bndbox")
            if not name or box is None:
                checks.error(f"{where}: needs a <name> and a <bndbox>")
                continue
            texts = [box.findtext(tag) for tag in ("xmin", "ymin", "xmax", "ymax")]
            values = [_number(t) if t is not None else None for t in texts]
            if None in values:
                checks.error(f"{where}: bndbox xmin, ymin, xmax, ymax must be numbers, got {texts}")
                continue
            x1, y1, x2, y2 = values
            difficult = (obj.findtext("difficult") or "0").strip() == "1"
            objects.append((name.strip(), [x1 - 1, y1 - 1, x2, y2], difficult, where))
        width, height = (_number(tree.findtext(f"size/{k}") or "") for k in ("width", "height"))
        return objects, (int(height), int(width)) if width and height else None

    def classes(self) -> list[str]:
        if self.class_names is not None:
            return list(self.class_names)
        names = sorted({name for split in self._parsed.values() for _, objs, _ in split for name, *_ in objs})
        if not names:
            raise InputError(
                f"VOC data {self.root} has no objects: its classes are unknown (give class_names)"
            )
        return names

    def splits(self, class_names: list[str], image_size: int) -> dict[str, Split]:
        checks, out = BoxChecks(), {}
        ids = {name: k for k, name in enumerate(class_names)}
        for split, entries in self._parsed.items():
            paths, boxes, labels, sizes = [], [], [], []
            for image, objects, declared in entries:
                kept = [(box, ids.get(name, -1), where, name) for name, box, difficult, where in objects
                        if self.keep_difficult or not difficult]  # fmt: skip
                for _, label, where, name in kept:
                    if label < 0:
                        checks.error(f"{where}: class {name!r} is not one of {class_names}")
                size = declared or image_size_of(image)
                b, c = checks.clean(
                    np.array([box for box, *_ in kept]).reshape(-1, 4),
                    np.array([label for _, label, *_ in kept]),
                    size[1], size[0], str(image),
                )  # fmt: skip
                paths.append(image)
                boxes.append(b)
                labels.append(c)
                sizes.append(declared)
            out[split] = _whole(BoxSamples(paths, boxes, labels, sizes=sizes))
        checks.report(self.location)
        return out


# ----------------------------------------------------------------------------- synthetic
class SyntheticBoxes(DetectionSource):
    """Generated images with 1 to `max_objects` filled shapes (rectangles, ellipses, triangles,
    diamonds, crosses, rings, hexagons, frames: one class per kind) on a noisy background, with
    their exact boxes. A test set of a quarter as many comes from `seed + 1`.

    Args:
        samples: training + validation images (validation is split off by the data module).
        num_classes: kinds of shapes, 1 to 8.
        image_size: the generated images' side (default: the data module's image_size).
        max_objects: shapes per image, at most.
        seed: the images drawn.
    """

    def __init__(
        self,
        samples: int = 200,
        num_classes: int = 3,
        image_size: int | None = None,
        max_objects: int = 3,
        seed: int = 42,
    ) -> None:
        if samples < 2:
            raise InputError(f"SyntheticBoxes needs samples >= 2 (training and validation), got {samples}")
        check_box_classes(num_classes)
        if image_size is not None and image_size < 16:
            raise InputError(f"SyntheticBoxes image_size must be at least 16 pixels, got {image_size}")
        if max_objects < 1:
            raise InputError(f"SyntheticBoxes max_objects must be at least 1, got {max_objects}")
        self.samples, self.num_classes, self.image_size = samples, num_classes, image_size
        self.max_objects, self.seed = max_objects, seed
        self.init_args = {
            "samples": samples, "num_classes": num_classes, "image_size": image_size,
            "max_objects": max_objects, "seed": seed,
        }  # fmt: skip

    def classes(self) -> list[str]:
        return list(BOX_SHAPES[: self.num_classes])

    def splits(self, class_names: list[str], image_size: int) -> dict[str, Split]:
        if len(class_names) != self.num_classes:
            raise InputError(
                f"SyntheticBoxes draws {self.num_classes} kinds of shapes but the data has {len(class_names)} "
                "classes: set the source's num_classes"
            )
        size, kinds, most = self.image_size or image_size, self.num_classes, self.max_objects
        train = SyntheticBoxSamples(self.samples, size, kinds, most, self.seed, "synthetic")
        test = SyntheticBoxSamples(
            max(self.samples // 4, 1), size, kinds, most, self.seed + 1, "synthetic_test"
        )
        return {"train": _whole(train), "test": _whole(test)}
