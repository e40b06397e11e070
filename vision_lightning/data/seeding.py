"""Training items whose random augmentation is a function of (run seed, epoch, sample index) alone.

albumentations 2 keeps its own random state (a numpy Generator and a `random.Random` per pipeline),
which `seed_everything` does not reach; torch's generator in a loader worker is seeded once, when
the worker starts, so with persistent workers an epoch's random crops depend on how many epochs
the workers have lived (a resumed run starts fresh ones). Instead:

- `EpochSampler` (in the training process) shuffles with `seed + epoch`, as Lightning's own
  DistributedSampler does, and hands the data set each index with the seed and the epoch;
- `SeededItems` seeds everything the item may draw from with (seed, epoch, index) before making
  it: the albumentations pipeline (`set_random_state`), and torch's, numpy's and Python's global
  generators (random crops of super-resolution and style transfer, torchvision transforms, user
  code), restored afterwards, so a loader without workers leaves the training process's own
  generators (dropout) as they were.

So a seed gives the same items however many workers read them (0, 1, 2, persistent or not), workers
augment differently because their samples differ, each epoch differs from the last, and a run
resumed at an epoch boundary reads what the uninterrupted run read. Lightning calls `set_epoch` on
the sampler each epoch; a plain training loop should do so too.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler


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


def _seeds(key: Sequence[int], count: int) -> list[int]:
    return [int(value) for value in np.random.SeedSequence(list(key)).generate_state(count, np.uint64)]


@contextmanager
def seeded_globals(key: Sequence[int]) -> Iterator[None]:
    """torch's (CPU), numpy's and Python's global generators seeded from `key` inside the block, and
    restored after it."""
    torch_seed, numpy_seed, python_seed = _seeds(key, 3)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed)
        np.random.seed(numpy_seed % 2**32)
        random.seed(python_seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def seed_transform(transform: Any, key: Sequence[int]) -> None:
    """Seed an albumentations pipeline (or transform) from `key`; other callables are left alone
    (torchvision's transforms draw from torch's generator, which `seeded_globals` seeds)."""
    if hasattr(transform, "set_random_state"):
        numpy_seed, python_seed = _seeds([*key, 1], 2)
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
        seed_transform(getattr(self.dataset, "transform", None), (seed, epoch, index))
        with seeded_globals((seed, epoch, index)):
            return self.dataset[index]
