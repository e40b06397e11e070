"""Load a task checkpoint trained here without knowing which task wrote it.

FeatureExtractModule reuses the backbone of a ClassifierModule, the encoder of a
SegmentationModule or the body of a DetectionModule; the checkpoint's hyperparameters say which: a
detection task has a `detector` argument, a segmentation task an `encoder`, a classifier a `backbone`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path

from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

from vision_lightning.tasks.base import BaseTask
from vision_lightning.tasks.classification import ClassifierModule
from vision_lightning.tasks.detection import DetectionModule
from vision_lightning.tasks.segmentation import SegmentationModule
from vision_lightning.utils.checkpoints import read_checkpoint
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.finite import check_finite_weights
from vision_lightning.utils.hparams import import_path, is_subclass, trusted_class_path
from vision_lightning.utils.weights import check_compatible, match_keys


def task_class_of(hyper_parameters: Mapping) -> type[BaseTask] | None:
    """DetectionModule for hyperparameters with `detector`, SegmentationModule for `encoder`,
    ClassifierModule for `backbone`."""
    if "detector" in hyper_parameters:
        return DetectionModule
    if "encoder" in hyper_parameters:
        return SegmentationModule
    if "backbone" in hyper_parameters:
        return ClassifierModule
    return None


def load_task_checkpoint(path: str | Path) -> BaseTask:
    """The ClassifierModule, SegmentationModule or DetectionModule saved in `path`, on the CPU, without downloading
    or re-reading the weights it was first initialised from (the checkpoint holds every weight)."""
    path = Path(path)
    data = read_checkpoint(path)
    hyper_parameters = data.get("hyper_parameters") if isinstance(data, Mapping) else None
    task = task_class_of(hyper_parameters) if isinstance(hyper_parameters, Mapping) else None
    if task is None:
        raise InputError(
            f"checkpoint {path} is not a ClassifierModule, SegmentationModule or DetectionModule checkpoint "
            "(its hyperparameters name no backbone, encoder or detector)"
        )
    parameters = inspect.signature(task.__init__).parameters
    arguments = {k: v for k, v in hyper_parameters.items() if k in parameters and not k.startswith("_")}
    # While LightningCLI instantiates a module (a FeatureExtractModule given `checkpoint:`), every
    # `save_hyperparameters` call records that module's CLI arguments instead of its own
    # (Lightning's `_given_hyperparameters` context variable): build the task outside that context.
    token = _given_hyperparameters.set(None)
    try:
        model = task(**{**arguments, "pretrained": False, "weights": None})
    finally:
        _given_hyperparameters.reset(token)
    state_dict = match_keys(model, data.get("state_dict", {}))
    check_compatible(model, state_dict, f"checkpoint {path}")
    check_finite_weights(state_dict, f"checkpoint {path}")
    model.load_state_dict(state_dict)
    return model.eval()


def load_task(path: str | Path, map_location: str = "cpu") -> BaseTask:
    """Whatever task wrote the checkpoint `path` (the class it records; a CLI checkpoint's
    `_class_path`), loaded with its weights and the preprocessing saved with it, in eval mode.
    Only classes that `trusted_class_path` allows are imported: a checkpoint never chooses code to run."""
    path = Path(path)
    data = read_checkpoint(path)
    name = str(data.get("task_class") or (data.get("hyper_parameters") or {}).get("_class_path") or "")
    if "." in name and not trusted_class_path(name):
        raise InputError(f"checkpoint {path} was written by {name}: import its module before loading it")
    cls = import_path(name)
    if not is_subclass(cls, BaseTask):
        raise InputError(
            f"checkpoint {path} does not say which vision_lightning task wrote it (found {name!r})"
        )
    return cls.load_from_checkpoint(path, map_location=map_location).eval()
