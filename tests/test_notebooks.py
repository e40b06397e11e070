"""Every notebook in notebooks/ runs from top to bottom: one test per notebook found, so a new
notebook is tested by adding its file. Each ends with assertions that its run learnt something
(accuracy above chance, PSNR above bicubic, a falling loss), so executing it is a test.

They run as `python notebooks/execute.py` runs them (a fresh kernel of this interpreter importing
this checkout, in an empty working directory), without writing the outputs back."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXECUTE = ROOT / "notebooks/execute.py"


def _runner():
    spec = importlib.util.spec_from_file_location("notebooks_execute", EXECUTE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _runner()
NOTEBOOKS = runner.notebook_paths()


def test_every_task_has_a_notebook():
    names = {path.stem for path in NOTEBOOKS}
    expected = {
        "classification",
        "segmentation",
        "superres",
        "style_transfer",
        "features",
        "transfer_learning",
        "detection",
    }
    assert expected <= names, f"missing notebooks: {sorted(expected - names)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path):
    notebook = runner.execute(path, tmp_path)  # a failing cell raises with its source and traceback
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code), "not every code cell ran"
    errors = [out for cell in code for out in cell.outputs if out.output_type == "error"]
    assert not errors, errors
    assert "assert " in code[-1].source, f"{path.name} should end with a cell of checks"


def test_the_kernel_is_this_python_importing_this_checkout(tmp_path: Path):
    cell = "import importlib.util, sys; print(sys.executable); print(importlib.util.find_spec('vision_lightning').origin)"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    nbformat.write(notebook, tmp_path / "probe.ipynb")
    (output,) = runner.execute(tmp_path / "probe.ipynb", tmp_path).cells[0].outputs
    executable, package = output.text.split()
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert Path(package) == ROOT / "vision_lightning/__init__.py"
