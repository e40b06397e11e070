"""Optimizers and schedules: parameter groups (backbone / head, no weight decay on norms and biases),
run-length schedules, and turning injected factories into optimizers."""

from vision_lightning.optim.factories import build_lr_scheduler, build_optimizer, resolve_factory
from vision_lightning.optim.groups import no_weight_decay_names, parameter_groups
from vision_lightning.optim.layer_groups import backbone_layer_groups
from vision_lightning.optim.schedules import (
    OneCycleLR,
    StepSchedule,
    WarmupCosineLR,
    estimated_stepping_batches,
    stepping_batches_per_epoch,
)

__all__ = [
    "OneCycleLR",
    "StepSchedule",
    "WarmupCosineLR",
    "backbone_layer_groups",
    "build_lr_scheduler",
    "build_optimizer",
    "estimated_stepping_batches",
    "no_weight_decay_names",
    "parameter_groups",
    "resolve_factory",
    "stepping_batches_per_epoch",
]
