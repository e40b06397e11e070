"""Training items whose random augmentation is a function of (run seed, epoch, sample index) alone.

albumentations 2 keeps its own random state (a numpy Generator and a `random.Random` per pipeline),
which `seed_everything` does not reach; torch's generator in a loader worker is seeded once, when
the worker starts, so with persistent workers an epoch's random crops depend on how many epochs
the workers have lived (a resumed run starts fresh ones). Instead:

- `EpochSampler` (in the training process) shuffles with `seed + epoch`, as Lightning's own
  DistributedSampler does, and hands the data set each index with the seed and the epoch;
- `SeededItems` seeds what the item draws from with (seed, epoch, index) before making it: the
  albumentations pipeline (`set_random_state`) and torch's global CPU generator (the random crops
  of super-resolution and style transfer, torchvision's transforms), restored afterwards in the
  training process, so a loader without workers leaves its generator (dropout) as it was.
  numpy's and Python's global generators are not seeded per item (saving and restoring numpy's
  alone costs 0.2 ms): augmentation code of one's own should draw from torch's generator.

So a seed gives the same items however many workers read them (0, 1, 2, persistent or not), workers
augment differently because their samples differ, each epoch differs from the last, and a run
resumed at an epoch boundary reads what the uninterrupted run read. Lightning calls `set_epoch` on
the sampler each epoch; a plain training loop should do so too.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, get_worker_info


def run_seed() -> int:
    """The run's seed: `seed_everything`'s (Lightning keeps it in `PL_GLOBAL_SEED`), else a random one
    (then a data module saves it in checkpoints, so a resumed run goes on with the same)."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    if seed is not None:
        return int(seed)
    return int(np.random.SeedSequence().generate_state(1)[0])


class EpochSampler(DistributedSampler):
    """Shuffled indices of this process's share (`num_replicas`, `rank`: 1 and 0 without DDP), each as
    `(index, seed, epoch)` for `SeededItems`. A DistributedSampler, so Lightning neither wraps nor
    replaces it under DDP."""

    def __iter__(self) -> Iterator[tuple[int, int, int]]:  # type: ignore[override]
        for index in super().__iter__():
            yield index, self.seed, self.epoch


_MASK = 2**64 - 1


def _mix(*values: int) -> int:
    """A 64-bit seed of `values` (splitmix64 steps: neighbouring keys give unrelated seeds), in
    about a microsecond: numpy's SeedSequence would take 25."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = ((state ^ (value & _MASK)) * 0xBF58476D1CE4E5B9) & _MASK
        state = ((state ^ (state >> 31)) * 0x94D049BB133111EB) & _MASK
        state ^= state >> 29
    return state


@contextmanager
def seeded_torch(seed: int) -> Iterator[None]:
    """torch's global CPU generator seeded with `seed` inside the block; in the training process (a
    loader without workers) restored after it, in a worker (whose generator is its own) not."""
    if get_worker_info() is not None:
        torch.default_generator.manual_seed(seed)  # CPU only: `torch.manual_seed` also queues CUDA's
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield


def seed_transform(transform: Any, numpy_seed: int, python_seed: int) -> None:
    """Seed an albumentations pipeline (or transform); other callables are left alone (torchvision's
    transforms draw from torch's generator, which `seeded_torch` seeds)."""
    if hasattr(transform, "set_random_state"):
        # one generator shared by all its transforms (albumentations' `set_random_seed` would give
        # each transform its own copy of the same stream: two flips would always flip together)
        transform.set_random_state(np.random.default_rng(numpy_seed), random.Random(python_seed))


class SeededItems(Dataset):
    """`dataset` read by `(index, seed, epoch)` keys (from `EpochSampler`): each item made with its
    random state seeded from the key. A plain index reads `dataset[index]` unseeded. Attributes
    are the wrapped data set's (`loader.dataset.transform`, `.source`, ...)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: int | tuple[int, int, int]) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed, epoch = key
        item_seed = _mix(seed, epoch, index)
        seed_transform(getattr(self.dataset, "transform", None), _mix(item_seed, 1), _mix(item_seed, 2))
        with seeded_torch(_mix(item_seed, 3)):
            return self.dataset[index]
