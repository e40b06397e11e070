"""Imports go one way (DESIGN.md): cli -> export -> tasks, data, callbacks -> models, losses, metrics, optim,
outputs -> utils. Read from the source, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vision_lightning"
#: package -> the packages of this library it must not import
FORBIDDEN = {
    "tasks": {"data", "callbacks", "cli", "export"},
    "callbacks": {"tasks", "cli", "export"},
    "data": {"callbacks", "tasks", "cli", "export"},
    "models": {"tasks", "data", "callbacks", "cli", "export"},
    "losses": {"tasks", "data", "callbacks", "cli", "export"},
    "metrics": {"tasks", "data", "callbacks", "cli", "export"},
    "optim": {"tasks", "data", "callbacks", "cli", "export"},
    "outputs": {"tasks", "data", "callbacks", "cli", "export"},
    "utils": {
        "tasks",
        "data",
        "callbacks",
        "models",
        "losses",
        "metrics",
        "optim",
        "outputs",
        "cli",
        "export",
    },
    # export sits beside the CLI: it loads tasks and writes files, and nothing below it imports it
    "export": {"data", "callbacks", "cli"},
}


def imported_packages(path: Path) -> set[str]:
    """The `vision_lightning.<package>` names a file imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        modules = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        for module in modules:
            parts = module.split(".")
            if parts[0] == "vision_lightning" and len(parts) > 1:
                names.add(parts[1])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_go_one_way(package):
    wrong = {
        str(path.relative_to(PACKAGE)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in (PACKAGE / package).rglob("*.py")
    }
    assert {k: v for k, v in wrong.items() if v} == {}
