"""StepLogGate: a per-step value goes to `self.log` on the steps the loggers write, and with a
progress bar about every `interval` seconds; always outside a Trainer."""

from __future__ import annotations

from types import SimpleNamespace

from vision_lightning.utils import loggers
from vision_lightning.utils.loggers import StepLogGate


def _trainer(logger_step: bool, progress_bar: bool) -> SimpleNamespace:
    return SimpleNamespace(
        _logger_connector=SimpleNamespace(should_update_logs=logger_step),
        progress_bar_callback=object() if progress_bar else None,
    )


def test_logger_steps_always_and_progress_bar_steps_by_time(monkeypatch):
    now = [50.0]
    monkeypatch.setattr(loggers.time, "monotonic", lambda: now[0])
    gate = StepLogGate(interval=0.5)
    assert gate.due(None)  # no Trainer: nothing to save
    assert gate.due(_trainer(logger_step=True, progress_bar=False))
    assert not gate.due(_trainer(logger_step=False, progress_bar=False))
    bar = _trainer(logger_step=False, progress_bar=True)
    decisions = []
    for seconds in (0.0, 0.3, 0.49, 0.5, 0.7, 1.1):
        now[0] = 50.0 + seconds
        decisions.append(gate.due(bar))
    assert decisions == [True, False, False, True, False, True]
    assert gate.due(_trainer(logger_step=True, progress_bar=True))  # between bar steps, a logger step
