"""The module that is exported: a task's `export_network` with its outputs as a tuple in the order
of their names, and optionally the mean/std normalisation inside the graph."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from vision_lightning.utils.errors import InputError


class DeployedNetwork(nn.Module):
    """`network` taking one float batch (N, C, H, W) and returning a tuple of tensors named `names`.

    `network` may return a tensor, a tuple or list, or a dict keyed by `names`. With `mean` and
    `std`, inputs are pixels in [0, 1] normalised here, `(x - mean) / std`, so a deployment only
    resizes and scales (`bake_normalization`)."""

    def __init__(
        self,
        network: nn.Module,
        names: Sequence[str],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.network, self.names = network, tuple(names)
        self.normalizes = mean is not None and std is not None
        if self.normalizes:
            self.register_buffer("mean", torch.tensor([float(v) for v in mean]).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor([float(v) for v in std]).view(1, -1, 1, 1))

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        if self.normalizes:
            image = (image - self.mean) / self.std
        return as_output_tuple(self.network(image), self.names)


def as_output_tuple(output: object, names: Sequence[str]) -> tuple[Tensor, ...]:
    """A network's output as a tuple in the order of `names` (one sentence when they do not fit)."""
    if isinstance(output, Tensor):
        values: tuple = (output,)
    elif isinstance(output, Mapping):
        missing = [name for name in names if name not in output]
        if missing:
            raise InputError(f"the exported network returns no output named {', '.join(missing)}")
        values = tuple(output[name] for name in names)
    elif isinstance(output, Sequence):
        values = tuple(output)
    else:
        raise InputError(f"the exported network returns a {type(output).__name__}, not tensors")
    if len(values) != len(names) or not all(isinstance(v, Tensor) for v in values):
        raise InputError(
            f"the exported network returns {len(values)} value(s) but its task names {len(names)} "
            f"output(s) ({', '.join(names)}): export_outputs must name each tensor it returns"
        )
    return values
