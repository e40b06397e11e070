"""Segmentation losses by name, and weighted sums of them (`{"bce": 0.5, "dice": 0.5}`).

The region losses are smp's (`segmentation_models_pytorch.losses`); cross entropy is torch's, which
takes class weights and an ignore index. Every loss receives logits and the batch's mask:
`(N, H, W)` class ids for binary and multiclass, `(N, C, H, W)` 0/1 planes for multilabel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from vision_lightning.utils.errors import InputError
from vision_lightning.utils.precision import in_float32

SegmentationMode = Literal["binary", "multiclass", "multilabel"]
LOSS_NAMES = ("bce", "ce", "dice", "jaccard", "focal", "tversky", "lovasz")
_REGION_LOSSES = {  # class names in smp.losses; smp is imported when one is built (it imports timm: slow)
    "dice": "DiceLoss",
    "jaccard": "JaccardLoss",
    "focal": "FocalLoss",
    "tversky": "TverskyLoss",
    "lovasz": "LovaszLoss",
}


class BinaryCrossEntropy(nn.Module):
    """BCE on logits for binary `(N, H, W)` or multilabel `(N, C, H, W)` masks, pixels equal to
    `ignore_index` left out; `pos_weight` weighs the positive pixels (per class for multilabel)."""

    def __init__(self, pos_weight: Tensor | None = None, ignore_index: int | None = None) -> None:
        super().__init__()
        self.register_buffer("pos_weight", pos_weight)
        self.ignore_index = ignore_index

    @in_float32
    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        target = target.view_as(logits) if target.ndim == logits.ndim - 1 else target
        target = target.to(logits.dtype)
        weight = None
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            weight = keep.to(logits.dtype)
            target = target * weight
        loss = nn.functional.binary_cross_entropy_with_logits(
            logits, target, pos_weight=self.pos_weight, reduction="none"
        )
        if weight is None:
            return loss.mean()
        return (loss * weight).sum() / weight.sum().clamp_min(1.0)


class CombinedLoss(nn.Module):
    """A weighted sum of named losses; `forward` returns the total and each unweighted term."""

    def __init__(self, terms: Mapping[str, nn.Module], weights: Mapping[str, float]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = dict(weights)

    @in_float32
    def forward(self, logits: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        parts = {name: term(logits, target) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in parts.items())
        return total, parts


def _weights(spec: str | Mapping[str, float], mode: SegmentationMode) -> dict[str, float]:
    if spec == "auto":
        return {"ce" if mode == "multiclass" else "bce": 1.0}
    weights = {spec: 1.0} if isinstance(spec, str) else {str(k): float(v) for k, v in spec.items()}
    unknown = [name for name in weights if name not in LOSS_NAMES]
    if unknown or not weights:
        raise InputError(
            f"unknown segmentation loss {unknown or spec!r}: choose from {', '.join(LOSS_NAMES)} "
            "or a mapping of them to weights such as {bce: 0.5, dice: 0.5}"
        )
    if "ce" in weights and mode != "multiclass":
        raise InputError(f"loss ce needs mode multiclass; use bce for mode {mode}")
    if "bce" in weights and mode == "multiclass":
        raise InputError("loss bce needs mode binary or multilabel; use ce for mode multiclass")
    return weights


@dataclass(frozen=True)
class SegmentationLoss:
    """A segmentation loss with its options, for YAML: `loss: dice`, `loss: {bce: 0.5, dice: 0.5}`, or
    `loss: {terms: {focal: 1}, args: {focal: {gamma: 3}}, class_weights: [1, 4]}`.

    `terms`: a name (`bce`, `ce`, `dice`, `jaccard`, `focal`, `tversky`, `lovasz`), a mapping of
    names to weights, or `auto` (ce for multiclass, else bce); `args`: extra arguments per term;
    `class_weights`: one per class (see `build_segmentation_loss`)."""

    terms: str | dict[str, float] = "auto"
    args: dict[str, dict[str, Any]] | None = None
    class_weights: list[float] | None = None


def segmentation_loss_options(
    loss: str | Mapping[str, float] | SegmentationLoss | Mapping[str, Any],
) -> SegmentationLoss:
    """`loss` as a SegmentationLoss (a name, a mapping of weights, the dataclass or its dict form)."""
    if isinstance(loss, SegmentationLoss):
        return loss
    if isinstance(loss, Mapping) and set(loss) & {"terms", "args", "class_weights"}:
        return SegmentationLoss(**dict(loss))
    return SegmentationLoss(terms=dict(loss) if isinstance(loss, Mapping) else loss)


def build_segmentation_loss(
    loss: str | Mapping[str, float],
    mode: SegmentationMode,
    num_classes: int,
    class_weights: Sequence[float] | None = None,
    ignore_index: int | None = None,
    loss_args: Mapping[str, Mapping[str, Any]] | None = None,
) -> CombinedLoss:
    """The loss `loss` names (`"auto"`: ce for multiclass, bce otherwise) for `mode`.

    `class_weights` has one weight per class: cross entropy weighs classes with it, BCE turns it
    into positive weights (binary: foreground / background), and smp's region losses average their
    per-class terms with it (binary region losses score the foreground alone, so it does not apply). `loss_args` passes extra arguments per loss, e.g.
    `{"focal": {"gamma": 3}, "tversky": {"alpha": 0.3, "beta": 0.7}}`.
    """
    weights = _weights(loss, mode)
    loss_args = {k: dict(v) for k, v in (loss_args or {}).items()}
    stray = [name for name in loss_args if name not in weights]
    if stray:
        raise InputError(f"loss args name loss(es) {stray} that the loss {loss!r} does not use")
    if class_weights is not None and len(class_weights) != num_classes:
        raise InputError(f"class_weights has {len(class_weights)} values but there are {num_classes} classes")
    class_tensor = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
    terms: dict[str, nn.Module] = {}
    for name in weights:
        args = loss_args.get(name, {})
        try:  # a TypeError here is an argument of loss_args that the loss does not take
            if name == "ce":
                terms[name] = nn.CrossEntropyLoss(
                    weight=class_tensor, ignore_index=-100 if ignore_index is None else ignore_index, **args
                )
            elif name == "bce":
                pos_weight = None
                if class_tensor is not None:
                    pos_weight = (
                        (class_tensor[1:] / class_tensor[:1]).view(1)
                        if mode == "binary"
                        else class_tensor.view(-1, 1, 1)
                    )
                terms[name] = BinaryCrossEntropy(pos_weight, ignore_index, **args)
            else:
                import segmentation_models_pytorch as smp

                if class_weights is not None and name != "lovasz" and mode != "binary":
                    args.setdefault("class_weights", list(class_weights))  # binary ones score one class
                region_loss = getattr(smp.losses, _REGION_LOSSES[name])
                terms[name] = region_loss(mode=mode, ignore_index=ignore_index, **args)
        except TypeError as error:
            raise InputError(f"loss args for {name}: {error}") from None
    return CombinedLoss(terms, weights)
