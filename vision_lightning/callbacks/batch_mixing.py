"""BatchMixing: MixUp and CutMix on training batches, through torchvision's `transforms.v2`.

At the start of each training batch (already on the device) the callback replaces `batch["image"]`
and `batch["label"]` in place by their mix, and marks the batch with `batch["mixed"] = True`:

- MixUp (`mixup_alpha > 0`): `lam ~ Beta(alpha, alpha)`; image `lam * a + (1 - lam) * b`, label row
  `lam * onehot(a) + (1 - lam) * onehot(b)`, where `b` is the batch rolled by one (torchvision pairs
  each sample with its neighbour; training batches are shuffled).
- CutMix (`cutmix_alpha > 0`): a box of `b` pasted into `a`; `lam` is the share of `a` left.
- Both: one of the two per batch, CutMix with probability `switch_prob` (`v2.RandomChoice`).

The classifier trains on such label rows with its soft cross entropy (label smoothing, when set,
smooths the mixed rows: both can be on). Training metrics skip mixed batches: accuracy against the
larger share of a mix says little about the model, so `train/acc` counts unmixed batches only (with
`p: 1.0` there is no training accuracy; `train/loss` is logged as always). Validation and test
batches are never mixed.

Randomness comes from torch's global generator (torchvision draws from it), which Lightning's
`seed_everything` seeds and the project's checkpoints restore: runs repeat exactly.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from vision_lightning.utils.errors import InputError

if TYPE_CHECKING:
    from torchvision.transforms import v2

#: label modes whose targets are class ids or probability rows, which mixing keeps meaningful
MIXABLE_MODES = ("multiclass", "soft")


class BatchMixing(pl.Callback):
    """Mix training batches of a classifier by MixUp and/or CutMix (torchvision `transforms.v2`).

    Args:
        mixup_alpha: Beta(alpha, alpha) of MixUp's mixing weight; 0 turns MixUp off (timm: 0.8).
        cutmix_alpha: Beta(alpha, alpha) of CutMix's box size; 0 turns CutMix off (timm: 1.0).
        p: probability that a batch is mixed at all.
        switch_prob: with both on, the probability of CutMix rather than MixUp for a batch.
        stop_epoch: mix only before this epoch (0-based; timm's `mixup_off_epoch`): the last epochs
            then train on clean images. None: every epoch.

    Works with classification tasks whose `hparams` have `label_mode` multiclass or soft and
    `num_classes` (duck-typed: `ClassifierModule` and subclasses); batches must be dicts with
    `"image"` (N, C, H, W) and `"label"` (ids (N,) or rows (N, num_classes)).
    """

    def __init__(
        self,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        p: float = 1.0,
        switch_prob: float = 0.5,
        stop_epoch: int | None = None,
    ) -> None:
        for name, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if not value >= 0:
                raise InputError(f"BatchMixing {name} must be 0 (off) or positive, got {value}")
        if mixup_alpha == 0 and cutmix_alpha == 0:
            raise InputError(
                "BatchMixing needs mixup_alpha or cutmix_alpha above 0 (both are 0: nothing to mix); "
                "leave the callback out to train without mixing"
            )
        for name, value in (("p", p), ("switch_prob", switch_prob)):
            if not 0 <= value <= 1:
                raise InputError(f"BatchMixing {name} must be a probability in [0, 1], got {value}")
        if stop_epoch is not None and stop_epoch < 0:
            raise InputError(f"BatchMixing stop_epoch must be 0 or more (or null: never), got {stop_epoch}")
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.p, self.switch_prob, self.stop_epoch = float(p), float(switch_prob), stop_epoch
        self.transform: v2.Transform | None = None

    def build(self, num_classes: int) -> v2.Transform:
        """The torchvision transform for `num_classes` classes (MixUp, CutMix, or a choice of the two),
        kept for `mix`; `setup` builds it for the task's classes."""
        from torchvision.transforms import v2  # on first use: keeps `import vision_lightning` light

        mixup = v2.MixUp(alpha=self.mixup_alpha, num_classes=num_classes) if self.mixup_alpha else None
        cutmix = v2.CutMix(alpha=self.cutmix_alpha, num_classes=num_classes) if self.cutmix_alpha else None
        if mixup is not None and cutmix is not None:
            self.transform = v2.RandomChoice([mixup, cutmix], p=[1 - self.switch_prob, self.switch_prob])
        else:
            self.transform = mixup or cutmix
        return self.transform

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        hparams = getattr(pl_module, "hparams", {})
        mode, num_classes = hparams.get("label_mode"), hparams.get("num_classes")
        if mode is None or num_classes is None:
            raise InputError(
                f"BatchMixing mixes class labels: {type(pl_module).__name__} is not a classification task "
                "(no label_mode and num_classes); leave the callback out"
            )
        if mode not in MIXABLE_MODES:
            raise InputError(
                f"BatchMixing needs label_mode multiclass or soft, got {mode!r}: a mix of "
                f"{'multi-label sets' if mode == 'multilabel' else 'binary targets'} is not a class distribution"
            )
        self.build(int(num_classes))

    def mixing(self, epoch: int) -> bool:
        """Whether batches of `epoch` may be mixed."""
        return self.stop_epoch is None or epoch < self.stop_epoch

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.transform is None or not self.mixing(trainer.current_epoch):
            return
        if not isinstance(batch, MutableMapping) or "image" not in batch or "label" not in batch:
            raise InputError(
                "BatchMixing needs training batches as dicts with 'image' and 'label' (the project's "
                f"data modules give them), got {type(batch).__name__}"
            )
        if self.p < 1 and float(torch.rand(())) >= self.p:
            return
        images, labels = batch["image"], batch["label"]
        if not images.is_floating_point():  # MixUp's weighted sum needs floats (normalise first)
            raise InputError(f"BatchMixing needs float images, got {images.dtype}")
        batch["image"], batch["label"] = self.mix(images, labels)
        batch["mixed"] = True

    def mix(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(mixed images, label rows) of one batch; `labels` are class ids or probability rows."""
        if self.transform is None:
            raise RuntimeError("BatchMixing.mix before build(num_classes) (setup calls it)")
        mixed_images, rows = self.transform(images, labels)
        return mixed_images.as_subclass(Tensor), rows.as_subclass(Tensor)
