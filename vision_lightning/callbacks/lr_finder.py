"""LRFinder: Lightning's `LearningRateFinder` callback, made to set the rate a fit run trains with.

Lightning's callback searches at the start of `fit`, then writes the suggestion into the model's
`lr` and into the optimizer's parameter groups. The optimizer and its schedule were already built
by `configure_optimizers` from the old `lr`, though: a cosine or one-cycle schedule overwrites the
groups' rate on its first step with one computed from the old rate (Lightning #21068 fixed the
groups, not the schedules), and every group gets the same rate, losing discriminative rates. Here
`configure_optimizers` runs again after the search, so optimizer, schedule and layer groups all
follow the suggestion. As in the `lr_find` subcommand (vision_lightning/lr_find.py), the search
takes as many epochs as `num_training_steps` needs, the curve is debiased, the suggestion is
fast.ai's valley rule, and the curve is written (and logged as an image).

    python -m vision_lightning fit --config FILE --trainer.callbacks+=LRFinder
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.fabric.utilities.optimizer import _optimizers_to_device
from lightning.pytorch.callbacks import LearningRateFinder
from lightning.pytorch.utilities.parsing import lightning_hasattr, lightning_setattr

from vision_lightning.lr_find import Mode, check_arguments, report, result_from_finder
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.finite import loss_watch_suspended


class LRFinder(LearningRateFinder):
    """Find the learning rate when `fit` starts and train with it (see the module docstring).

    Args:
        min_lr: the rate of the first search step.
        max_lr: the rate of the last search step.
        num_training_steps: how many rates to try (at least 13), over as many epochs as needed.
        mode: `exponential` or `linear` growth of the rate.
        early_stop_threshold: stop once the smoothed loss exceeds this times its best; None: never.
        output_dir: where `lr_find.csv` and `lr_find.png` go; default: the run's log folder.
    """

    def __init__(
        self,
        min_lr: float = 1e-7,
        max_lr: float = 1.0,
        num_training_steps: int = 100,
        mode: Mode = "exponential",
        early_stop_threshold: float | None = 4.0,
        output_dir: str | None = None,
    ) -> None:
        check_arguments(min_lr, max_lr, num_training_steps, mode)
        # update_attr=False: the rate is set here, from our suggestion (see vision_lightning.lr_find.suggest_lr)
        super().__init__(min_lr, max_lr, num_training_steps, mode, early_stop_threshold, update_attr=False)
        self.output_dir = output_dir

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path:  # resuming: the checkpoint's optimizer state sets the rate, as it should
            return
        self.lr_find(trainer, pl_module)

    def lr_find(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        attribute = next(
            (name for name in ("lr", "learning_rate") if lightning_hasattr(pl_module, name)), None
        )
        if attribute is None:
            raise InputError(
                f"LRFinder needs a model with an `lr` argument; {type(pl_module).__name__} has none"
            )
        loop, first_step = trainer.fit_loop, trainer.global_step
        # the search may need more epochs than the run has (an epoch has at least one step)
        max_epochs, loop.max_epochs = loop.max_epochs, trainer.current_epoch + self._num_training_steps
        with loss_watch_suspended(pl_module):
            try:
                super().lr_find(trainer, pl_module)
            finally:
                loop.max_epochs = max_epochs
        if self.optimal_lr is None:  # fast_dev_run: Lightning skips the search
            return
        result = result_from_finder(
            self.optimal_lr, self._num_training_steps, self._early_stop_threshold, first_step
        )
        if result.suggestion is not None:  # optimizer, schedule and layer groups built from the new rate
            lightning_setattr(pl_module, attribute, result.suggestion)
            trainer.strategy.setup_optimizers(trainer)
            _optimizers_to_device(trainer.optimizers, trainer.strategy.root_device)
        if trainer.is_global_zero:
            report(trainer, result, self.output_dir, applied=True, log=True)
