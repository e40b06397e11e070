"""Bad-input catalogue, prediction outputs: each case one exact outcome, through the CLI (exit status
2, one `error:` line naming the path) or the Python API (an InputError with the same sentence)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import cpu_trainer, run_cli
from vision_lightning import SegmentationDataModule, SegmentationModule
from vision_lightning.callbacks.prediction_writer import PredictionWriter
from vision_lightning.data.segmentation_sources import SyntheticShapes
from vision_lightning.outputs.run import RECORD_NAME, OutputRun
from vision_lightning.utils.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
TINY_UNET = {"arch": "classic_unet", "arch_args": {"base_channels": 4}, "log_images": 0}


def images(folder: Path, names=("a", "b"), broken=()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(folder / f"{name}.png")
    for name in broken:
        (folder / f"{name}.png").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A segmentation checkpoint for `predict` and `predict_images` (one training step)."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    trainer = cpu_trainer(max_steps=1, limit_val_batches=0)
    data = SegmentationDataModule(source=SyntheticShapes(8), image_size=16, batch_size=4)
    trainer.fit(SegmentationModule(**TINY_UNET), datamodule=data)
    trainer.save_checkpoint(path)
    return path


def cli_predict(predict_root: Path, out: Path, *extra: str) -> list[str]:
    """`predict` of a tiny untrained U-Net: the outputs are checked before any weight matters."""
    return [
        "predict",
        "--model", "vision_lightning.SegmentationModule",
        "--model.arch", "classic_unet", "--model.arch_args", "{base_channels: 4}",
        "--data", "vision_lightning.SegmentationDataModule",
        "--data.source", "vision_lightning.data.segmentation_sources.SyntheticShapes",
        "--data.source.init_args.samples", "8",
        "--data.image_size", "16", "--data.predict_root", str(predict_root),
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--prediction_writer.output_dir", str(out), *extra,
    ]  # fmt: skip


def predict_folder(out: Path, folder: Path, existing: str = "error") -> None:
    SegmentationModule(**TINY_UNET).predict_to_folder(folder, out, existing=existing)


@contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """`folder` read-only; root ignores modes, so it acts as `nobody` meanwhile."""
    folder.mkdir()
    folder.chmod(0o555)
    as_root = os.geteuid() == 0
    if as_root:
        os.seteuid(65534)
    try:
        yield
    finally:
        if as_root:
            os.seteuid(0)
        folder.chmod(0o755)


# Each case: (tmp_path, checkpoint) -> ("cli", argv) or ("api", a callable), and the expected sentence.
def output_dir_is_a_file(tmp, ckpt):
    (tmp / "out").write_text("x")
    return (
        "cli",
        cli_predict(images(tmp / "in"), tmp / "out"),
    ), f"output folder {tmp / 'out'} is a file"


def output_dir_inside_a_file(tmp, ckpt):
    (tmp / "file").write_text("x")
    out = tmp / "file/out"
    return ("cli", cli_predict(images(tmp / "in"), out)), f"output folder {out} lies inside a file"


def predict_images_output_dir_is_a_file(tmp, ckpt):
    (tmp / "out").write_text("x")
    argv = [
        "predict_images",
        "--ckpt_path",
        ckpt,
        "--images",
        images(tmp / "in"),
        "--output_dir",
        tmp / "out",
    ]
    return ("cli", argv), f"output folder {tmp / 'out'} is a file"


def output_dir_not_writable(tmp, ckpt):
    base = Path(tempfile.mkdtemp())  # not under pytest's folders, which only root may enter
    base.chmod(0o755)
    folder = images(base / "in")

    def call():
        try:
            with unwritable(base / "out"):
                predict_folder(base / "out", folder)
        finally:
            shutil.rmtree(base)

    return ("api", call), f"output folder {base / 'out'} is not writable: Permission denied"


def output_dir_not_empty(tmp, ckpt):
    (tmp / "out").mkdir()
    (tmp / "out/old.png").write_text("x")
    argv = cli_predict(images(tmp / "in"), tmp / "out")
    return ("cli", argv), (
        f"output folder {tmp / 'out'} is not empty (1 entries: old.png): predict into an empty folder, or set "
        "existing (CLI: --prediction_writer.existing) to 'overwrite'"
    )


def overwrite_with_files_no_run_wrote(tmp, ckpt):
    (tmp / "out").mkdir()
    (tmp / "out/notes.txt").write_text("mine")
    argv = cli_predict(images(tmp / "in"), tmp / "out", "--prediction_writer.existing", "overwrite")
    return (
        "cli",
        argv,
    ), f"output folder {tmp / 'out'} holds 1 file(s) that no recorded predict run wrote (notes.txt)"


def add_with_a_name_that_exists(tmp, ckpt):
    (tmp / "out/masks").mkdir(parents=True)
    (tmp / "out/masks/a.png").write_text("x")
    argv = cli_predict(images(tmp / "in"), tmp / "out", "--prediction_writer.existing", "add")
    return ("cli", argv), f"{tmp / 'out/masks/a.png'} exists already and existing"


def every_input_unreadable_cli(tmp, ckpt):
    folder = images(tmp / "in", names=(), broken=("x", "y"))
    argv = cli_predict(folder, tmp / "out")
    return (
        "cli",
        argv,
    ), f"nothing could be read to predict in predict images {folder}: all 2 image(s) are unreadable"


def every_input_unreadable_predict_images(tmp, ckpt):
    folder = images(tmp / "in", names=(), broken=("x",))
    argv = ["predict_images", "--ckpt_path", ckpt, "--images", folder, "--output_dir", tmp / "out"]
    return (
        "cli",
        argv,
    ), f"nothing could be read to predict in images {folder}: all 1 image(s) are unreadable"


def folder_locked_by_another_run(tmp, ckpt):
    folder = images(tmp / "in")

    def call():
        holder = OutputRun(tmp / "out")
        holder.prepare()
        try:
            predict_folder(tmp / "out", folder, existing="overwrite")
        finally:
            holder.release()

    return ("api", call), f"output folder {tmp / 'out'} is being written by another predict run"


def overwrite_with_a_broken_record(tmp, ckpt):
    (tmp / "out").mkdir()
    (tmp / "out" / RECORD_NAME).write_text("{cut sho")
    call = lambda: predict_folder(tmp / "out", images(tmp / "in"), existing="overwrite")  # noqa: E731
    return ("api", call), f"{tmp / 'out' / RECORD_NAME} cannot be read as a prediction run record"


def existing_not_a_choice(tmp, ckpt):
    return ("api", lambda: PredictionWriter(str(tmp / "out"), existing="replace")), (
        "existing must be one of error, overwrite, add, got 'replace'"
    )


CASES: list[Callable] = [
    output_dir_is_a_file,
    output_dir_inside_a_file,
    predict_images_output_dir_is_a_file,
    output_dir_not_writable,
    output_dir_not_empty,
    overwrite_with_files_no_run_wrote,
    add_with_a_name_that_exists,
    every_input_unreadable_cli,
    every_input_unreadable_predict_images,
    folder_locked_by_another_run,
    overwrite_with_a_broken_record,
    existing_not_a_choice,
]


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_bad_output_input(case, tmp_path: Path, checkpoint: Path, capsys):
    (kind, action), expected = case(tmp_path, checkpoint)
    if kind == "api":
        with pytest.raises(InputError) as caught:
            action()
        assert expected in str(caught.value)
        return
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_cli(*action)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], err[-2000:]
    assert "Traceback" not in err


def test_some_unreadable_inputs_are_named_in_a_warning_and_in_the_record(tmp_path: Path, caplog):
    folder = images(tmp_path / "in", names=("a",), broken=("b",))
    with caplog.at_level(logging.WARNING):
        predict_folder(tmp_path / "out", folder)
    assert f"{folder / 'b.png'}" in caplog.text
    record = json.loads((tmp_path / "out" / RECORD_NAME).read_text())
    assert (record["items_predicted"], record["skipped"]) == (1, [str(folder / "b.png")])


def test_a_refused_run_leaves_the_folder_as_it_was(tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out/old.png").write_text("x")
    with pytest.raises(InputError, match="is not empty"):
        cpu_trainer(callbacks=[PredictionWriter(str(tmp_path / "out"))]).predict(
            SegmentationModule(**TINY_UNET),
            datamodule=SegmentationDataModule(
                source=SyntheticShapes(8), image_size=16, predict_root=str(images(tmp_path / "in"))
            ),
            return_predictions=False,
        )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["old.png"]
