"""Run the notebooks from top to bottom and store their outputs in them, so a repository page shows
the pictures of their last run:

    python notebooks/execute.py                              # every notebooks/*.ipynb
    python notebooks/execute.py notebooks/segmentation.ipynb

Each notebook runs in a fresh kernel of this Python (`sys.executable`, whatever kernelspecs are
installed), importing vision_lightning from this checkout, in an empty temporary working directory
(its `runs/` folder goes there). A failing cell stops with that cell's error and leaves the file as
it was. tests/test_notebooks.py executes them the same way, without writing them back.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent
ROOT = NOTEBOOKS.parent
CELL_TIMEOUT = 600  # seconds; a whole notebook takes well under a minute on 2 CPU cores
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def execute(path: str | Path, workdir: str | Path) -> nbformat.NotebookNode:
    """`path` executed in a fresh kernel with `workdir` as its working directory; raises nbclient's
    CellExecutionError (the failing cell's source and traceback) when a cell fails."""
    notebook = nbformat.read(path, as_version=4)
    # No kernelspec directories: only ipykernel's own spec, which starts sys.executable, so a
    # user-wide "python3" kernelspec of another interpreter is never picked up.
    kernel = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
    client = NotebookClient(
        notebook,
        km=kernel,
        timeout=CELL_TIMEOUT,
        record_timing=False,  # no per-cell timestamps in the stored file
        coalesce_streams=True,  # one stdout and one stderr output per cell; a progress bar's last state
        resources={"metadata": {"path": str(workdir)}},
    )
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    client.execute(env={**os.environ, "PYTHONPATH": python_path})
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    return notebook


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebooks/*.ipynb")
    args = parser.parse_args(argv)
    for path in args.notebooks or notebook_paths():
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="vl-notebook-") as workdir:
            notebook = execute(path, workdir)
        nbformat.write(notebook, path)
        print(f"{path}: {time.perf_counter() - start:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
