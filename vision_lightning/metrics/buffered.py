"""Metric updates gathered over steps and applied in one call.

A torchmetrics update costs 60-200 us of Python whatever the batch size (argument checks, state
bookkeeping), so a collection of three classification metrics cost a small network 0.5 ms of its
15 ms CPU training step (benchmarks/overhead.py). Held here, the step only keeps references to its
outputs; `flush()` concatenates them and updates the metrics once. Metric states are sums (or, for
AUROC without thresholds, concatenations) over samples, so the figures are the same.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class BufferedUpdates:
    """`add(outputs, target)` each step; `flush()` before reading the metrics (it also runs once
    `max_elements` output values are held): `update(outputs, target)` then gets everything held,
    concatenated. It may turn outputs into metric inputs (a softmax) there: row by row, the same."""

    def __init__(self, update: Callable[[Tensor, Tensor], None], max_elements: int = 1 << 20) -> None:
        self.update, self.max_elements = update, max_elements
        self._outputs: list[Tensor] = []
        self._targets: list[Tensor] = []
        self._held = 0

    def add(self, outputs: Tensor, target: Tensor) -> None:
        self._outputs.append(outputs.detach())
        self._targets.append(target.detach())
        self._held += outputs.numel()
        if self._held >= self.max_elements:
            self.flush()

    def flush(self) -> None:
        """Update the metrics with everything held."""
        if not self._outputs:
            return
        outputs, target = torch.cat(self._outputs), torch.cat(self._targets)
        self.clear()
        self.update(outputs, target)

    def clear(self) -> None:
        """Drop what is held (a new run starts)."""
        self._outputs, self._targets, self._held = [], [], 0
