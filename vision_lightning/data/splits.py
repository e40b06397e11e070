"""Seeded, stratified splits and k folds (seed 000 writes a `kfold` column into its training CSV)."""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np

from vision_lightning.utils.errors import InputError, MissingInputError

#: folder names a data root may use for each split (`root/train`, `root/valid`, ...)
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


def find_split_folder(root: Path, split: str) -> Path | None:
    """`root`'s folder of `split` (train, val or test) under any of its usual names, or None."""
    return next((root / name for name in SPLIT_FOLDERS[split] if (root / name).is_dir()), None)


def _by_class(keys: Sequence[Hashable], seed: int) -> list[list[int]]:
    groups: dict[Hashable, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        groups[key].append(index)
    rng = np.random.default_rng(seed)
    ordered = []
    for key in sorted(groups, key=repr):
        indices = np.array(groups[key])
        rng.shuffle(indices)
        ordered.append(indices.tolist())
    return ordered


def stratified_split(
    keys: Sequence[Hashable], fraction: float, seed: int = 42
) -> tuple[list[int], list[int]]:
    """(train, validation) indices with about `fraction` of every class in validation."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"val_split must be between 0 and 1, got {fraction}")
    train, val = [], []
    for indices in _by_class(keys, seed):
        n_val = int(round(len(indices) * fraction))
        if len(indices) > 1:
            n_val = min(max(n_val, 1), len(indices) - 1)
        val += indices[:n_val]
        train += indices[n_val:]
    if not train or not val:
        raise InputError(
            f"cannot split {len(keys)} samples into training and validation (val_split={fraction})"
        )
    return sorted(train), sorted(val)


def group_split(groups: Sequence[Hashable], fraction: float, seed: int = 42) -> tuple[list[int], list[int]]:
    """(train, validation) indices with about `fraction` of the *groups* in validation, so no group
    (a car photographed from 16 angles, a patient) lands in both sets. Distinct groups split randomly."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"val_split must be between 0 and 1, got {fraction}")
    unique = sorted(set(groups), key=repr)
    if len(unique) < 2:
        raise InputError(
            f"cannot split {len(groups)} samples of {len(unique)} group(s) into training and validation"
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    n_val = min(max(int(round(len(unique) * fraction)), 1), len(unique) - 1)
    val_groups = {unique[i] for i in order[:n_val]}
    val = [i for i, g in enumerate(groups) if g in val_groups]
    train = [i for i, g in enumerate(groups) if g not in val_groups]
    return train, val


def stratified_folds(keys: Sequence[Hashable], k: int = 5, seed: int = 42) -> list[int]:
    """The fold (0..k-1) of every sample; each class is dealt round-robin after a seeded shuffle."""
    if k < 2:
        raise InputError(f"k must be at least 2, got {k}")
    folds = [0] * len(keys)
    offset = 0
    for indices in _by_class(keys, seed):
        for position, index in enumerate(indices):
            folds[index] = (position + offset) % k
        offset += len(indices)  # classes smaller than k do not all land in fold 0
    return folds


def write_folds(
    csv_in: str | Path,
    csv_out: str | Path,
    label_columns: str | Sequence[str],
    k: int = 5,
    seed: int = 42,
    fold_column: str = "kfold",
) -> list[int]:
    """Copy `csv_in` to `csv_out` with a stratified `fold_column`; several label columns stratify
    on their combination (one-hot or multilabel rows)."""
    csv_in = Path(csv_in)
    if not csv_in.is_file():
        raise MissingInputError(f"CSV file {csv_in} does not exist")
    with csv_in.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows, columns = list(reader), list(reader.fieldnames or [])
    label_columns = [label_columns] if isinstance(label_columns, str) else list(label_columns)
    missing = [c for c in label_columns if c not in columns]
    if missing:
        raise InputError(f"{csv_in} has no column {missing[0]!r} (columns: {', '.join(columns)})")
    folds = stratified_folds([tuple(row[c] for c in label_columns) for row in rows], k, seed)
    if fold_column not in columns:
        columns.append(fold_column)
    with Path(csv_out).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row, fold in zip(rows, folds):
            writer.writerow({**row, fold_column: fold})
    return folds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Add a stratified k-fold column to a CSV.")
    parser.add_argument("csv_in")
    parser.add_argument("csv_out")
    parser.add_argument("--label", nargs="+", required=True, help="label column(s) to stratify on")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--fold-column", default="kfold")
    args = parser.parse_args(argv)
    folds = write_folds(args.csv_in, args.csv_out, args.label, args.k, args.seed, args.fold_column)
    print(f"wrote {args.csv_out}: {len(folds)} rows in {args.k} folds")


if __name__ == "__main__":
    main()
