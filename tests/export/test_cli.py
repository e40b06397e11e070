"""`python -m vision_lightning export` from a checkpoint alone, and what the exporter refuses, each in
one sentence: unknown formats, files that exist, missing checkpoints and packages, tasks that have no
image network, and exports that do not match PyTorch (nothing is then written)."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

from tests.conftest import cpu_trainer, run_cli
from vision_lightning import (
    ClassifierModule,
    FeatureExtractModule,
    ImageClassificationDataModule,
    KNNClassifierModule,
    StyleTransferModule,
    export_task,
)
from vision_lightning.data.classification_sources import SyntheticShapes
from vision_lightning.export import ATOL, RTOL
from vision_lightning.tasks.loading import load_task
from vision_lightning.utils.errors import InputError


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A classifier fitted for one step on synthetic shapes: CIFAR LeNet, whose flattened features
    fix its input at 32x32, with the data module's preprocessing saved in the checkpoint."""
    folder = tmp_path_factory.mktemp("fit")
    data = ImageClassificationDataModule(
        SyntheticShapes(samples=16, num_classes=3), image_size=32, batch_size=8
    )
    model = ClassifierModule("cifar_lenet", num_classes=3, class_names=data.class_names, log_images=0)
    trainer = cpu_trainer(max_steps=1, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, data)
    trainer.save_checkpoint(folder / "last.ckpt")
    return folder / "last.ckpt"


@pytest.fixture(scope="module")
def cli_export(checkpoint, tmp_path_factory):
    output = tmp_path_factory.mktemp("cli") / "exported"
    run_cli("export", "--ckpt_path", checkpoint, "--output", output)
    return output


def test_the_cli_exports_a_checkpoint_alone(checkpoint, cli_export, capsys):
    assert sorted(p.name for p in cli_export.iterdir()) == ["model.onnx", "model.pt2", "preprocessing.json"]
    document = json.loads((cli_export / "preprocessing.json").read_text())
    task = load_task(checkpoint)
    spec = document["input"]
    assert document["task"] == "ClassifierModule"
    assert document["task_info"]["class_names"] == task.class_names == task.preprocessing["class_names"]
    assert spec["mean"] == pytest.approx(task.preprocessing["mean"])
    assert spec["std"] == pytest.approx(task.preprocessing["std"])
    assert spec["normalization"] == "before the network" and spec["resize"] == "to 32x32"
    # the LeNet's Linear layer on flattened features takes 32x32 images only: detected, and stated
    assert (spec["batch"], spec["height"], spec["width"]) == ("dynamic", 32, 32)
    assert spec["fixed_size_reason"].startswith("the network's code depends on the exact input size")
    images = torch.randn(3, 3, 32, 32)
    session = onnxruntime.InferenceSession(str(cli_export / "model.onnx"), providers=["CPUExecutionProvider"])
    probabilities, logits = session.run(None, {"image": images.numpy()})
    with torch.no_grad():
        own = task(images)
    np.testing.assert_allclose(logits, own.numpy(), atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(probabilities, task.probabilities(own).numpy(), atol=ATOL, rtol=RTOL)


def test_an_existing_file_is_refused_then_replaced_when_asked(checkpoint, tmp_path, capsys):
    output = tmp_path / "exported"
    run_cli("export", "--ckpt_path", checkpoint, "--output", output, "--format", "torch_export")
    assert f"torch_export: {output / 'model.pt2'}" in capsys.readouterr().out
    first = (output / "model.pt2").stat().st_mtime_ns
    with pytest.raises(SystemExit) as exit_info:
        run_cli("export", "--ckpt_path", checkpoint, "--output", output, "--format", "torch_export")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {output / 'model.pt2'} exists already: export into another folder, or set "
        "existing='overwrite' (CLI: --existing overwrite)"
    )
    assert (output / "model.pt2").stat().st_mtime_ns == first
    run_cli("export", "--ckpt_path", checkpoint, "--output", output, "--format", "torch_export",
            "--existing", "overwrite")  # fmt: skip
    assert (output / "model.pt2").stat().st_mtime_ns != first
    assert sorted(p.name for p in output.iterdir()) == [
        "model.pt2",
        "preprocessing.json",
    ]  # no temporary files


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--format", "tflite"], "unknown export format 'tflite': choose from onnx, torch_export"),
        (
            ["--format", "torchscript"],
            "format torchscript is not written: TorchScript is deprecated in torch 2.x (torch.jit.trace says "
            "to use torch.export) and a trace freezes the image size: use torch_export (a .pt2 file) or onnx",
        ),
        (["--image_size", "32", "32", "3"], "export: --image_size takes N or H W, got 3 numbers"),
        (
            ["--existing", "add"],
            "export: argument --existing: invalid choice: 'add' (choose from 'error', 'overwrite') (--help lists "
            "the options)",
        ),
    ],
)
def test_bad_arguments_are_one_sentence(checkpoint, tmp_path, capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("export", "--ckpt_path", checkpoint, "--output", tmp_path / "out", *arguments)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not (tmp_path / "out").exists()


def test_a_missing_checkpoint_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_cli("export", "--ckpt_path", tmp_path / "none.ckpt", "--output", tmp_path / "out")
    assert capsys.readouterr().err.strip() == f"error: checkpoint {tmp_path / 'none.ckpt'} does not exist"


def test_missing_onnx_packages_say_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    with pytest.raises(InputError) as error:
        export_task(ClassifierModule("lenet5", num_classes=3), tmp_path)
    assert str(error.value) == (
        'ONNX export needs the onnxruntime package(s), which are not installed: pip install "vision_lightning[export]"'
    )


def test_tasks_without_an_image_network_say_why(tmp_path):
    with pytest.raises(
        InputError, match=r"^KNNClassifierModule cannot be exported: it defines no export_network$"
    ):
        export_task(KNNClassifierModule(num_classes=3), tmp_path, formats=["torch_export"])
    probe = ClassifierModule("identity", num_classes=3, num_features=8)
    with pytest.raises(InputError) as error:
        export_task(probe, tmp_path, formats=["torch_export"], image_size=8)
    assert str(error.value) == (
        "a ClassifierModule with backbone identity takes cached embeddings, not images: export the "
        "FeatureExtractModule that computed the embeddings instead"
    )
    with pytest.raises(InputError) as error:
        export_task(StyleTransferModule(), tmp_path, formats=["torch_export"])
    assert str(error.value) == (
        "StyleTransferModule records no image size (it was not trained with a data module): pass image_size "
        "(CLI: --image_size N)"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_declared_fixed_size_is_kept_and_stated(tmp_path):
    """`pool: flatten` would give vectors of another width at another size: exported at one size."""
    backbone = nn.Sequential(nn.Conv2d(3, 2, 3, stride=2, padding=1), nn.ReLU())
    task = FeatureExtractModule(backbone, pool="flatten")
    paths = export_task(task, tmp_path, formats=["torch_export"], image_size=(8, 12))
    spec = json.loads(paths["preprocessing"].read_text())["input"]
    assert (spec["batch"], spec["height"], spec["width"]) == ("dynamic", 8, 12)
    assert spec["fixed_size_reason"] == "pool flatten gives vectors whose width depends on the image size"
    program = torch.export.load(paths["torch_export"]).module()
    assert program(torch.randn(5, 3, 8, 12))[0].shape == (5, 2 * 4 * 6)


def test_an_export_that_does_not_match_is_not_written(tmp_path, monkeypatch):
    import vision_lightning.export.checks as checks

    monkeypatch.setattr(checks, "ATOL", -1.0)  # no difference passes
    backbone = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    task = ClassifierModule(backbone, num_classes=3, num_features=2)
    with pytest.raises(InputError, match=r"^the torch.export export differs from PyTorch by up to .* in output "
                       r"probabilities \(tolerance atol -1.0 \+ rtol 0.001\): the export does not match and was "
                       r"not written$"):  # fmt: skip
        export_task(task, tmp_path / "out", formats=["torch_export"], image_size=8)
    assert list((tmp_path / "out").iterdir()) == []
