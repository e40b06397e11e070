"""The global random generators' states as plain values for a checkpoint, and back.

Lightning's `_collect_rng_states` / `_set_rng_states` (torch, CUDA, numpy, Python), with numpy's
key array stored as a tensor: checkpoints are read with `weights_only=True`, which refuses numpy
arrays. A run resumed from a checkpoint saved at an epoch's end then draws dropout masks (and
anything else the training process draws) as the uninterrupted run did.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states


def rng_states() -> dict[str, Any]:
    """This process's generator states (CUDA's only where CUDA is already in use)."""
    states = _collect_rng_states(include_cuda=torch.cuda.is_available() and torch.cuda.is_initialized())
    name, keys, position, has_gauss, gauss = states["numpy"]
    states["numpy"] = (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss)
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Put back states from `rng_states` (CUDA's only where they were saved and CUDA is here)."""
    states = dict(states)
    name, keys, position, has_gauss, gauss = states["numpy"]
    states["numpy"] = (name, np.asarray(keys, dtype=np.int64).astype(np.uint32), position, has_gauss, gauss)
    cuda = states.pop("torch.cuda", None)
    if cuda and torch.cuda.is_available():  # as many devices' states as this machine has
        states["torch.cuda"] = list(cuda)[: torch.cuda.device_count()]
    _set_rng_states(states)
