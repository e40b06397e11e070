"""DetectionDataModule and its sources: each layout gives the right classes and boxes (hand-computed in
input pixels after letterbox and stretch), boxes map back to the files' pixels, augmentation keeps
boxes on their objects, crops clip or drop, and batches follow the detection contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vision_lightning.data import (
    BoxAugment,
    CocoJson,
    DetectionDataModule,
    SyntheticBoxes,
    VocXml,
    YoloFolders,
    write_yolo_dataset,
)
from vision_lightning.data.detection_synthetic import SyntheticBoxSamples
from vision_lightning.data.detection_transforms import DetectionTransform
from vision_lightning.data.seeding import SeededItems
from vision_lightning.utils.boxes import resize_scale, to_original
from vision_lightning.utils.letterbox import as_boxes

# One 80x40 (width x height) image with a box [10, 5, 30, 25] of class 1 and a box [40, 0, 80, 20] of
# class 0; at S = 32, letterbox: factor 0.4, 8 rows of padding above; stretch: 0.4 across, 0.8 down.
WIDTH, HEIGHT, S = 80, 40, 32
BOXES = [[10.0, 5.0, 30.0, 25.0], [40.0, 0.0, 80.0, 20.0]]
LABELS = [1, 0]
LETTERBOX = [[4.0, 10.0, 12.0, 18.0], [16.0, 8.0, 32.0, 16.0]]
STRETCH = [[4.0, 4.0, 12.0, 20.0], [16.0, 0.0, 32.0, 16.0]]
YOLO_LINES = "1 0.25 0.375 0.25 0.5\n0 0.75 0.25 0.5 0.5\n"
PLAIN = {"mean": [0.0], "std": [1.0]}


def _image(path: Path, width: int = WIDTH, height: int = HEIGHT) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (60, 90, 120)).save(path)
    return path


def _items(data: DetectionDataModule, splits=("train", "val")) -> dict[str, dict]:
    """Every evaluation item of `splits`, by file name."""
    out = {}
    for split in splits:
        dataset = data._dataset(split)
        for i in range(len(dataset)):
            item = dataset[i]
            out[Path(item["path"]).name] = item
    return out


def _yolo_root(tmp_path: Path) -> Path:
    root = tmp_path / "yolo"
    for name in ("a", "b", "c", "d"):
        _image(root / "images" / f"{name}.png")
    (root / "labels").mkdir()
    (root / "labels/a.txt").write_text(YOLO_LINES)
    (root / "labels/b.txt").write_text("")  # empty: no objects; c.png has no label file at all
    (root / "labels/d.txt").write_text("0 0.5 0.5 0.25 0.5\n")
    (root / "classes.txt").write_text("car\nperson\n")
    return root


@pytest.mark.parametrize(("resize", "expected"), [("letterbox", LETTERBOX), ("stretch", STRETCH)])
def test_yolo_root_gives_classes_and_input_pixel_boxes(tmp_path, resize, expected):
    data = DetectionDataModule(YoloFolders(str(_yolo_root(tmp_path))), image_size=S, resize=resize, **PLAIN)
    assert data.class_names == ["car", "person"] and data.num_classes == 2
    items = _items(data)
    assert sorted(items) == ["a.png", "b.png", "c.png", "d.png"]
    torch.testing.assert_close(items["a.png"]["boxes"], torch.tensor(expected))
    assert items["a.png"]["labels"].tolist() == LABELS and items["a.png"]["labels"].dtype == torch.int64
    for empty in ("b.png", "c.png"):  # an empty label file, and no label file: no objects
        assert items[empty]["boxes"].shape == (0, 4) and items[empty]["labels"].shape == (0,)
    assert items["a.png"]["image"].shape == (3, S, S)
    assert items["a.png"]["size"].tolist() == [HEIGHT, WIDTH]
    torch.testing.assert_close(items["a.png"]["scale"], resize_scale(HEIGHT, WIDTH, S, resize))


def test_letterbox_pads_with_zero_after_normalisation(tmp_path):
    data = DetectionDataModule(YoloFolders(str(_yolo_root(tmp_path))), image_size=S, mean=[0.5], std=[0.25])
    image = _items(data)["a.png"]["image"]
    assert image[:, :8].abs().max() == 0 and image[:, 24:].abs().max() == 0  # padding rows
    torch.testing.assert_close(image[:, 12, 16], (torch.tensor([60, 90, 120]) / 255 - 0.5) / 0.25)


def test_to_original_gives_back_the_files_boxes(tmp_path):
    data = DetectionDataModule(YoloFolders(str(_yolo_root(tmp_path))), image_size=S, **PLAIN)
    batch = next(iter(data._loader(data._dataset("train"), batch_size=4)))
    for boxes, scale, size, path in zip(batch["boxes"], batch["scale"], batch["size"], batch["path"]):
        if Path(path).name == "a.png":
            torch.testing.assert_close(to_original(boxes, scale, size), torch.tensor(BOXES))


def test_yolo_data_yaml_with_splits_and_a_names_dict(tmp_path):
    root = tmp_path / "set"
    for split, names in (("train", ["t0", "t1"]), ("val", ["v0"])):
        for name in names:
            _image(root / "images" / split / f"{name}.jpg")
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{name}.txt").write_text(YOLO_LINES)
    (root / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/val\nnames: {0: car, 1: person}\n"
    )
    data = DetectionDataModule(YoloFolders(str(root / "data.yaml")), image_size=S, **PLAIN)
    assert data.class_names == ["car", "person"]
    data.setup()
    assert [Path(p).name for p in data._dataset("val").item_names()] == ["v0.jpg"]
    assert sorted(Path(p).name for p in data._dataset("train").item_names()) == ["t0.jpg", "t1.jpg"]
    torch.testing.assert_close(_items(data)["v0.jpg"]["boxes"], torch.tensor(LETTERBOX), atol=1e-4, rtol=0)


def test_coco_maps_sorted_category_ids_and_leaves_crowds_out(tmp_path):
    for name in ("a.png", "b.png"):
        _image(tmp_path / "images" / name)
    (tmp_path / "coco.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": WIDTH, "height": HEIGHT}, {"id": 2, "file_name": "b.png"}],
        "categories": [{"id": 7, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 5, 20, 20], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [40, 0, 40, 20]},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1},
        ],
    }))  # fmt: skip
    data = DetectionDataModule(CocoJson(str(tmp_path / "coco.json")), image_size=S, **PLAIN)
    assert data.class_names == ["car", "person"]
    items = _items(data)
    torch.testing.assert_close(items["a.png"]["boxes"], torch.tensor(LETTERBOX))
    assert items["a.png"]["labels"].tolist() == LABELS
    assert items["b.png"]["boxes"].shape == (0, 4)


def _voc(tmp_path: Path) -> Path:
    root = tmp_path / "VOC"
    objects = [("person", [11, 6, 30, 25], 0), ("car", [41, 1, 80, 20], 0), ("car", [1, 1, 5, 5], 1)]
    for image_id in ("x1", "x2"):
        _image(root / "JPEGImages" / f"{image_id}.jpg")
        body = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
            f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for n, b, d in objects
        )
        (root / "Annotations").mkdir(exist_ok=True)
        size = f"<size><width>{WIDTH}</width><height>{HEIGHT}</height><depth>3</depth></size>"
        (root / "Annotations" / f"{image_id}.xml").write_text(f"<annotation>{size}{body}</annotation>")
    (root / "ImageSets/Main").mkdir(parents=True)
    (root / "ImageSets/Main/train.txt").write_text("x1\n")
    (root / "ImageSets/Main/val.txt").write_text("x2\n")
    return root


def test_voc_collects_sorted_names_converts_one_based_boxes_and_drops_difficult(tmp_path):
    root = _voc(tmp_path)
    data = DetectionDataModule(VocXml(str(root)), image_size=S, **PLAIN)
    assert data.class_names == ["car", "person"]
    items = _items(data)
    assert set(items) == {"x1.jpg", "x2.jpg"}
    assert [Path(p).name for p in data._dataset("val").item_names()] == ["x2.jpg"]
    torch.testing.assert_close(items["x2.jpg"]["boxes"], torch.tensor(LETTERBOX))
    assert items["x2.jpg"]["labels"].tolist() == LABELS
    kept = DetectionDataModule(VocXml(str(root), keep_difficult=True), image_size=S, **PLAIN)
    assert _items(kept)["x1.jpg"]["labels"].tolist() == [1, 0, 0]


def test_write_yolo_dataset_reads_back_as_the_synthetic_boxes(tmp_path):
    path = write_yolo_dataset(
        tmp_path / "traffic", samples=6, val_samples=2, image_size=48, class_names=list("abcdefg")
    )
    data = DetectionDataModule(YoloFolders(str(path)), image_size=48, **PLAIN)
    assert data.class_names == list("abcdefg")
    assert (tmp_path / "traffic/classes.txt").read_text().split() == list("abcdefg")
    written = SyntheticBoxSamples(6, 48, 7, 3, 0, "")
    items = _items(data, ("train",))
    for index in range(6):
        _, target, _ = written.load(index)
        item = items[f"{index:05d}.png"]
        torch.testing.assert_close(item["boxes"], torch.from_numpy(target["boxes"]), atol=1e-3, rtol=0)
        assert item["labels"].tolist() == target["labels"].tolist()


def _rectangle_item(seed_key: tuple[int, int, int], augment: BoxAugment) -> dict:
    """A white 30x28 rectangle on black, augmented as training item `seed_key` (seed, epoch, index)."""
    image = np.zeros((60, 90, 3), dtype=np.uint8)
    image[12:40, 20:50] = 255
    transform = DetectionTransform(48, "letterbox", [0.0], [1.0], augment)

    class One(torch.utils.data.Dataset):
        transform = None

        def __len__(self):
            return 1

        def __getitem__(self, index):
            return transform(image, {"boxes": np.array([[20.0, 12.0, 50.0, 40.0]]), "labels": np.array([0])})

    return SeededItems(One())[seed_key]


def test_augmented_boxes_bound_their_objects_pixels():
    augment = BoxAugment(
        hflip=0.5, vflip=0.5, scale=(0.6, 1.6), crop=0.5, crop_size=(0.6, 1.0), min_visibility=0.2
    )
    kept = 0
    for epoch in range(12):
        item = _rectangle_item((0, epoch, 0), augment)
        inside = item["image"][0] > 0.5
        if not len(item["boxes"]):
            continue
        kept += 1
        rows, cols = torch.nonzero(inside.any(dim=1)).flatten(), torch.nonzero(inside.any(dim=0)).flatten()
        pixels = torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)
        torch.testing.assert_close(item["boxes"][0], pixels, atol=1.5, rtol=0)
    assert kept >= 8


def test_augmentation_repeats_for_a_key_and_differs_between_epochs():
    augment = BoxAugment(scale=(0.6, 1.6), crop=0.5, brightness=0.3)
    first, again, other = (_rectangle_item(key, augment) for key in [(1, 0, 0), (1, 0, 0), (1, 1, 0)])
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["boxes"], again["boxes"])
    assert not torch.equal(first["image"], other["image"])


def test_crop_clips_boxes_it_keeps_and_drops_those_mostly_cut_off():
    transform = DetectionTransform(32, "letterbox", [0.0], [1.0], BoxAugment(min_visibility=0.6))
    boxes = as_boxes(torch.tensor([[0.0, 0, 10, 10], [8, 2, 16, 10], [20, 5, 28, 13]]), 32, 32)
    _, out, labels = transform._crop(torch.zeros(3, 32, 32), boxes, torch.tensor([0, 1, 2]), 0, 5, 20)
    assert labels.tolist() == [1, 2]  # the first keeps half its area: dropped
    assert out.tolist() == [[3.0, 2.0, 11.0, 10.0], [15.0, 5.0, 20.0, 13.0]]  # the last clipped


def test_predict_batches_have_size_scale_and_path(tmp_path):
    folder = tmp_path / "photos"
    _image(folder / "wide.png")
    _image(folder / "tall.png", width=20, height=50)
    data = DetectionDataModule(
        SyntheticBoxes(samples=4, image_size=32), image_size=S, predict_root=str(folder), **PLAIN
    )
    data.setup("predict")
    batch = next(iter(data.predict_dataloader()))
    assert set(batch) == {"image", "path", "size", "scale"}
    assert batch["image"].shape == (2, 3, S, S)
    by_name = {Path(p).name: i for i, p in enumerate(batch["path"])}
    assert batch["size"][by_name["tall.png"]].tolist() == [50, 20]
    torch.testing.assert_close(batch["scale"][by_name["tall.png"]], resize_scale(50, 20, S))


def test_synthetic_batches_follow_the_contract_and_a_new_loader_follows_image_size():
    data = DetectionDataModule(SyntheticBoxes(samples=12, image_size=64), image_size=32, batch_size=4,
                               augment=BoxAugment(), **PLAIN)  # fmt: skip
    batch = next(iter(data.train_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert isinstance(batch["boxes"], list) and len(batch["boxes"]) == 4
    assert all(b.dtype == torch.float32 and b.shape[1:] == (4,) for b in batch["boxes"])
    assert all(label.dtype == torch.int64 for label in batch["labels"])
    assert batch["size"].dtype == torch.int64 and batch["scale"].shape == (4, 4)
    val = next(iter(data.val_dataloader()))
    data.image_size = 48  # what ProgressiveResizing does between epochs
    bigger = next(iter(data.val_dataloader()))
    assert bigger["image"].shape[-2:] == (48, 48) and bigger["path"] == val["path"]
    for small, large in zip(val["boxes"], bigger["boxes"]):
        torch.testing.assert_close(large, small * 1.5)


def test_class_names_rename_and_num_classes_name_unnamed_yolo_classes(tmp_path):
    root = _yolo_root(tmp_path)
    renamed = DetectionDataModule(YoloFolders(str(root)), class_names=["vehicle", "pedestrian"], image_size=S)
    assert renamed.class_names == ["vehicle", "pedestrian"]
    (root / "classes.txt").unlink()
    assert DetectionDataModule(YoloFolders(str(root)), num_classes=2, image_size=S).class_names == ["0", "1"]
    assert renamed.preprocessing()["resize"] == "letterbox"


def test_training_batches_repeat_with_any_number_of_workers():
    def batches(workers: int) -> list[dict]:
        data = DetectionDataModule(SyntheticBoxes(samples=10, image_size=48), image_size=32, batch_size=4,
                                   augment=BoxAugment(crop=0.5), loader={"num_workers": workers}, **PLAIN)  # fmt: skip
        data._run_seed = 5
        return list(data.train_dataloader())

    first, second = batches(0), batches(1)
    for a, b in zip(first, second, strict=True):
        assert a["path"] == b["path"] and torch.equal(a["image"], b["image"])
        assert all(torch.equal(x, y) for x, y in zip(a["boxes"], b["boxes"], strict=True))
