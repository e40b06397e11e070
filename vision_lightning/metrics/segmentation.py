"""SegmentationScores: IoU and Dice (micro, macro, per class) and pixel accuracy from one pass.

One torchmetrics `Metric` accumulates per-class true positives, false positives and false negatives
over every pixel of an epoch (summed across processes under DDP), and every score comes from those
counts: computing six torchmetrics separately would build six confusion matrices per batch.

Conventions, stated because papers differ:
- scores are over the whole epoch's pixels (smp's "micro" reduction), not averaged per image;
- binary: `iou` and `dice` are the foreground's; `iou_macro` / `dice_macro` average background
  and foreground (mIoU);
- multiclass and multilabel: `iou` and `dice` are the macro average over classes that occur in the
  targets or predictions; `*_micro` pool all classes' counts;
- pixels equal to `ignore_index` count nowhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from vision_lightning.utils.precision import in_float32


class SegmentationScores(Metric):
    full_state_update = False

    def __init__(
        self,
        mode: str,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__()
        self.mode, self.num_classes, self.ignore_index = mode, num_classes, ignore_index
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        for name in ("tp", "fp", "fn"):
            self.add_state(name, torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("correct", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    @in_float32
    def update(self, predicted: Tensor, target: Tensor) -> None:
        """`predicted` and `target`: (N, H, W) class ids (binary: 0/1), or (N, C, H, W) 0/1 planes for
        multilabel."""
        predicted, target = predicted.long(), target.long()
        if self.mode == "multilabel":
            keep = (
                target != self.ignore_index
                if self.ignore_index is not None
                else torch.ones_like(target, dtype=torch.bool)
            )
            hit, pred, true = (predicted == target) & keep, (predicted == 1) & keep, (target == 1) & keep
            dims = (0, 2, 3)
            self._add(
                (pred & true).sum(dims),
                (pred & ~true).sum(dims),
                (~pred & true).sum(dims),
                hit.sum(),
                keep.sum(),
            )
            return
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            predicted, target = predicted[keep], target[keep]
        n = self.num_classes
        confusion = torch.bincount(target.flatten() * n + predicted.flatten(), minlength=n * n).view(n, n)
        tp = confusion.diagonal()
        self._add(tp, confusion.sum(0) - tp, confusion.sum(1) - tp, tp.sum(), target.numel())

    def _add(self, tp: Tensor, fp: Tensor, fn: Tensor, correct: Tensor, total: Tensor | int) -> None:
        # Out of place: after `trainer.validate` the states were reset under inference mode, and an
        # in-place add to such a tensor fails in the next `fit`'s validation (run under no_grad).
        self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn
        self.correct, self.total = self.correct + correct, self.total + total

    def compute(self) -> dict[str, Tensor]:
        tp, fp, fn = self.tp.double(), self.fp.double(), self.fn.double()
        union = tp + fp + fn
        present = union > 0
        iou = torch.where(present, tp / union.clamp_min(1), torch.nan)
        dice = torch.where(present, 2 * tp / (union + tp).clamp_min(1), torch.nan)
        scores = {
            "iou_macro": iou.nanmean() if present.any() else torch.tensor(1.0, dtype=torch.float64),
            "dice_macro": dice.nanmean() if present.any() else torch.tensor(1.0, dtype=torch.float64),
            "pixel_acc": self.correct / self.total.clamp_min(1),
        }
        if self.mode == "binary":
            scores["iou"] = iou[1].nan_to_num(1.0)  # no foreground anywhere, none predicted: perfect
            scores["dice"] = dice[1].nan_to_num(1.0)
        else:
            pooled = tp.sum(), union.sum()
            scores["iou_micro"] = pooled[0] / pooled[1].clamp_min(1)
            scores["dice_micro"] = 2 * pooled[0] / (pooled[1] + pooled[0]).clamp_min(1)
            scores["iou"], scores["dice"] = scores["iou_macro"], scores["dice_macro"]
        for name, value, seen in zip(self.class_names, iou, present):
            if seen:
                scores[f"iou_class/{name}"] = value
        return {key: value.float() for key, value in scores.items()}
