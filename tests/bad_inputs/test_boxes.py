"""Bad-input catalogue, detection annotations: malformed YOLO lines, classes out of range, COCO files
that are not COCO, missing images, unknown categories and VOC classes are errors naming file and line
(or object); boxes with no area, outside or reaching past their image are dropped or clipped with one
warning naming the files; options that do not apply to detection are refused in one sentence.

Each case asserts the exact outcome, as the other files of this catalogue do.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from vision_lightning.data import CocoJson, DetectionDataModule, SyntheticBoxes, VocXml, YoloFolders
from vision_lightning.utils.errors import InputError

SIZE = 16


def _image(path: Path, size: tuple[int, int] = (40, 20)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 120, 150)).save(path)
    return path


def _yolo(tmp_path: Path, labels: dict[str, str], classes: str | None = "car\nperson\n") -> Path:
    """A YOLO root with one image per label file (`labels`: name -> text)."""
    root = tmp_path / "yolo"
    for name, text in labels.items():
        _image(root / "images" / f"{name}.png")
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{name}.txt").write_text(text)
    _image(root / "images/spare.png")
    if classes is not None:
        (root / "classes.txt").write_text(classes)
    return root


def _data(source, **kwargs) -> DetectionDataModule:
    return DetectionDataModule(source, image_size=SIZE, batch_size=2, mean=[0.0], std=[1.0], **kwargs)


def _coco(tmp_path: Path, data) -> Path:
    _image(tmp_path / "images/a.png")
    _image(tmp_path / "images/b.png")
    path = tmp_path / "coco.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


COCO = {
    "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 20}, {"id": 2, "file_name": "b.png"}],
    "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 5, 5]}],
}


# ----------------------------------------------------------------------------- errors
def yolo_wrong_field_count(tmp_path):
    root = _yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n"})
    expected = (
        f"{root / 'labels/a.txt'}:2: has 4 fields, expected 5 (class cx cy w h) or a class and polygon points"
    )
    return lambda: _data(YoloFolders(str(root))).setup(), expected


def yolo_not_a_number(tmp_path):
    root = _yolo(tmp_path, {"a": "0 0.5 half 0.2 0.2\n"})
    return lambda: _data(YoloFolders(str(root))).setup(), f"{root / 'labels/a.txt'}:1: 'half' is not a number"


def yolo_class_out_of_range(tmp_path):
    root = _yolo(tmp_path, {"a": "\n2 0.5 0.5 0.2 0.2\n"})
    expected = f"{root / 'labels/a.txt'}:2: class 2 is out of range: there are 2 classes (ids 0..1)"
    return lambda: _data(YoloFolders(str(root))).setup(), expected


def yolo_fractional_class(tmp_path):
    root = _yolo(tmp_path, {"a": "1.5 0.5 0.5 0.2 0.2\n"})
    return lambda: _data(
        YoloFolders(str(root))
    ).setup(), f"{root / 'labels/a.txt'}:1: class '1.5' is not a whole number"


def yolo_problems_reported_together(tmp_path):
    root = _yolo(tmp_path, {"a": "7 0.5 0.5 0.2 0.2\n", "b": "0 0.5\n"})
    expected = (
        f"2 problems in the annotations of {root}: {root / 'labels/a.txt'}:1: class 7 is out of range: there are "
        f"2 classes (ids 0..1); {root / 'labels/b.txt'}:1: has 2 fields"
    )
    return lambda: _data(YoloFolders(str(root))).setup(), expected


def yolo_without_class_names(tmp_path):
    root = _yolo(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n"}, classes=None)
    expected = f"{root} does not name its classes (no classes.txt, no names in a data.yaml): give class_names or num_classes"
    return lambda: _data(YoloFolders(str(root))), expected


def yolo_no_label_files(tmp_path):
    root = tmp_path / "yolo"
    _image(root / "images/a.png")
    (root / "classes.txt").write_text("car\n")
    expected = f"no label file found for any image of {root}: the labels of {root / 'images/a.png'} would be"
    return lambda: _data(YoloFolders(str(root))).setup(), expected


def yolo_yaml_nc_disagrees(tmp_path):
    root = _yolo(tmp_path, {"a": ""}, classes=None)
    (root / "data.yaml").write_text("train: images\nnc: 3\nnames: [car, person]\n")
    return lambda: _data(
        YoloFolders(str(root / "data.yaml"))
    ), f"{root / 'data.yaml'}: nc is 3 but names lists 2 classes"


def class_names_count_disagrees(tmp_path):
    root = _yolo(tmp_path, {"a": ""})
    expected = "the data has 2 classes (car, person) but class_names / num_classes give 3"
    return lambda: _data(YoloFolders(str(root)), num_classes=3), expected


def coco_not_json(tmp_path):
    path = _coco(tmp_path, "images: []")
    return lambda: CocoJson(
        str(path)
    ), f"COCO file {path} is not JSON: Expecting value: line 1 column 1 (char 0)"


def coco_lacks_categories(tmp_path):
    path = _coco(tmp_path, {"images": [], "annotations": []})
    expected = (
        f"COCO file {path} has no 'categories' list: an instances file has images, annotations and categories"
    )
    return lambda: CocoJson(str(path)), expected


def coco_image_missing(tmp_path):
    path = _coco(tmp_path, {**COCO, "images": [*COCO["images"], {"id": 2, "file_name": "gone.png"}]})
    expected = f"COCO file {path} lists 1 image(s) missing from {tmp_path / 'images'}: {tmp_path / 'images/gone.png'}"
    return lambda: _data(CocoJson(str(path))).setup(), expected


def coco_unknown_category(tmp_path):
    annotations = [{"id": 5, "image_id": 1, "category_id": 9, "bbox": [1, 1, 5, 5]}]
    path = _coco(tmp_path, {**COCO, "annotations": annotations})
    expected = (
        f"COCO file {path} annotations[0] (image a.png): category_id 9 is not in categories (ids [1, 2])"
    )
    return lambda: _data(CocoJson(str(path))).setup(), expected


def coco_bad_bbox(tmp_path):
    annotations = [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5]}]
    path = _coco(tmp_path, {**COCO, "annotations": annotations})
    expected = f"COCO file {path} annotations[0] (image a.png): bbox must be [x, y, width, height] in pixels"
    return lambda: _data(CocoJson(str(path))).setup(), expected


def coco_declared_size_differs(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "width": 20, "height": 40}, COCO["images"][1]]
    path = _coco(tmp_path, {**COCO, "images": images})
    expected = (
        f"1 bad sample(s): the annotations give {tmp_path / 'images/a.png'} as 20x40 but the file is 40x20 "
        "(width x height)"
    )
    return lambda: _data(CocoJson(str(path))).setup(), expected


def voc_unknown_class(tmp_path):
    root = tmp_path / "VOC"
    _image(root / "JPEGImages/x.jpg")
    (root / "Annotations").mkdir()
    box = "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>"
    (root / "Annotations/x.xml").write_text(
        f"<annotation><object><name>bus</name>{box}</object></annotation>"
    )
    expected = f"{root / 'Annotations/x.xml'} object 1: class 'bus' is not one of ['car']"
    return lambda: _data(VocXml(str(root), class_names=["car"])).setup(), expected


def in_memory_refused(tmp_path):
    expected = "in_memory does not apply to detection: boxes stay with each sample; use cache_images"
    return lambda: _data(SyntheticBoxes(samples=4), in_memory=True), expected


def batch_augment_refused(tmp_path):
    expected = "batch_augment does not apply to detection: its flips and crops would not move the boxes"
    return lambda: _data(SyntheticBoxes(samples=4), batch_augment={"flip": True}), expected


ERRORS: dict[str, Callable] = {case.__name__: case for case in [
    yolo_wrong_field_count, yolo_not_a_number, yolo_class_out_of_range, yolo_fractional_class,
    yolo_problems_reported_together, yolo_without_class_names, yolo_no_label_files, yolo_yaml_nc_disagrees,
    class_names_count_disagrees, coco_not_json, coco_lacks_categories, coco_image_missing, coco_unknown_category,
    coco_bad_bbox, coco_declared_size_differs, voc_unknown_class, in_memory_refused, batch_augment_refused,
]}  # fmt: skip


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_annotation_is_an_input_error_naming_it(case, tmp_path):
    action, expected = ERRORS[case](tmp_path)
    with pytest.raises(InputError) as error:
        action()
    assert str(error.value).startswith(expected), str(error.value)
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------- warnings
def degenerate_and_outside_dropped(tmp_path):
    root = _yolo(tmp_path, {"a": "0 0.5 0.5 0 0.2\n0 0.5 0.5 0.2 0.2\n", "b": "1 1.5 0.5 0.2 0.2\n"})
    expected = (
        f"Dropped 2 box(es) with no area or entirely outside their image in 2 file(s) of {root}: "
        f"{root / 'labels/a.txt'} (1), {root / 'labels/b.txt'} (1)"
    )
    return lambda: _data(YoloFolders(str(root))).setup(), expected


def clipped_past_the_edge(tmp_path):
    root = _yolo(tmp_path, {"a": "0 0.95 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n"})
    expected = (
        f"Clipped 1 box(es) reaching more than 1% of the image past its edge in 1 file(s) of {root}: "
        f"{root / 'labels/a.txt'} (1)"
    )
    return lambda: _data(YoloFolders(str(root))).setup(), expected


def coco_box_past_the_edge(tmp_path):
    annotations = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 10, 20, 5]}]
    path = _coco(tmp_path, {**COCO, "annotations": annotations})
    expected = f"Clipped 1 box(es) reaching more than 1% of the image past its edge in 1 file(s) of {path}"
    return lambda: _data(CocoJson(str(path))).setup(), expected


WARNINGS: dict[str, Callable] = {case.__name__: case for case in [
    degenerate_and_outside_dropped, clipped_past_the_edge, coco_box_past_the_edge,
]}  # fmt: skip


@pytest.mark.parametrize("case", list(WARNINGS))
def test_doubtful_box_is_dropped_or_clipped_with_a_warning_naming_it(case, tmp_path, caplog):
    action, expected = WARNINGS[case](tmp_path)
    with caplog.at_level(logging.WARNING, logger="vision_lightning"):
        action()
    assert expected in caplog.text, caplog.text
    assert caplog.text.count("Dropped") + caplog.text.count("Clipped") == 1  # one warning, not one per box


def test_boxes_just_past_the_edge_are_clipped_quietly(tmp_path, caplog):
    root = _yolo(tmp_path, {"a": "0 0.9 0.5 0.205 0.2\n"})  # 0.5% past the right edge: rounding
    with caplog.at_level(logging.WARNING, logger="vision_lightning"):
        data = _data(YoloFolders(str(root)), val_split=0.5)
        data.setup()
    assert "Clipped" not in caplog.text
