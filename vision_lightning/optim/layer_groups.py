"""Split a backbone into consecutive layer groups for discriminative learning rates (seed 004:
the first layers at lr/100, the middle at lr/10, the head at lr).

One rule for every backbone this project builds: timm and torchvision models (a ResNet's conv1, bn1,
layer1..4), the factory's wrappers (a Sequential around a single `features` module), smp encoders
and the super-resolution `features` body. The backbone is opened one level at a time (every module
with parameterised children is replaced by those children; a module's own parameters, like a ViT's
`cls_token`, become a unit placed before its children) until there are at least `count` units, and
the units are dealt into `count` contiguous runs of nearly equal length, first layers first.

A timm model knows its own layer order better (`group_matcher`: stem, then each stage or block):
when the backbone is, or wraps, a timm model holding all its parameters, its groups are the units.
"""

from __future__ import annotations

from torch import nn

from vision_lightning.utils.errors import InputError

Unit = nn.Module | list[nn.Parameter]


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _open(unit: Unit) -> list[Unit]:
    """The unit's parts one level down, or the unit itself when it is a leaf."""
    if not isinstance(unit, nn.Module):
        return [unit]
    children = [child for child in unit.children() if _has_parameters(child)]
    if not children:
        return [unit]
    own = list(unit.parameters(recurse=False))
    return ([own] if own else []) + children


def _parameters(unit: Unit) -> list[nn.Parameter]:
    return list(unit.parameters()) if isinstance(unit, nn.Module) else list(unit)


def timm_units(backbone: nn.Module) -> list[Unit] | None:
    """The layer groups of the timm model that is or wraps `backbone` (by `group_matcher`), first
    layers first; None when there is no such model holding every parameter."""
    total = sum(1 for _ in backbone.parameters())
    for module in backbone.modules():
        matcher = getattr(module, "group_matcher", None)
        if callable(matcher) and sum(1 for _ in module.parameters()) == total:
            from timm.models import group_parameters  # only for timm models

            try:
                groups = group_parameters(module, matcher(coarse=False), return_values=True)
            except Exception:  # a model whose matcher does not fit its (modified) layers
                return None
            return [list(groups[key]) for key in sorted(groups)]
    return None


def backbone_layer_groups(backbone: nn.Module, count: int) -> list[list[nn.Parameter]]:
    """`count` lists of the backbone's parameters, consecutive layers each, first layers first;
    together they hold every parameter once (frozen ones included)."""
    if count < 1:
        raise InputError(f"the backbone needs at least one layer group, got {count}")
    units: list[Unit] = [backbone]
    if count > 1:
        units = timm_units(backbone) or units
    while len(units) < count:
        opened = [part for unit in units for part in _open(unit)]
        if len(opened) == len(units) and all(a is b for a, b in zip(opened, units)):
            raise InputError(
                f"backbone_lr_factor asks for {count} layer groups but the backbone "
                f"{type(backbone).__name__} has only {len(units)} parameterised layers"
            )
        units = opened
    size, extra = divmod(len(units), count)
    groups: list[list[nn.Parameter]] = []
    seen: set[int] = set()  # a tied weight belongs to its first group only
    start = 0
    for index in range(count):
        stop = start + size + (index < extra)
        group = []
        for parameter in (p for unit in units[start:stop] for p in _parameters(unit)):
            if id(parameter) not in seen:
                seen.add(id(parameter))
                group.append(parameter)
        groups.append(group)
        start = stop
    return groups
