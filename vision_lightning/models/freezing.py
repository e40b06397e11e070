"""Freezing a module: no gradients (its backward pass is skipped) and BatchNorm statistics fixed."""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def freeze_module(module: nn.Module) -> None:
    """No gradients, eval mode (BatchNorm running statistics and dropout fixed), stale grads cleared."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
        parameter.grad = None
    module.eval()


def unfreeze_module(module: nn.Module, training: bool = True, freeze_bn_stats: bool = False) -> None:
    """Gradients again, the module's mode back to `training`; `freeze_bn_stats` keeps BatchNorm in eval."""
    module.requires_grad_(True)
    module.train(training)
    if freeze_bn_stats:
        keep_batchnorm_fixed(module)


def keep_batchnorm_fixed(module: nn.Module) -> None:
    """Every BatchNorm layer of `module` in eval mode (its running statistics stay as they are)."""
    for child in module.modules():
        if isinstance(child, _BatchNorm):
            child.eval()


def is_frozen(module: nn.Module) -> bool:
    return not any(p.requires_grad for p in module.parameters())
