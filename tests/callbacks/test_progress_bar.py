"""ThrottledProgressBar: redrawn at most every `min_interval` seconds and after each loop's last
batch; the CLI uses it wherever Lightning would add its own bar, and nowhere else."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import TQDMProgressBar

from vision_lightning.callbacks import ThrottledProgressBar, progress_bar
from vision_lightning.cli import VisionCLI

QUICKSTART = Path(__file__).resolve().parents[2] / "configs/quickstart/classification.yaml"


def test_redraws_at_most_every_min_interval_and_after_the_last_batch(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress_bar.time, "monotonic", lambda: now[0])
    bar = ThrottledProgressBar(min_interval=0.5)
    decisions = []
    for batch, seconds in ((1, 0.0), (2, 0.2), (3, 0.4), (4, 0.6), (5, 0.9), (6, 1.2), (7, 1.3)):
        now[0] = 100.0 + seconds
        decisions.append(bar._should_update(batch, 7))
    assert decisions == [True, False, False, True, False, True, True]  # 7 of 7: the last batch


def test_refresh_rate_still_applies():
    bar = ThrottledProgressBar(refresh_rate=2, min_interval=0.0)
    assert [bar._should_update(n, 5) for n in range(1, 6)] == [False, True, False, True, True]


def _trainer(tmp_path, *args):
    cli = VisionCLI(
        args=["--config", str(QUICKSTART), "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
              *args],
        run=False,
    )  # fmt: skip
    return cli.trainer


def test_the_cli_uses_it_where_lightning_would_add_its_bar(tmp_path):
    assert type(_trainer(tmp_path).progress_bar_callback) is ThrottledProgressBar
    assert _trainer(tmp_path, "--trainer.enable_progress_bar", "false").progress_bar_callback is None
    own = _trainer(tmp_path, "--trainer.callbacks", "lightning.pytorch.callbacks.TQDMProgressBar")
    assert type(own.progress_bar_callback) is TQDMProgressBar
    assert sum(isinstance(callback, TQDMProgressBar) for callback in own.callbacks) == 1
