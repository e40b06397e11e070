"""A predict run's hold on its output folder: temporary names, lock, journal, record, `existing`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vision_lightning.outputs.files import CsvSink, save_png
from vision_lightning.outputs.run import LOCK_NAME, RECORD_NAME, OutputRun, active, write_run
from vision_lightning.utils.errors import InputError


def rows(outputs):
    for path, value in zip(outputs["path"], outputs["value"]):
        yield [[path, value]]


def csv_run(folder: Path, values: list[int], existing: str = "error", name: str = "predictions.csv") -> Path:
    """One complete run writing `name` with a row per value; returns the record's path."""
    run = OutputRun(folder, existing)
    batches = [{"path": [f"img{v}.png" for v in values], "value": values}]
    write_run(run, lambda: CsvSink(folder / name, ["path", "value"], rows), batches, skipped=["bad.png"])
    return folder / RECORD_NAME


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def record(folder: Path) -> dict:
    return json.loads((folder / RECORD_NAME).read_text())


def test_a_run_writes_its_files_then_its_record(tmp_path: Path):
    out = tmp_path / "out"
    csv_run(out, [1, 2, 3])
    assert files(out) == [RECORD_NAME, "predictions.csv"]  # no temporary file, no lock left
    written = record(out)
    assert written["files"] == [{"path": "predictions.csv", "rows": 3}]
    assert written["items_predicted"] == 3
    assert (written["items_skipped"], written["skipped"]) == (1, ["bad.png"])
    assert written["run_id"] and written["earlier_runs"] == []


def test_temporary_names_are_hidden_and_unique_per_run(tmp_path: Path):
    first, second = OutputRun(tmp_path), OutputRun(tmp_path)
    names = first.partial(tmp_path / "predictions.csv"), second.partial(tmp_path / "predictions.csv")
    assert names[0] != names[1]
    assert all(name.name.startswith(".predictions.csv.") and name.suffix == ".partial" for name in names)


def test_a_folder_that_is_not_empty_is_refused_by_default(tmp_path: Path):
    (tmp_path / "old.csv").write_text("x\n")
    with pytest.raises(InputError, match=rf"output folder {tmp_path} is not empty .*'overwrite'.*'add'"):
        OutputRun(tmp_path).prepare()
    assert files(tmp_path) == ["old.csv"]


def test_a_second_run_is_refused_while_the_first_writes(tmp_path: Path):
    first = OutputRun(tmp_path)
    first.prepare()
    with pytest.raises(InputError, match="is being written by another predict run"):
        OutputRun(tmp_path, "overwrite").prepare()
    first.release()
    second = OutputRun(tmp_path)
    second.prepare()  # the folder is free (and empty) again
    second.release()


def test_a_lock_file_left_by_a_killed_run_does_not_block(tmp_path: Path):
    (tmp_path / LOCK_NAME).write_text("20250101T000000-1-abcdef\n")  # nobody holds it
    csv_run(tmp_path, [1])
    assert files(tmp_path) == [RECORD_NAME, "predictions.csv"]


def interrupted_run(folder: Path) -> None:
    """A run that moved one mask into place and was half way through its CSV when it died."""
    run = OutputRun(folder)
    run.prepare()
    run.open_journal()
    with active(run):
        (folder / "masks").mkdir()
        save_png(np.ones((2, 2), np.uint8), folder / "masks/a.png")
        sink = CsvSink(folder / "masks.csv", ["id"], lambda outputs: ([[p]] for p in outputs))
        sink.write(["a"])
        sink._handle.flush()
    run.release()  # no close, no finish: what a crash leaves


def test_an_interrupted_run_leaves_no_record_and_overwrite_cleans_it_up(tmp_path: Path):
    interrupted_run(tmp_path)
    left = files(tmp_path)
    assert RECORD_NAME not in left and "masks.csv" not in left and "masks/a.png" in left
    assert all(name.endswith(".partial") for name in left if name != "masks/a.png")
    with pytest.raises(InputError, match="is not empty"):
        csv_run(tmp_path, [1])
    csv_run(tmp_path, [1], existing="overwrite")
    assert files(tmp_path) == [RECORD_NAME, "predictions.csv"]  # the journaled mask and the partials gone
    assert not (tmp_path / "masks").exists()


def test_overwrite_replaces_what_the_record_lists(tmp_path: Path):
    csv_run(tmp_path, [1, 2], name="old.csv")
    csv_run(tmp_path, [3], existing="overwrite")
    assert files(tmp_path) == [RECORD_NAME, "predictions.csv"]
    assert record(tmp_path)["items_predicted"] == 1


def test_overwrite_never_deletes_files_no_run_wrote(tmp_path: Path):
    csv_run(tmp_path, [1])
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(
        InputError, match=r"holds 1 file\(s\) that no recorded predict run wrote \(notes.txt\)"
    ):
        csv_run(tmp_path, [2], existing="overwrite")
    assert files(tmp_path) == ["notes.txt", RECORD_NAME, "predictions.csv"]


def test_add_keeps_earlier_files_and_refuses_a_name_that_exists(tmp_path: Path):
    csv_run(tmp_path, [1])
    csv_run(tmp_path, [2, 3], existing="add", name="more.csv")
    assert files(tmp_path) == ["more.csv", RECORD_NAME, "predictions.csv"]
    written = record(tmp_path)
    assert written["files"] == [{"path": "more.csv", "rows": 2}]
    assert [run["files"] for run in written["earlier_runs"]] == [[{"path": "predictions.csv", "rows": 1}]]
    with pytest.raises(
        InputError, match=rf"{tmp_path / 'predictions.csv'} exists already .*'add' never replaces"
    ):
        csv_run(tmp_path, [4], existing="add")
    csv_run(tmp_path, [5], existing="overwrite")  # both earlier runs' files go
    assert files(tmp_path) == [RECORD_NAME, "predictions.csv"]


def test_existing_must_be_a_known_choice(tmp_path: Path):
    with pytest.raises(InputError, match="existing must be one of error, overwrite, add, got 'replace'"):
        OutputRun(tmp_path, "replace")
