"""Every task exports (issue 15): its ONNX file, run in ONNX Runtime on a batch of another size (and
another image size where the network takes any), and its torch.export file, loaded back, give the
outputs of PyTorch's `export_network` within atol 1e-4 + rtol 1e-3 (float32), and those are what
the task itself computes; the preprocessing is stored beside the files and inside the ONNX file.

Tiny networks, one export per task shared by the tests of that task (module-scoped fixtures)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from vision_lightning import (
    ClassifierModule,
    FeatureExtractModule,
    SegmentationModule,
    StyleTransferModule,
    SuperResModule,
    export_task,
)
from vision_lightning.export import ATOL, RTOL, read_metadata
from vision_lightning.models.style import ConvLayer

CLASSES = ["circle", "square", "triangle"]
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def tiny_backbone() -> nn.Module:
    """Conv -> BatchNorm -> ReLU -> adaptive pooling: takes any image size; 4 features."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


class TinySegmentationNet(nn.Module):
    """An encoder of two stride-2 convs (output stride 4: other sizes are padded) and a decoder."""

    output_stride = 4

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, 2, 1), nn.ReLU())
        self.decoder = nn.ConvTranspose2d(4, classes, 4, stride=4)

    def forward(self, x):
        assert x.shape[-1] % 4 == 0 and x.shape[-2] % 4 == 0, "padded to the output stride"
        return self.decoder(self.encoder(x))


class TinyStyleNet(nn.Module):
    """TransformerNet's parts at their smallest: reflection-padded convs down and a transposed conv
    up (sides multiples of 4: other sizes are padded)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            ConvLayer(3, 4, 3, stride=2), nn.InstanceNorm2d(4, affine=True), nn.ReLU()
        )
        self.decoder = nn.Sequential(nn.ConvTranspose2d(4, 4, 2, stride=2), ConvLayer(4, 3, 9))

    def forward(self, x):
        return self.decoder(self.encoder(x))


def _with_preprocessing(task, **preprocessing):
    task.preprocessing = preprocessing  # as fit saves it from the data module
    return task


def build(name: str):
    """(task, image_size, export arguments) of each task."""
    torch.manual_seed(0)
    if name == "classification":
        task = ClassifierModule(tiny_backbone(), num_classes=3, class_names=CLASSES, num_features=4)
        task.head.bias.data += torch.tensor([0.5, -0.5, 0.0])  # probabilities that differ
        return _with_preprocessing(task, image_size=16, mean=MEAN, std=STD, channels=3), {
            "bake_normalization": True
        }
    if name == "segmentation":
        task = SegmentationModule(
            TinySegmentationNet(3), num_classes=3, mode="multiclass", class_names=CLASSES
        )
        return _with_preprocessing(task, image_size=16, mean=MEAN, std=STD, channels=3), {}
    if name == "superres":
        return _with_preprocessing(SuperResModule("espcn", scale=2), image_size=12, scale=2), {}
    if name == "style":
        task = StyleTransferModule(TinyStyleNet())
        return _with_preprocessing(task, image_size=16, mean=[0.0] * 3, std=[1.0] * 3, channels=3), {}
    task = FeatureExtractModule(tiny_backbone(), layers=["output", "1"], normalize=True)
    return task, {"image_size": 16}


TASKS = ("classification", "segmentation", "superres", "style", "features")


@pytest.fixture(scope="module", params=TASKS)
def exported(request, tmp_path_factory):
    task, arguments = build(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    paths = export_task(task, folder, **arguments)
    document = json.loads(paths["preprocessing"].read_text())
    return request.param, task.eval(), paths, document


def other_batch(document, unit_range: bool) -> torch.Tensor:
    """5 images (the export traced 2), 13 and 7 pixels larger where the size is dynamic (odd sides,
    which the segmentation and style networks pad inside)."""
    spec = document["input"]
    height, width = spec["image_size"]
    if spec["height"] == "dynamic":
        height, width = height + 13, width + 7
    generator = torch.Generator().manual_seed(7)
    shape = (5, spec["channels"], height, width)
    return torch.rand(shape, generator=generator) if unit_range else torch.randn(shape, generator=generator)


def reference(task, images: torch.Tensor, document) -> list[torch.Tensor]:
    """PyTorch's `export_network` outputs, in the order of the exported names (normalising first
    where the export put mean/std inside)."""
    spec = document["input"]
    if spec["normalization"] == "inside the network":
        images = (images - torch.tensor(spec["mean"]).view(1, -1, 1, 1)) / torch.tensor(spec["std"]).view(
            1, -1, 1, 1
        )
    with torch.no_grad():
        outputs = task.export_network()(images)
    if isinstance(outputs, dict):
        return [outputs[name] for name in task.export_outputs]
    return list(outputs) if isinstance(outputs, tuple) else [outputs]


def assert_close(actual, expected) -> None:
    actual = np.asarray(actual)
    assert actual.shape == tuple(expected.shape)
    np.testing.assert_allclose(actual, expected.numpy(), atol=ATOL, rtol=RTOL)


def test_onnx_runtime_matches_pytorch_on_another_batch_and_image_size(exported):
    name, task, paths, document = exported
    unit = document["input"]["normalization"] != "before the network"
    images = other_batch(document, unit)
    session = onnxruntime.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == list(task.export_outputs)
    assert session.get_inputs()[0].shape[0] == "batch"
    results = session.run(None, {"image": images.numpy()})
    for actual, expected in zip(results, reference(task, images, document), strict=True):
        assert_close(actual, expected)
    assert [check["batch"] for check in document["checks"]["onnx"]] == [3, 1]  # checked when exported
    assert all(check["max_abs_diff"] <= ATOL for check in document["checks"]["onnx"])


def test_torch_export_file_loads_back_and_matches(exported):
    name, task, paths, document = exported
    unit = document["input"]["normalization"] != "before the network"
    images = other_batch(document, unit)
    program = torch.export.load(paths["torch_export"]).module()
    with torch.no_grad():
        results = program(images)
    for actual, expected in zip(results, reference(task, images, document), strict=True):
        assert_close(actual, expected)


def test_the_exported_network_computes_what_the_task_predicts(exported):
    """`export_network` is the task's own prediction, as plain tensors."""
    name, task, paths, document = exported
    images = other_batch(document, unit_range=name in ("superres", "style"))
    outputs = reference(task, images, {"input": {"normalization": "before the network"}})
    with torch.no_grad():
        own = task(images)
    if name == "classification":
        torch.testing.assert_close(outputs[0], task.probabilities(own))
        torch.testing.assert_close(outputs[1], own)
        assert torch.allclose(outputs[0].sum(dim=1), torch.ones(5))
    elif name == "segmentation":
        torch.testing.assert_close(outputs[0], own)  # padded to stride 4 inside, cropped back
        assert outputs[0].shape == (5, 3, 29, 23)
    elif name == "superres":
        torch.testing.assert_close(outputs[0], own.clamp(0, 1))
        assert outputs[0].shape == (5, 3, 50, 38)
    elif name == "style":
        torch.testing.assert_close(outputs[0], own.clamp(0, 1))
    else:
        torch.testing.assert_close(outputs, [own["output"], own["1"]])
        assert torch.allclose(outputs[0].norm(dim=1), torch.ones(5))


EXPECTED = {
    "classification": {
        "outputs": [["probabilities", ["batch", 3]], ["logits", ["batch", 3]]],
        "normalization": "inside the network",
        "task_info": {"class_names": CLASSES, "label_mode": "multiclass", "num_classes": 3},
    },
    "segmentation": {
        "outputs": [["logits", ["batch", 3, "height", "width"]]],
        "normalization": "before the network",
        "task_info": {"class_names": CLASSES, "mode": "multiclass", "num_classes": 3},
    },
    "superres": {
        "outputs": [["upscaled", ["batch", 3, "2*height", "2*width"]]],
        "normalization": "none",
        "task_info": {"scale": 2},
    },
    "style": {
        "outputs": [["stylised", ["batch", 3, "height", "width"]]],
        "normalization": "none",
        "task_info": {},
    },
    "features": {
        "outputs": [["output", ["batch", 4]], ["1", ["batch", 4]]],
        "normalization": "before the network",
        "task_info": {"layers": ["output", "1"], "normalize": True, "pool": "avg"},
    },
}


def test_preprocessing_is_stored_beside_and_inside(exported):
    name, task, paths, document = exported
    expected = EXPECTED[name]
    spec = document["input"]
    assert document["format"] == "vision_lightning export" and document["task"] == type(task).__name__
    assert document["files"] == {"onnx": "model.onnx", "torch_export": "model.pt2"}
    assert document["onnx_opset"] == 18
    assert [[o["name"], o["shape"]] for o in document["outputs"]] == expected["outputs"]
    assert spec["normalization"] == expected["normalization"]
    assert (spec["batch"], spec["height"], spec["width"]) == ("dynamic",) * 3
    assert spec["fixed_size_reason"] is None
    assert {k: document["task_info"].get(k) for k in expected["task_info"]} == expected["task_info"]
    assert document["tolerance"] == {"atol": 1e-4, "rtol": 1e-3, "dtype": "float32"}
    if expected["normalization"] == "none":
        assert spec["mean"] is None and spec["resize"] == "none: whole images at their own size"
    else:
        assert spec["mean"] == pytest.approx(MEAN if name != "features" else [0.485, 0.456, 0.406])
    assert set(document["checks"]) == {"onnx", "torch_export"}
    inside = read_metadata(paths["onnx"])
    assert inside == {key: value for key, value in document.items() if key != "checks"}
    assert sorted(p.name for p in paths["onnx"].parent.iterdir()) == [
        "model.onnx",
        "model.pt2",
        "preprocessing.json",
    ]
