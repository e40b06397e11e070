"""The learning-rate range test (Smith 2015, fast.ai's `lr_find`) for every task of this project.

`python -m vision_lightning lr_find --config FILE` builds the model and data exactly as `fit` does,
runs Lightning's finder (`Tuner.lr_find`: `num_training` optimizer steps while the rate grows from
`min_lr` to `max_lr`), puts back the weights and optimizer state it started from, prints the
suggested rate with the argument that uses it, and writes the curve as `lr_find.csv` and
`lr_find.png` into the run's log folder (`trainer.log_dir`, next to the `config.yaml` it ran with).

Why a Trainer subclass: LightningCLI builds each subcommand's arguments from the Trainer method of
the same name, so `VisionTrainer.lr_find`'s typed signature gives `--min_lr`, `--max_lr`, ...,
their `--help` and their validation, and the CLI builds model, data and links as for `fit`.

The search takes `num_training` steps however many epochs that needs (as fast.ai's does), so a
config with few batches or `max_epochs: 1` still gets a full curve. Every parameter group (backbone
and head) runs at the same rate during the search: with a frozen backbone it is the head's rate.
Two things differ from Lightning's own results, both measured on this project's recipes: the
curve's start-up bias is removed (`debiased_losses`), and the suggestion is fast.ai's `valley`
rule (`suggest_lr`), not Lightning's steepest slope.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.tuner import Tuner
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.parsing import lightning_hasattr
from PIL import Image

from vision_lightning.utils.errors import InputError
from vision_lightning.utils.finite import loss_watch_suspended
from vision_lightning.utils.loggers import log_image
from vision_lightning.utils.visualize import line_plot_image

Mode = Literal["exponential", "linear"]
#: a suggestion leaves out the first 10 points and the last one and needs a descent of 3 more
MIN_STEPS = 13
#: the smoothing factor of Lightning's finder (`_LRCallback`'s default; `_lr_find` does not change it)
BETA = 0.98


@dataclass
class LRFindResult:
    """The finder's curve (`lrs`, smoothed and debiased `losses`) and the suggested rate, or None."""

    lrs: list[float]
    losses: list[float]
    suggestion: float | None
    num_training: int
    early_stop_threshold: float | None
    mode: str = "exponential"
    csv_path: Path | None = field(default=None, compare=False)
    plot_path: Path | None = field(default=None, compare=False)

    @property
    def suggestion_index(self) -> int | None:
        return None if self.suggestion is None else self.lrs.index(self.suggestion)

    def _kept(self) -> list[int]:
        """Indices of the points a suggestion considers: finite, the first 10 and the last left out."""
        return [i for i in range(10, len(self.lrs) - 1) if math.isfinite(self.losses[i])]

    @property
    def steepest(self) -> float | None:
        """The rate where the loss falls fastest against log(lr) (against lr for a linear search)."""
        kept = self._kept()
        if len(kept) < 2:
            return None
        rates = np.asarray([self.lrs[i] for i in kept])
        axis = np.log10(rates) if self.mode == "exponential" else rates
        return self.lrs[kept[int(np.argmin(np.gradient([self.losses[i] for i in kept], axis)))]]

    @property
    def lowest(self) -> float | None:
        """The rate at the lowest loss (fast.ai's rule of thumb: a tenth of it)."""
        kept = self._kept()
        return self.lrs[min(kept, key=lambda i: self.losses[i])] if kept else None

    @property
    def diverged(self) -> bool:
        """Stopped because the loss rose above `early_stop_threshold` times its best value."""
        finite = [v for v in self.losses if math.isfinite(v)]
        return (
            self.early_stop_threshold is not None
            and len(self.lrs) < self.num_training
            and len(finite) > 1
            and finite[-1] > self.early_stop_threshold * min(finite[:-1])
        )

    def plot(self) -> np.ndarray:
        """Loss against learning rate (log x for an exponential search), the suggestion circled."""
        finite = [v for v in self.losses if math.isfinite(v)]
        y_range = None
        if finite and min(finite) > 0:  # a diverging tail is drawn on the top edge, not to scale
            y_range = (min(finite), min(max(finite), 4 * min(finite)))
        label = f"suggested lr {self.suggestion:.3g}" if self.suggestion is not None else ""
        title = f"learning-rate finder: {len(self.lrs)} steps" + ("" if label else ", no suggestion")
        return line_plot_image(
            self.lrs, self.losses, log_x=self.mode == "exponential", marker=self.suggestion_index,
            marker_label=label, title=title, x_label="learning rate", y_label="smoothed training loss",
            y_range=y_range,
        )  # fmt: skip

    def save(self, folder: str | Path) -> None:
        """Write `lr_find.csv` (lr, loss; one row per step) and `lr_find.png` into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.csv_path, self.plot_path = folder / "lr_find.csv", folder / "lr_find.png"
        with self.csv_path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["lr", "loss"])
            writer.writerows(zip(self.lrs, self.losses))
        Image.fromarray(self.plot()).save(self.plot_path)

    def summary(self, applied: bool = False) -> str:
        """One line: the suggestion and how to use it, or why there is none; where the curve is."""
        files = f" (curve: {self.plot_path}, values: {self.csv_path})" if self.plot_path else ""
        steps = f"{len(self.lrs)} of {self.num_training} steps"
        if self.suggestion is not None:
            use = (
                "this run trains with it"
                if applied
                else f"train with --model.init_args.optimizer.init_args.lr {self.suggestion:.3g}"
            )
            return (
                f"Suggested learning rate {self.suggestion:.3g} (fast.ai's valley, {steps}; the loss "
                f"falls fastest at {self.steepest:.3g} and is lowest at {self.lowest:.3g}); {use}{files}"
            )
        if self.diverged:
            why = (
                f"the loss diverged after {steps} (above {self.early_stop_threshold:g} times its best); "
                "lower --min_lr and --max_lr, or raise --early_stop_threshold"
            )
        elif sum(math.isfinite(v) for v in self.losses) < len(self.losses) // 2:
            why = f"the loss was not finite at most of {steps}; lower --min_lr and --max_lr"
        elif len(self.lrs) < MIN_STEPS:
            why = f"only {steps} ran, and a suggestion needs {MIN_STEPS}"
        else:
            why = (
                f"the loss did not fall between {self.lrs[0]:.3g} and {self.lrs[-1]:.3g} ({steps}); "
                "widen --min_lr / --max_lr or take more --num_training steps"
            )
        keep = "; the run keeps its configured lr" if applied else ""
        return f"No learning-rate suggestion: {why}{keep}{files}"


def check_arguments(min_lr: float, max_lr: float, num_training: int, mode: str) -> None:
    if not 0 < min_lr < max_lr:
        raise InputError(f"lr_find needs 0 < min_lr < max_lr, got min_lr={min_lr:g}, max_lr={max_lr:g}")
    if num_training < MIN_STEPS:
        raise InputError(
            f"num_training={num_training} is too few: the suggestion leaves out the first 10 steps "
            f"and the last, so give at least {MIN_STEPS}"
        )
    if mode not in ("exponential", "linear"):
        raise InputError(f"mode must be exponential or linear, got {mode!r}")


def find_lr(
    trainer: pl.Trainer,
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule | None = None,
    *,
    min_lr: float = 1e-7,
    max_lr: float = 1.0,
    num_training: int = 100,
    mode: Mode = "exponential",
    early_stop_threshold: float | None = 4.0,
) -> LRFindResult:
    """Run `Tuner(trainer).lr_find` for `num_training` steps whatever `max_epochs` says; the model's
    weights, optimizer state and `lr` are left as they were (nothing is trained)."""
    check_arguments(min_lr, max_lr, num_training, mode)
    if trainer.fast_dev_run:
        raise InputError("lr_find does not run with trainer.fast_dev_run (Lightning skips the search)")
    if not lightning_hasattr(model, "lr"):
        raise InputError(f"lr_find needs a model with an `lr` argument; {type(model).__name__} has none")
    loop, first_step = trainer.fit_loop, trainer.global_step
    saved = loop.max_epochs, loop.epoch_loop.max_steps
    # As many epochs as the steps need (an epoch has at least one step), with finite limits:
    # cosine and one-cycle schedules read `estimated_stepping_batches` in configure_optimizers.
    loop.max_epochs = trainer.current_epoch + num_training
    loop.epoch_loop.max_steps = trainer.global_step + num_training
    with loss_watch_suspended(model):
        try:
            finder = Tuner(trainer).lr_find(
                model, datamodule=datamodule, min_lr=min_lr, max_lr=max_lr, num_training=num_training,
                mode=mode, early_stop_threshold=early_stop_threshold, update_attr=False,
            )  # fmt: skip
        except MisconfigurationException as error:  # one optimizer only, and so on
            raise InputError(f"lr_find: {error}") from error
        finally:
            loop.max_epochs, loop.epoch_loop.max_steps = saved
    return result_from_finder(finder, num_training, early_stop_threshold, first_step)


def suggest_lr(
    lrs: list[float], losses: list[float], skip_begin: int = 10, skip_end: int = 1
) -> float | None:
    """fast.ai's `valley` rule (its default since fastai 2.4): find the longest descent of the
    smoothed loss (the longest decreasing sequence of points) and take the rate about half way
    down it. The first `skip_begin` points (an average of a few batches: noise), the last `skip_end`
    and non-finite losses are left out, as Lightning does. None when the loss never falls over three
    points or more. `losses` should be debiased (`debiased_losses`): Lightning's rise at the start
    would otherwise hide a flat one.

    Not Lightning's `suggestion()`, the steepest slope: Lightning 2.6 takes the slope against lr
    rather than log(lr), which favours the smallest rates (Lightning #21141): 1.1e-5 on the CIFAR-10
    one-cycle recipe, whose loss falls from 1e-4 to 0.15. On the log axis the steepest slope can sit
    on a dip just before divergence: 0.047 on the quickstart (trained at 0.003), where valley says 0.0026.
    """
    index = [i for i in range(skip_begin, len(lrs) - skip_end) if math.isfinite(losses[i])]
    values = [losses[i] for i in index]
    longest = [1] * len(values)  # the longest decreasing sequence ending at each point
    for i in range(1, len(values)):
        for j in range(i):
            if values[i] < values[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
    if max(longest, default=0) < 3:
        return None
    end = longest.index(max(longest))
    start = max(end - longest[end], 0)
    third = (end - start) / 3
    return lrs[index[start + int(third) + int(third / 2)]]


def debiased_losses(losses: list[float], first_step: int) -> list[float]:
    """The finder's smoothed losses with the start-up bias of the running average removed.

    Lightning averages `avg = beta * avg + (1 - beta) * loss` from zero (beta 0.98), then divides by
    `1 - beta ** (global_step + 1)`; after the k-th search step the trainer's step is already
    `first_step + k`, one ahead or more, so the first points read low (the first about half the
    loss) and a flat loss seems to rise for some 50 steps (Lightning #14167). Dividing by
    `1 - beta ** k` instead gives the plain bias-corrected average, so a flat loss reads flat.
    """
    return [
        value * (1 - BETA ** (first_step + k + 1)) / (1 - BETA**k) for k, value in enumerate(losses, start=1)
    ]


def result_from_finder(
    finder, num_training: int, early_stop_threshold: float | None, first_step: int = 0
) -> LRFindResult:
    """Our result from Lightning's `_LRFinder` (`results` holds "lr" and "loss" lists) of a search that
    started at trainer step `first_step`."""
    lrs = [float(v) for v in finder.results.get("lr", [])]
    losses = debiased_losses([float(v) for v in finder.results.get("loss", [])], first_step)
    return LRFindResult(lrs, losses, suggest_lr(lrs, losses), num_training, early_stop_threshold, finder.mode)


def report(
    trainer: pl.Trainer, result: LRFindResult, output_dir: str | Path | None, applied: bool, log: bool
) -> None:
    """Save the curve (default folder: `trainer.log_dir`), print the one line; with `log`, also send
    the plot to the loggers (a fit run goes on logging; the `lr_find` subcommand's loggers are closed)."""
    if result.lrs:
        result.save(Path(output_dir) if output_dir else Path(trainer.log_dir or trainer.default_root_dir))
        if log:
            log_image(trainer, "lr_find", result.plot())
    print(result.summary(applied))


class VisionTrainer(pl.Trainer):
    """Lightning's Trainer plus `lr_find`, which VisionCLI turns into the `lr_find` subcommand."""

    def lr_find(
        self,
        model: pl.LightningModule,
        datamodule: pl.LightningDataModule | None = None,
        min_lr: float = 1e-7,
        max_lr: float = 1.0,
        num_training: int = 100,
        mode: Mode = "exponential",
        early_stop_threshold: float | None = 4.0,
        output_dir: str | None = None,
    ) -> LRFindResult:
        """Run the learning-rate range test on the model and data; print the suggested `lr`.

        Nothing is trained: the weights, optimizer state and `lr` are restored afterwards.

        Args:
            model: the task to tune; it needs an `lr` argument.
            datamodule: its data (the training split is used).
            min_lr: the rate of the first step (fast.ai's default start, 1e-7).
            max_lr: the rate of the last step.
            num_training: how many steps (rates) to try, over as many epochs as needed; at least 13.
            mode: `exponential` (even spacing on a log scale) or `linear` growth of the rate.
            early_stop_threshold: stop once the smoothed loss exceeds this times its best; null: never.
            output_dir: where `lr_find.csv` and `lr_find.png` go; default: the run's log folder.
        """
        result = find_lr(
            self, model, datamodule, min_lr=min_lr, max_lr=max_lr, num_training=num_training, mode=mode,
            early_stop_threshold=early_stop_threshold,
        )  # fmt: skip
        if self.is_global_zero:
            report(self, result, output_dir, applied=False, log=False)
        return result
