"""Parameter groups: backbone (one or several consecutive layer groups, each at a fraction of the
learning rate) and head, each split into parameters with and without weight decay.

timm's rule for weight decay: norm layers, biases and every other 1-d parameter (and what a timm
model lists in `no_weight_decay()`, like a ViT's position embedding) get none. Groups carry a `name`
and an `lr_factor`; `build_optimizer` multiplies the optimizer's learning rate by each group's factor.

Any LightningModule with a `backbone` attribute can use these (`BackboneFreezeUnfreeze` checks that
the optimizer holds them): build the optimizer from `parameter_groups(self, self.backbone_lr_factors)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from vision_lightning.optim.layer_groups import backbone_layer_groups
from vision_lightning.utils.errors import InputError


def no_weight_decay_names(module: nn.Module) -> set[str]:
    """Names (in `module`) of parameters that get no weight decay: 1-d ones (norms, biases, scales)
    and those the model itself lists (`no_weight_decay()` of timm models, at any depth)."""
    names = {name for name, p in module.named_parameters() if p.ndim <= 1 or name.endswith(".bias")}
    for prefix, child in module.named_modules():
        listed = getattr(child, "no_weight_decay", None)
        if callable(listed):
            try:
                own = listed()
            except TypeError:
                continue
            for name in own:
                full = f"{prefix}.{name}" if prefix else name
                names.update(n for n, _ in module.named_parameters() if n == full or n.startswith(full + "."))
    return names


def parameter_groups(
    module: nn.Module,
    lr_factors: Sequence[float] = (1.0,),
    backbone: nn.Module | None = None,
    weight_decay_exempt: bool = True,
    lr: float | None = None,
) -> list[dict[str, Any]]:
    """Groups for an optimizer, frozen parameters included (the optimizer skips parameters without
    gradients, so freezing never adds or removes a group): `backbone` (or `backbone_0`,
    `backbone_1`, ... with several factors, first layers first) at `lr * factor`, then every other
    parameter of `module` as `head` at `lr`. With `weight_decay_exempt`, each group's parameters
    without weight decay form a `<name>_no_decay` group with `weight_decay: 0`. Empty groups are left out.
    With `lr`, each group gets its rate `lr * factor` (for an optimizer you build yourself; the
    project's tasks leave it to `build_optimizer`)."""
    backbone = backbone if backbone is not None else getattr(module, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise InputError(f"{type(module).__name__} has no `backbone` module to build parameter groups from")
    factors = tuple(float(f) for f in lr_factors)
    layers = backbone_layer_groups(backbone, len(factors))
    names = ["backbone"] if len(factors) == 1 else [f"backbone_{i}" for i in range(len(factors))]
    backbone_ids = {id(p) for p in backbone.parameters()}
    head = [p for p in module.parameters() if id(p) not in backbone_ids]
    exempt = (
        {id(p) for n, p in module.named_parameters() if n in no_weight_decay_names(module)}
        if weight_decay_exempt
        else set()
    )
    groups: list[dict[str, Any]] = []
    for name, params, factor in [*zip(names, layers, factors), ("head", head, 1.0)]:
        rate = {} if lr is None else {"lr": lr * factor}
        decay = [p for p in params if id(p) not in exempt]
        no_decay = [p for p in params if id(p) in exempt]
        if decay:
            groups.append({"name": name, "params": decay, "lr_factor": factor, **rate})
        if no_decay:
            groups.append(
                {
                    "name": f"{name}_no_decay",
                    "params": no_decay,
                    "lr_factor": factor,
                    "weight_decay": 0.0,
                    **rate,
                }
            )
    return groups
