"""Classification heads that sit on a backbone's pooled features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from vision_lightning.utils.errors import InputError

HeadName = Literal["linear", "mlp"]


@dataclass(frozen=True)
class HeadOptions:
    """A classification head: `linear`, or seed 000's `mlp` (BN-Dropout-Linear-ReLU-BN-Dropout-Linear,
    `hidden` wide, with the two dropout rates). YAML: `head: mlp` or `head: {kind: mlp, hidden: 512}`."""

    kind: HeadName = "linear"
    hidden: int = 2048
    dropout: tuple[float, float] = (0.25, 0.5)

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "mlp"):
            raise InputError(f"head must be linear or mlp, got {self.kind!r}")
        if self.hidden < 1 or len(self.dropout) != 2 or not all(0 <= p < 1 for p in self.dropout):
            raise InputError(
                f"head: hidden must be positive and dropout two rates in [0, 1), got {self.hidden}, {self.dropout}"
            )


def head_options(head: HeadName | HeadOptions | dict) -> HeadOptions:
    if isinstance(head, HeadOptions):
        return head
    if isinstance(head, dict):
        return HeadOptions(**{k: tuple(v) if k == "dropout" else v for k, v in head.items()})
    return HeadOptions(kind=head)


def build_head(head: HeadName | HeadOptions | dict, in_features: int, num_outputs: int) -> nn.Module:
    """The head `head` describes, from `in_features` to `num_outputs`."""
    options = head_options(head)
    if options.kind == "linear":
        return nn.Linear(in_features, num_outputs)
    return nn.Sequential(
        nn.BatchNorm1d(in_features),
        nn.Dropout(options.dropout[0]),
        nn.Linear(in_features, options.hidden),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(options.hidden),
        nn.Dropout(options.dropout[1]),
        nn.Linear(options.hidden, num_outputs),
    )
