"""BackboneFreezeUnfreeze: train the head on a frozen backbone, then the whole network with the
backbone at a fraction of the head's learning rate (seed 001's frozen VGG16 then everything at 1e-4;
seed 004's lr/100, lr/10, lr over three layer groups with BatchNorm statistics kept fixed). Named so
that it does not clash with Lightning's own `BackboneFinetuning`, which adds a parameter group at
unfreeze time.

It works with any LightningModule that has a `backbone` module (and, optionally, a `head`), with any
scheduler, under DDP and across a resume, because it never changes the optimizer (the anchors'
trackers show each of these breaking when a param group is added at unfreeze time: Lightning #8720,
#20340, #21901, Flash #1321):

- `setup` (before `configure_optimizers`) sets the module's `backbone_lr_factors`; the project's
  tasks build every group from the first step from them (`vision_lightning.optim.parameter_groups`,
  which a module of your own can call too), so each scheduler sets each group's rate from the
  group's own initial rate and keeps the factors (one-cycle's `max_lr` is per group, cosine is a
  LambdaLR, step / exponential / plateau multiply every group).
- Once the optimizer exists, and after every change of phase, the callback checks that it really
  holds every backbone parameter at the rates it reports; a module whose own `configure_optimizers`
  does not is stopped with one sentence saying what to do.
- `on_train_epoch_start` only switches `requires_grad` (and BatchNorm to eval) for that epoch: a
  frozen backbone gets no gradients, so its backward pass is skipped and the optimizer skips its
  parameters. Deciding from `trainer.current_epoch` at every epoch start also makes a resume from a
  checkpoint of either phase continue in the right phase.
- Under DDP every parameter requires grad when the model is wrapped (so all are registered for
  gradient reduction), and DDP is told to find unused parameters (frozen ones produce no grads).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import nn

from vision_lightning.models.freezing import freeze_module, keep_batchnorm_fixed, unfreeze_module
from vision_lightning.optim.layer_groups import backbone_layer_groups
from vision_lightning.utils.errors import InputError


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class BackboneFreezeUnfreeze(Callback):
    """Freeze the backbone on some epochs and train it at fractions of the head's `lr` on the others.

    Args:
        unfreeze_at_epoch: the backbone is frozen on epochs [0, N) and trains from epoch N (default
            1; 0 never freezes it, for discriminative learning rates alone).
        frozen_epochs: instead of `unfreeze_at_epoch`, half-open epoch ranges `[start, end)` during
            which the backbone is frozen, e.g. `[[0, 1], [3, 4]]` re-freezes it at epoch 3 (seed 004's
            staged recipe re-freezes at each new image size).
        backbone_lr_factor: the backbone's learning rate as a fraction of the head's (the task's
            `lr`). A list splits the backbone into that many groups of consecutive layers, first
            layers first: `[0.01, 0.1]` gives lr/100, lr/10 and the head lr (seed 004).
        freeze_bn_stats: once unfrozen, the backbone's BatchNorm layers keep their running
            statistics (eval mode) while their affine weights train (seed 004).

    The callback owns the backbone's `requires_grad` during fit: a task built with
    `freeze_backbone: true` is handed over to it (unfrozen at `unfreeze_at_epoch`);
    `freeze_backbone: N` (the first N children for good) cannot be combined with it. With SuperResModule's `new_layers_first`, a parameter trains only when neither freezes
    it: the callback's frozen phase freezes the body, `new_layers_first` also freezes the loaded
    layers of the head (and of the body, should the callback unfreeze it earlier).
    """

    def __init__(
        self,
        unfreeze_at_epoch: int | None = None,
        frozen_epochs: list[tuple[int, int]] | None = None,
        backbone_lr_factor: float | list[float] = 0.1,
        freeze_bn_stats: bool = False,
    ) -> None:
        if unfreeze_at_epoch is not None and frozen_epochs is not None:
            raise InputError(
                "give BackboneFreezeUnfreeze either unfreeze_at_epoch or frozen_epochs, not both"
            )
        if unfreeze_at_epoch is not None and not (_is_int(unfreeze_at_epoch) and unfreeze_at_epoch >= 0):
            raise InputError(f"unfreeze_at_epoch must be an epoch number >= 0, got {unfreeze_at_epoch!r}")
        if frozen_epochs is None:
            end = 1 if unfreeze_at_epoch is None else unfreeze_at_epoch
            frozen_epochs = [(0, end)] if end > 0 else []
        self.frozen_epochs = [self._epoch_range(item) for item in frozen_epochs]
        factors = backbone_lr_factor if isinstance(backbone_lr_factor, Sequence) else [backbone_lr_factor]
        if not factors or not all(
            isinstance(f, int | float) and not isinstance(f, bool) and f > 0 for f in factors
        ):
            raise InputError(
                f"backbone_lr_factor must be a positive number or a list of them, got {backbone_lr_factor!r}"
            )
        self.lr_factors = tuple(float(f) for f in factors)
        self.freeze_bn_stats = bool(freeze_bn_stats)
        self.frozen: bool | None = None  # the phase of the epoch under way (None before the first)

    @staticmethod
    def _epoch_range(item: Any) -> tuple[int, int]:
        if (
            not isinstance(item, Sequence)
            or len(item) != 2
            or not all(_is_int(v) for v in item)
            or not 0 <= item[0] < item[1]
        ):
            raise InputError(
                f"frozen_epochs holds [start, end) epoch pairs with 0 <= start < end, got {item!r}"
            )
        return int(item[0]), int(item[1])

    def frozen_at(self, epoch: int) -> bool:
        """Whether the backbone is frozen during `epoch`."""
        return any(start <= epoch < end for start, end in self.frozen_epochs)

    # ---------------------------------------------------------------- before the optimizer exists
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        backbone = getattr(pl_module, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise InputError(
                f"BackboneFreezeUnfreeze needs a LightningModule with a `backbone` module (and optionally a "
                f"`head`); {type(pl_module).__name__} has none"
            )
        if sum(isinstance(c, BackboneFreezeUnfreeze) for c in trainer.callbacks) > 1:
            raise InputError("give the Trainer one BackboneFreezeUnfreeze callback, not several")
        freeze = getattr(pl_module, "freeze_backbone_setting", None)
        if _is_int(freeze) and freeze:
            raise InputError(
                f"freeze_backbone={freeze} freezes the backbone's first {freeze} children for good, which "
                "BackboneFreezeUnfreeze would unfreeze: use one or the other"
            )
        if any(not p.requires_grad for p in backbone.parameters()):  # freeze_backbone=True
            rank_zero_info(
                "BackboneFreezeUnfreeze: the callback now decides when the backbone trains: it is frozen on "
                f"epochs {self._describe_frozen()} only"
            )
        # Everything requires grad when DDP wraps the model, and nothing is in eval mode when
        # Lightning checks at the start of training: the freezing happens at each epoch start.
        unfreeze_module(backbone, training=pl_module.training)
        if hasattr(pl_module, "set_backbone_lr_factors"):
            pl_module.set_backbone_lr_factors(self.lr_factors)
        else:
            backbone_layer_groups(backbone, len(self.lr_factors))  # an InputError if it has too few layers
            pl_module.backbone_lr_factors = self.lr_factors
        if hasattr(pl_module, "backbone_scheduled"):
            pl_module.backbone_scheduled = True
        self._configure_ddp(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check_optimizer(trainer, pl_module)

    def check_optimizer(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The optimizer holds every backbone parameter, each layer group at `factor` x the head's
        rate (rates before any schedule: `initial_lr` where a scheduler set it); else one sentence."""
        backbone, name = pl_module.backbone, type(pl_module).__name__
        groups = {
            id(p): g for optimizer in trainer.optimizers for g in optimizer.param_groups for p in g["params"]
        }
        parameters = list(backbone.parameters())
        missing = sum(id(p) not in groups for p in parameters)
        hint = (
            "build the optimizer from vision_lightning.optim.parameter_groups(self, self.backbone_lr_factors, lr=...) "
            "in configure_optimizers"
        )
        if missing:
            raise InputError(
                f"BackboneFreezeUnfreeze: the optimizer of {name} does not hold {missing} of the backbone's "
                f"{len(parameters)} parameters, so unfreezing would not train them: {hint}"
            )

        def rate(parameter: nn.Parameter) -> float:
            group = groups[id(parameter)]
            return float(group.get("initial_lr", group["lr"]))

        backbone_ids = {id(p) for p in parameters}
        head = getattr(pl_module, "head", None)
        head_parameters = list(head.parameters()) if isinstance(head, nn.Module) else []
        head_parameters = [p for p in head_parameters or pl_module.parameters() if id(p) not in backbone_ids]
        head_parameters = [p for p in head_parameters if id(p) in groups]
        layers = backbone_layer_groups(backbone, len(self.lr_factors))
        if head_parameters:
            reference = rate(head_parameters[0])
        else:  # no head: the layer groups' rates relative to the first one's
            reference = rate(layers[0][0]) / self.lr_factors[0] if layers[0] else 0.0
        for index, (params, factor) in enumerate(zip(layers, self.lr_factors)):
            expected = reference * factor
            found = sorted({rate(p) for p in params})
            if any(not math.isclose(r, expected, rel_tol=1e-6, abs_tol=1e-12) for r in found):
                where = f"layer group {index} of {len(layers)}" if len(layers) > 1 else "backbone"
                raise InputError(
                    f"BackboneFreezeUnfreeze: backbone_lr_factor {factor:g} means the {where} of {name} trains "
                    f"at {expected:.3g} (head: {reference:.3g}), but its optimizer has {', '.join(f'{r:.3g}' for r in found)}: "
                    f"{hint}"
                )

    def _configure_ddp(self, trainer: pl.Trainer) -> None:
        strategy = trainer.strategy
        if not isinstance(strategy, DDPStrategy):
            return
        kwargs = getattr(strategy, "_ddp_kwargs", None)
        if not isinstance(kwargs, dict):  # Lightning moved its DDP arguments
            raise InputError(
                "BackboneFreezeUnfreeze under DDP needs trainer.strategy: ddp_find_unused_parameters_true "
                "(a frozen backbone gives DDP no gradients to reduce)"
            )
        if kwargs.get("static_graph"):
            raise InputError(
                "BackboneFreezeUnfreeze cannot run under DDP with static_graph: the set of trained parameters changes"
            )
        if not kwargs.get("find_unused_parameters"):
            kwargs["find_unused_parameters"] = True
            rank_zero_info(
                "BackboneFreezeUnfreeze: DDP finds unused parameters, since a frozen backbone produces no gradients"
            )

    # ---------------------------------------------------------------- every epoch
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        frozen = self.frozen_at(trainer.current_epoch)
        if frozen:  # a re-freeze also clears the last unfrozen gradients: no step may use them
            freeze_module(pl_module.backbone)
        else:
            unfreeze_module(
                pl_module.backbone, training=pl_module.training, freeze_bn_stats=self.freeze_bn_stats
            )
        if hasattr(pl_module, "_bn_stats_fixed"):  # the project's tasks keep it through train()
            pl_module._bn_stats_fixed = not frozen and self.freeze_bn_stats
        if frozen != self.frozen:
            rank_zero_info(
                f"BackboneFreezeUnfreeze: epoch {trainer.current_epoch}, {self._describe_phase(frozen)}"
            )
            if self.frozen is not None:
                self.check_optimizer(trainer, pl_module)
        self.frozen = frozen

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Lightning puts the whole module back in training mode after each validation: keep a frozen
        backbone (or fixed BatchNorm statistics) in eval mode, whatever the module's `train()` does."""
        backbone = pl_module.backbone
        if self.frozen and backbone.training:
            backbone.eval()
        elif self.frozen is False and self.freeze_bn_stats:
            keep_batchnorm_fixed(backbone)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and hasattr(pl_module, "backbone_scheduled"):
            pl_module.backbone_scheduled = False

    def _describe_frozen(self) -> str:
        return ", ".join(f"[{start}, {end})" for start, end in self.frozen_epochs) or "none"

    def _describe_phase(self, frozen: bool) -> str:
        if frozen:
            return "backbone frozen"
        factors = ", ".join(f"{f:g}" for f in self.lr_factors)
        bn = ", BatchNorm statistics fixed" if self.freeze_bn_stats else ""
        return f"backbone trains at lr x [{factors}]{bn}"

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "frozen_epochs": [list(r) for r in self.frozen_epochs],
            "backbone_lr_factor": list(self.lr_factors),
            "freeze_bn_stats": self.freeze_bn_stats,
            "frozen": self.frozen,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The schedule and BatchNorm setting may change on resume; the factors may not (other
        factors are other optimizer groups). The task checks this first for its own groups; this
        check covers a task whose groups carry no names."""
        saved = tuple(float(f) for f in state_dict.get("backbone_lr_factor", self.lr_factors))
        if saved != self.lr_factors:
            raise InputError(
                f"the checkpoint was trained with BackboneFreezeUnfreeze backbone_lr_factor={list(saved)}, "
                f"not {list(self.lr_factors)}: resume with the same factors"
            )
        self.frozen = state_dict.get("frozen")
