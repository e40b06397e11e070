"""One predict run's hold on its output folder: unique temporary names, atomic moves into place, a
journal of what it wrote, and a completion record written last.

- Every file is written as `.<name>.<run id>.partial` beside its final name and moved into place
  with `os.replace` when complete; the run id (time, process id, random) is unique per run, so two
  runs never write one temporary file.
- While a run writes, it holds a lock (`.prediction_run.lock`, an `flock` the system releases
  when the process dies): a second run into the same folder is refused instead of mixing its rows
  with the first one's.
- Each process appends the files it moved into place to its journal
  (`.prediction_run.<run id>.rank<N>.partial`) before moving them, so files of a run that was
  killed half way are known to the next run.
- At the end the first process writes `prediction_run.json` (the run id, times, checkpoint, items
  predicted and skipped, and every file with its row count), atomically and last: its presence
  means the run completed.
- A folder that is not empty is refused unless `existing` says `overwrite` (delete what earlier
  runs recorded or journaled, and stale temporary files; files no run wrote are never deleted:
  they are named and the run refused) or `add` (keep everything; a file the run would write that
  exists already is an error; the record keeps the earlier runs' entries under `earlier_runs`).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, TextIO

from vision_lightning.utils.errors import InputError

try:
    import fcntl
except ImportError:  # Windows: an exclusive-create lock file instead (removed by hand after a crash)
    fcntl = None  # type: ignore[assignment]

Existing = Literal["error", "overwrite", "add"]
EXISTING_CHOICES = ("error", "overwrite", "add")
RECORD_NAME = "prediction_run.json"
LOCK_NAME = ".prediction_run.lock"
RECORD_FORMAT = "vision_lightning prediction run"
_RUN_ID = r"\d{8}T\d{6}-\d+-[0-9a-f]{6}"
_TEMPORARY = re.compile(rf"^\..+\.(?P<run>{_RUN_ID})(\.rank\d+)?\.partial$")
_JOURNAL = re.compile(rf"^\.prediction_run\.(?P<run>{_RUN_ID})\.rank\d+\.partial$")


def new_run_id() -> str:
    """`20250101T120000-<pid>-<6 hex>`: sortable by start time, unique across processes and runs."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{secrets.token_hex(3)}"


class OutputRun:
    """The files one predict run writes under `folder` (see the module docstring).

    Lifecycle: the first process calls `prepare()` (folder, lock, earlier contents), every process
    `open_journal()`, the sinks `partial()` / `commit()` each file, every process `close_journal(items)`
    and, when all have, the first one `finish(...)`; `release()` in every case (also on errors).
    A run without a folder (`OutputRun()`) only gives unique temporary names: sinks used on their own.
    """

    def __init__(
        self,
        folder: str | Path | None = None,
        existing: str = "error",
        run_id: str | None = None,
        rank: int = 0,
        option: str = "existing",
    ) -> None:
        if existing not in EXISTING_CHOICES:
            raise InputError(f"existing must be one of {', '.join(EXISTING_CHOICES)}, got {existing!r}")
        self.folder = None if folder is None else Path(folder)
        self.existing = existing
        self.run_id = run_id or new_run_id()
        self.rank = rank
        self.option = option
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self._journal: TextIO | None = None
        self._lock: int | None = None

    # ------------------------------------------------------------------ files
    def partial(self, path: Path) -> Path:
        """The temporary name `path` is written under; in `add` mode, refuses a name that exists."""
        if self.existing == "add" and path.exists():
            raise InputError(
                f"{path} exists already and {self.option}='add' never replaces a file: predict into "
                "another folder, or set it to 'overwrite'"
            )
        return path.with_name(f".{path.name}.{self.run_id}.partial")

    def commit(self, partial: Path, path: Path, rows: int | None = None) -> Path:
        """Move the finished `partial` to `path` (atomically), journaled first."""
        if self._journal is not None:
            entry: dict[str, Any] = {"path": self._relative(path)}
            if rows is not None:
                entry["rows"] = rows
            self._journal.write(json.dumps(entry) + "\n")
            self._journal.flush()
        if self.existing == "add" and path.exists():
            partial.unlink(missing_ok=True)
            self.partial(path)  # raises, naming the file
        os.replace(partial, path)
        return path

    def _relative(self, path: Path) -> str:
        if self.folder is None:
            return str(path)
        try:
            return Path(path).relative_to(self.folder).as_posix()
        except ValueError:
            return str(path)

    # ------------------------------------------------------------- lifecycle
    def prepare(self) -> None:
        """Create the folder, take its lock and deal with what earlier runs left as `existing` says."""
        folder = self._folder()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise InputError(f"output folder {folder} is a file, not a folder") from None
        except NotADirectoryError:
            raise InputError(f"output folder {folder} lies inside a file, not a folder") from None
        except PermissionError:
            raise InputError(f"output folder {folder} cannot be created: permission denied") from None
        if not folder.is_dir():
            raise InputError(f"output folder {folder} is a file, not a folder")
        self._take_lock(folder)
        try:
            self._check_existing(folder)
        except BaseException:
            self.release()
            raise

    def open_journal(self) -> None:
        path = self._journal_path(self.rank)
        try:
            self._journal = path.open("w")
        except OSError as error:
            raise InputError(f"output folder {self._folder()} is not writable: {error.strerror}") from None

    def close_journal(self, items: int) -> None:
        """End this process's journal with the number of items it predicted."""
        if self._journal is not None:
            self._journal.write(json.dumps({"items": items}) + "\n")
            self._journal.close()
            self._journal = None

    def finish(
        self, world_size: int = 1, skipped: Sequence[str] = (), checkpoint: str | None = None, **extra: Any
    ) -> Path:
        """Write the completion record from every process's journal (then deleted); returns its path."""
        folder = self._folder()
        journals = [self._journal_path(rank) for rank in range(world_size)]
        items = sum(_journal_items(journal) for journal in journals)
        earlier = self._earlier_runs(folder) if self.existing == "add" else []
        head = {
            "format": RECORD_FORMAT,
            "version": 1,
            "run_id": self.run_id,
            "started": self.started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "checkpoint": None if checkpoint is None else str(checkpoint),
            **extra,
            "items_predicted": items,
            "items_skipped": len(skipped),
            "skipped": list(skipped),
        }
        record = folder / RECORD_NAME
        partial = record.with_name(f".{RECORD_NAME}.{self.run_id}.partial")
        with partial.open("w") as out:
            out.write("{\n")
            for key, value in head.items():
                out.write(f"  {json.dumps(key)}: {json.dumps(value)},\n")
            out.write(f'  "earlier_runs": {json.dumps(earlier)},\n  "files": [')
            separator = "\n    "
            for entry in _journal_files(journals):
                if (folder / entry["path"]).exists():  # parts merged away are gone
                    out.write(separator + json.dumps(entry))
                    separator = ",\n    "
            out.write("\n  ]\n}\n")
        os.replace(partial, record)
        for journal in journals:
            journal.unlink(missing_ok=True)
        return record

    def release(self) -> None:
        """Close the journal (left for the next `overwrite` run to clean up) and drop the lock."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._lock is not None:
            if self.folder is not None:
                (self.folder / LOCK_NAME).unlink(missing_ok=True)
            os.close(self._lock)
            self._lock = None

    # ------------------------------------------------------------- internals
    def _folder(self) -> Path:
        if self.folder is None:
            raise InputError("this output run has no folder")
        return self.folder

    def _journal_path(self, rank: int) -> Path:
        return self._folder() / f".prediction_run.{self.run_id}.rank{rank}.partial"

    def _take_lock(self, folder: Path) -> None:
        path = folder / LOCK_NAME
        busy = (
            f"output folder {folder} is being written by another predict run (it holds {LOCK_NAME}): "
            "wait for it to finish or predict into another folder"
        )
        while True:
            try:
                flags = os.O_RDWR | os.O_CREAT | (0 if fcntl is not None else os.O_EXCL)
                handle = os.open(path, flags, 0o644)
            except FileExistsError:
                raise InputError(busy + f" (remove {path} if no run is active)") from None
            except OSError as error:
                raise InputError(f"output folder {folder} is not writable: {error.strerror}") from None
            if fcntl is None:
                break
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                raise InputError(busy) from None
            try:  # the file may have been removed by the run that held it: lock the one that is there
                if os.stat(path).st_ino == os.fstat(handle).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(handle)
        os.ftruncate(handle, 0)
        os.write(handle, f"{self.run_id}\n".encode())
        self._lock = handle

    def _check_existing(self, folder: Path) -> None:
        entries = [entry for entry in folder.iterdir() if entry.name != LOCK_NAME]
        if not entries or self.existing == "add":
            return
        if self.existing == "error":
            names = ", ".join(sorted(entry.name for entry in entries)[:3])
            raise InputError(
                f"output folder {folder} is not empty ({len(entries)} entries: {names}"
                f"{', ...' if len(entries) > 3 else ''}): predict into an empty folder, or set "
                f"{self.option} to 'overwrite' (replace what earlier runs wrote there) or to 'add' "
                "(keep it and add files under new names)"
            )
        self._clean(folder)

    def _clean(self, folder: Path) -> None:
        """Delete what earlier runs recorded or journaled and their temporary files; refuse (naming
        them) if the folder holds files that no run of ours wrote."""
        known = set(_recorded_files(folder))
        known.update(
            entry["path"] for entry in _journal_files(p for p in folder.iterdir() if _JOURNAL.match(p.name))
        )
        present = [
            path.relative_to(folder).as_posix()
            for path in sorted(folder.rglob("*"))
            if not path.is_dir() and path.name != LOCK_NAME
        ]
        ours = {RECORD_NAME} | known
        unknown = [name for name in present if name not in ours and not _TEMPORARY.match(Path(name).name)]
        if unknown:
            raise InputError(
                f"output folder {folder} holds {len(unknown)} file(s) that no recorded predict run wrote "
                f"({', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''}): overwrite deletes only "
                "what earlier runs recorded; move those files away or predict into another folder"
            )
        for name in present:  # temporary files and journals last: a cleanup cut short can be redone
            if not _TEMPORARY.match(Path(name).name):
                (folder / name).unlink(missing_ok=True)
        for name in present:
            (folder / name).unlink(missing_ok=True)
        for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()

    def _earlier_runs(self, folder: Path) -> list[dict[str, Any]]:
        """The earlier record's runs (its own and its `earlier_runs`), for a record of `add` mode."""
        record = _read_record(folder)
        if record is None:
            return []
        earlier = record.pop("earlier_runs", [])
        return [*earlier, record]


def _read_record(folder: Path) -> dict[str, Any] | None:
    path = folder / RECORD_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path} cannot be read as a prediction run record: {error}") from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise InputError(f"{path} is not a vision_lightning prediction run record")
    return record


def _recorded_files(folder: Path) -> Iterator[str]:
    """Every file listed by the folder's record, its earlier runs included."""
    record = _read_record(folder)
    if record is None:
        return
    for run in [*record.get("earlier_runs", []), record]:
        for entry in run.get("files", []):
            yield entry["path"]


def _journal_lines(journals: Iterable[Path]) -> Iterator[dict[str, Any]]:
    for journal in journals:
        if not journal.is_file():
            continue
        with journal.open() as handle:
            for line in handle:
                try:
                    yield json.loads(line)
                except ValueError:  # the last line of a run killed while writing it
                    continue


def _journal_files(journals: Iterable[Path]) -> Iterator[dict[str, Any]]:
    return (entry for entry in _journal_lines(journals) if "path" in entry)


def _journal_items(journal: Path) -> int:
    return sum(entry["items"] for entry in _journal_lines([journal]) if "items" in entry)


_current: ContextVar[OutputRun | None] = ContextVar("vision_lightning_output_run", default=None)
_standalone = OutputRun()


def current_run() -> OutputRun:
    """The run being set up (see `active`), else one that only gives unique temporary names."""
    return _current.get() or _standalone


@contextmanager
def active(run: OutputRun) -> Iterator[OutputRun]:
    """Make `run` the one sinks created inside the block write through (tasks build their sinks in
    `prediction_sink(output_dir, suffix)`, which knows nothing of runs)."""
    token = _current.set(run)
    try:
        yield run
    finally:
        _current.reset(token)


def write_run(run: OutputRun, make_sink: Callable[[], Any], batches: Iterable[Any], **record: Any) -> Path:
    """Write `batches` (predict step outputs) through the sink `make_sink()` builds, as one run of
    one process: the folder prepared, the files moved into place, the record written last (with
    `record`'s fields: `skipped`, `checkpoint`, ...). Returns the sink's path."""
    run.prepare()
    try:
        run.open_journal()
        with active(run):
            sink = make_sink()
        items = 0
        for outputs in batches:
            sink.write(outputs)
            paths = outputs.get("path") if isinstance(outputs, dict) else None
            items += len(paths) if paths is not None else 0
        path = sink.close()
        run.close_journal(items)
        run.finish(**record)
    finally:
        run.release()
    return path
