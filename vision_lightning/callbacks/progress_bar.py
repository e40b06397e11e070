"""Lightning's TQDM progress bar, redrawn at most every `min_interval` seconds (default 0.5).

Lightning's bar redraws after every batch: it reads every value logged for the bar back from its
tensor (a device sync on a GPU), formats them and writes the terminal, 0.3-0.8 ms each time on this
project's CPU, 2-5% of a small network's step (benchmarks/overhead.py). Two redraws a second show
the same progress. The CLI uses this bar wherever Lightning would add its own.
"""

from __future__ import annotations

import math
import time

from lightning.pytorch.callbacks import TQDMProgressBar

from vision_lightning.utils.loggers import REDRAW_INTERVAL


class ThrottledProgressBar(TQDMProgressBar):
    """`TQDMProgressBar` whose bars are redrawn at most every `min_interval` seconds, and always
    after the last batch of a loop."""

    def __init__(
        self,
        refresh_rate: int = 1,
        process_position: int = 0,
        leave: bool = False,
        min_interval: float = REDRAW_INTERVAL,
    ) -> None:
        super().__init__(refresh_rate, process_position, leave)
        self.min_interval = float(min_interval)
        self._last_redraw = -math.inf

    def _should_update(self, current: int, total: int | float) -> bool:
        if not super()._should_update(current, total):
            return False
        if current == total:
            return True
        now = time.monotonic()
        if now - self._last_redraw < self.min_interval:
            return False
        self._last_redraw = now
        return True
