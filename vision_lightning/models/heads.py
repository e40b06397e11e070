"""Classification heads that sit on a backbone's pooled features."""

from __future__ import annotations

from typing import Literal

from torch import nn

HeadName = Literal["linear", "mlp"]


def build_head(
    kind: HeadName,
    in_features: int,
    num_outputs: int,
    hidden: int = 2048,
    dropout: tuple[float, float] = (0.25, 0.5),
) -> nn.Module:
    """`linear`, or the seed-000 `mlp` head: BN-Dropout-Linear-ReLU-BN-Dropout-Linear."""
    if kind == "linear":
        return nn.Linear(in_features, num_outputs)
    if kind == "mlp":
        return nn.Sequential(
            nn.BatchNorm1d(in_features),
            nn.Dropout(dropout[0]),
            nn.Linear(in_features, hidden),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden),
            nn.Dropout(dropout[1]),
            nn.Linear(hidden, num_outputs),
        )
    raise ValueError(f"head must be 'linear' or 'mlp', got {kind!r}")
