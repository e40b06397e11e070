"""Label values of CSV files, checked as they are read.

A label cell that is empty or a missing-value marker (`NaN`, `None`, `null`, `NA`...), a class id that
is not a whole number of 0 or more, a column that mixes ids and names, and a number that is not finite
(or, for soft labels, outside 0..1) are errors naming the file, the line (1-based as an editor counts
them, the header being line 1), the column and the value: such cells never become classes of their own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from vision_lightning.utils.errors import InputError

#: cell values read as "no value" (pandas' defaults, compared without case or surrounding spaces)
MISSING = frozenset({"", "nan", "-nan", "none", "null", "na", "n/a", "<na>", "nat", "#n/a"})


@dataclass(frozen=True)
class Cell:
    """One CSV cell and where it is."""

    path: Path
    line: int
    column: str
    value: str

    @property
    def where(self) -> str:
        return f"{self.path} line {self.line} column {self.column!r}"


def is_missing(value: str) -> bool:
    return value.strip().lower() in MISSING


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def class_id(value: str) -> int | None:
    """The class id a cell holds (`3`, `3.0`), or None when it is not a whole number of 0 or more."""
    number = _number(value)
    if number is None or not math.isfinite(number) or not number.is_integer() or number < 0:
        return None
    return int(number)


def require_present(cells: list[Cell]) -> None:
    """Every cell holds a value: the first empty or missing-value cell is an error."""
    for cell in cells:
        if is_missing(cell.value):
            shown = "is empty" if not cell.value.strip() else f"holds {cell.value!r}, a missing value"
            raise InputError(f"{cell.where} {shown}: every row needs its class")


def id_column(cells: list[Cell]) -> list[int] | None:
    """The class ids of a label column of whole numbers, or None for a column of class names; a
    column mixing numbers and names, or holding numbers that are not class ids, is an error."""
    numbers = [cell for cell in cells if _number(cell.value) is not None]
    if not numbers:
        return None
    if len(numbers) != len(cells):
        name = next(cell for cell in cells if _number(cell.value) is None)
        raise InputError(
            f"{name.where} holds the name {name.value!r} but line {numbers[0].line} holds the number "
            f"{numbers[0].value!r}: a label column holds class ids or class names, not both "
            "(list the names in class_names to mix them)"
        )
    ids = []
    for cell in cells:
        found = class_id(cell.value)
        if found is None:
            raise InputError(f"{cell.where} holds {cell.value!r}: class ids are whole numbers of 0 or more")
        ids.append(found)
    return ids


def target_value(cell: Cell, mode: str) -> float:
    """A multilabel (0 or 1) or soft (a finite number in 0..1) target cell as a number."""
    number = None if is_missing(cell.value) else _number(cell.value)
    if number is None or not math.isfinite(number):
        if not cell.value.strip():
            shown = "is empty"
        elif is_missing(cell.value):
            shown = f"holds {cell.value!r}, a missing value"
        else:
            shown = f"holds {cell.value!r}"
        raise InputError(f"{cell.where} {shown}: {mode} labels must be finite numbers")
    if mode == "multilabel" and number not in (0.0, 1.0):
        raise InputError(f"{cell.where} holds {cell.value!r}: multilabel columns hold 0 or 1")
    if mode == "soft" and not 0.0 <= number <= 1.0:
        raise InputError(f"{cell.where} holds {cell.value!r}: soft labels are probabilities in 0..1")
    return number
