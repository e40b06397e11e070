"""Bad checkpoints, config mistakes and output folders: one line naming the file or key and exit
status 2 through the CLI; the same sentence as a typed exception through the Python API."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import cpu_trainer, run_cli
from vision_lightning import ClassifierModule, SegmentationModule
from vision_lightning.callbacks.checkpoint import ModelCheckpoint
from vision_lightning.data import ImageClassificationDataModule
from vision_lightning.data.classification_sources import SyntheticShapes
from vision_lightning.tasks.loading import load_task
from vision_lightning.utils.errors import InputError, MissingInputError
from vision_lightning.utils.weights import read_state_dict

ROOT = Path(__file__).resolve().parents[2]
CLASSIFICATION = ROOT / "configs/quickstart/classification.yaml"
SEGMENTATION = ROOT / "configs/quickstart/segmentation.yaml"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
TINY = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]


class CraftedPayload:
    """Unpickling this touches `marker`: what a malicious checkpoint would do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A real checkpoint of each of two tasks, and every kind of bad file, by name."""
    root = tmp_path_factory.mktemp("checkpoints")
    for name, config in (("classification", CLASSIFICATION), ("segmentation", SEGMENTATION)):
        run_cli("fit", "--config", config, "--trainer.default_root_dir", root / name, "--trainer.logger", "false",
                "--checkpoint.dirpath", root / name, *QUIET, *TINY)  # fmt: skip
    good = root / "classification/last.ckpt"
    files = {
        "classification": good,
        "segmentation": root / "segmentation/last.ckpt",
        "missing": root / "missing.ckpt",
        "folder": root / "classification",
        "empty": root / "empty.ckpt",
        "truncated": root / "truncated.ckpt",
        "random bytes": root / "random.ckpt",
        "yaml": root / "config.ckpt",
        "crafted": root / "crafted.ckpt",
        "list": root / "list.ckpt",
    }
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["random bytes"].write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)).numpy().tobytes())  # fmt: skip
    shutil.copy(CLASSIFICATION, files["yaml"])
    checkpoint = torch.load(good, weights_only=True)
    checkpoint["callbacks"] = CraftedPayload(root / "crafted-ran")
    torch.save(checkpoint, files["crafted"])
    torch.save([1, 2, 3], files["list"])
    return files


BAD_CHECKPOINTS = {
    "missing": "does not exist",
    "folder": "is a folder, not a checkpoint file",
    "empty": r"is empty \(0 bytes\)",
    "truncated": "is not a complete PyTorch checkpoint",
    "random bytes": "is not a complete PyTorch checkpoint",
    "yaml": "is not a complete PyTorch checkpoint",
    "crafted": "holds Python objects other than weights",
    "list": "is not a Lightning checkpoint",
    "segmentation": "was written by SegmentationModule, not ClassifierModule",
}


def _one_line_exit_2(capsys, *args) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(lines), lines
    assert not any(line.startswith(("usage:", "  [", "tip:")) for line in lines), lines
    return errors[0]


# ------------------------------------------------------------------ checkpoints through the CLI
@pytest.mark.parametrize("kind", sorted(BAD_CHECKPOINTS))
def test_predict_names_a_bad_checkpoint(checkpoints, kind, tmp_path, capsys):
    path = checkpoints[kind]
    line = _one_line_exit_2(capsys, "predict", "--config", CLASSIFICATION, "--ckpt_path", path, "--trainer.logger", "false",
                            "--prediction_writer.output_dir", tmp_path / "out", *QUIET)  # fmt: skip
    assert str(path) in line
    assert re.search(BAD_CHECKPOINTS[kind], line), line


@pytest.mark.parametrize(("subcommand", "kind"), [("fit", "truncated"), ("validate", "segmentation"),
                                                  ("test", "empty"), ("fit", "crafted")])  # fmt: skip
def test_every_subcommand_names_a_bad_checkpoint(checkpoints, subcommand, kind, tmp_path, capsys):
    path = checkpoints[kind]
    line = _one_line_exit_2(capsys, subcommand, "--config", CLASSIFICATION, "--ckpt_path", path,
                            "--trainer.default_root_dir", tmp_path, *QUIET, *TINY)  # fmt: skip
    assert str(path) in line


@pytest.mark.parametrize("kind", ["missing", "random bytes", "crafted"])
def test_predict_images_names_a_bad_checkpoint(checkpoints, kind, tmp_path, capsys):
    line = _one_line_exit_2(capsys, "predict_images", "--ckpt_path", checkpoints[kind], "--images", tmp_path)
    assert str(checkpoints[kind]) in line


# ------------------------------------------------------------------ checkpoints through Python
@pytest.mark.parametrize("kind", sorted(BAD_CHECKPOINTS))
def test_load_from_checkpoint_raises_the_same_sentence(checkpoints, kind):
    expected = MissingInputError if kind == "missing" else InputError
    with pytest.raises(expected, match=BAD_CHECKPOINTS[kind]):
        ClassifierModule.load_from_checkpoint(checkpoints[kind])


@pytest.mark.parametrize("kind", ["truncated", "crafted", "folder"])
def test_load_task_raises_the_same_sentence(checkpoints, kind):
    with pytest.raises(InputError, match=BAD_CHECKPOINTS[kind]):
        load_task(checkpoints[kind])


@pytest.mark.parametrize("kind", ["truncated", "segmentation"])
def test_a_plain_lightning_trainer_names_a_bad_checkpoint(checkpoints, kind):
    """`pl.Trainer().fit(model, ckpt_path=...)` from a user's own script, not the CLI."""
    model = ClassifierModule(backbone="cifar_lenet", num_classes=4, in_channels=3, pretrained=False)
    data = ImageClassificationDataModule(
        SyntheticShapes(samples=8, num_classes=4), image_size=32, batch_size=4
    )
    with pytest.raises(InputError, match=BAD_CHECKPOINTS[kind]):
        cpu_trainer(max_epochs=1).fit(model, datamodule=data, ckpt_path=checkpoints[kind])


def test_a_weights_file_that_is_no_state_dict_is_named(checkpoints):
    with pytest.raises(InputError, match=f"weights file {checkpoints['truncated']} is not a complete"):
        read_state_dict(checkpoints["truncated"])


def test_a_segmentation_checkpoint_is_not_loaded_as_a_classifier(checkpoints):
    with pytest.raises(InputError, match="written by ClassifierModule, not SegmentationModule"):
        SegmentationModule.load_from_checkpoint(checkpoints["classification"])


# ------------------------------------------------------------------ config mistakes
def test_a_mistyped_config_key_names_it_with_a_suggestion(tmp_path, capsys):
    config = tmp_path / "typo.yaml"
    config.write_text(CLASSIFICATION.read_text().replace("max_epochs:", "max_epoch:"))
    line = _one_line_exit_2(capsys, "fit", "--config", config)
    assert line == "error: trainer has no option max_epoch (did you mean max_epochs?)"


def test_a_mistyped_model_argument_names_the_class(capsys):
    line = _one_line_exit_2(
        capsys, "fit", "--config", CLASSIFICATION, "--model.init_args.backbon", "resnet18"
    )
    assert line == "error: ClassifierModule has no argument backbon (did you mean backbone?)"


def test_a_mistyped_data_source_argument_names_the_source(capsys):
    line = _one_line_exit_2(
        capsys, "fit", "--config", CLASSIFICATION, "--data.init_args.source.init_args.sample", "4"
    )
    assert line.startswith("error: SyntheticShapes has no argument sample (did you mean samples?)"), line


def test_a_value_of_the_wrong_type_names_the_key(capsys):
    line = _one_line_exit_2(capsys, "fit", "--config", CLASSIFICATION, "--trainer.max_epochs", "three")
    assert line == "error: trainer.max_epochs: expected int, got three"


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("trainer:\n  max_epochs: 1\n model: x: y\n")
    line = _one_line_exit_2(capsys, "fit", "--config", config)
    assert f"{config} is not valid YAML" in line and "line 3" in line


def test_a_missing_config_file_is_named(tmp_path, capsys):
    line = _one_line_exit_2(capsys, "fit", "--config", tmp_path / "nowhere.yaml")
    assert "config file does not exist" in line and "nowhere.yaml" in line


def test_an_unknown_subcommand_lists_the_subcommands(capsys):
    line = _one_line_exit_2(capsys, "fitt", "--config", CLASSIFICATION)
    assert "'fitt'" in line and "'fit'" in line


def test_a_negative_learning_rate_is_one_line(tmp_path, capsys):
    line = _one_line_exit_2(capsys, "fit", "--config", CLASSIFICATION, "--model.init_args.optimizer.init_args.lr", "-1",
                            "--trainer.default_root_dir", tmp_path, *QUIET, *TINY)  # fmt: skip
    assert "learning rate" in line.lower() and "-1" in line


# ------------------------------------------------------------------ output folders
@pytest.mark.parametrize("key", ["--trainer.default_root_dir", "--checkpoint.dirpath"])
def test_an_output_folder_that_is_a_file_is_refused_before_training(key, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _one_line_exit_2(capsys, "fit", "--config", CLASSIFICATION, key, blocker / "run", *QUIET, *TINY)
    assert line == f"error: {key} {blocker / 'run'} cannot be made: {blocker} is a file, not a folder"


def test_a_checkpoint_folder_under_a_file_is_refused_through_python(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    model = ClassifierModule(backbone="cifar_lenet", num_classes=4, in_channels=3, pretrained=False)
    data = ImageClassificationDataModule(
        SyntheticShapes(samples=8, num_classes=4), image_size=32, batch_size=4
    )
    trainer = cpu_trainer(
        callbacks=[ModelCheckpoint(dirpath=blocker / "checkpoints")], enable_checkpointing=True
    )
    with pytest.raises(InputError, match="checkpoint folder .* is a file, not a folder"):
        trainer.fit(model, datamodule=data)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model.init_args.lr_scheduler", "{class_path: torch.optim.lr_scheduler.StepLR}"],
         "error: model.lr_scheduler (StepLR): the following arguments are required: step_size"),
        (["--model.init_args.optimizer.init_args.lr", "fast"], "error: model.optimizer.lr: expected float, got fast"),
        (["--data.init_args.source.init_args.samples", "many"], "error: data.source.samples: expected int"),
        (["--trainer.max_epochs", "-5"], "error: `max_epochs` must be a non-negative integer or -1. You passed in -5."),
        (["--trainer.accelerator", "mps"], "error: `MPSAccelerator` can not run on your system"),
    ],
    ids=["scheduler argument missing", "learning rate not a number", "nested source value", "max_epochs negative",
         "accelerator absent"],
)  # fmt: skip
def test_values_that_cannot_work_are_one_line(args, expected, tmp_path, capsys):
    line = _one_line_exit_2(capsys, "fit", "--config", CLASSIFICATION, "--trainer.default_root_dir", tmp_path,
                            *QUIET, *TINY, *args)  # fmt: skip
    assert line.startswith(expected), line


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["--images", "x"], "error: predict_images: the following arguments are required: --ckpt_path"),
     (["--ckpt_path", "x", "--images", "y", "--batch_size", "q"], "error: predict_images: argument --batch_size")],
    ids=["checkpoint missing", "batch size not a number"],
)  # fmt: skip
def test_predict_images_options_are_one_line(args, expected, capsys):
    assert _one_line_exit_2(capsys, "predict_images", *args).startswith(expected)


def test_checkpoint_errors_are_one_type_python_callers_can_catch(checkpoints):
    from vision_lightning import CheckpointError

    with pytest.raises(CheckpointError):
        load_task(checkpoints["random bytes"])
