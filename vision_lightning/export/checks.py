"""Each written file is run on a batch of another size (and another image size where the network
takes any) and its outputs compared with PyTorch's `export_network`, before any file is moved into
place: a file that does not match is not written."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vision_lightning.export.preprocessing import ATOL, RTOL
from vision_lightning.utils.errors import InputError


def check_input(
    channels: int, size: tuple[int, int], fixed: Sequence[int | None], unit_range: bool, seed: int = 0
) -> Tensor:
    """A random float batch unlike the export example: 3 images (or the fixed batch), 7 and 5
    pixels taller and wider where the sizes are dynamic (odd: a network that pads to its stride
    pads); in [0, 1], or normal for normalised inputs."""
    batch = fixed[0] if fixed[0] is not None else 3
    height = fixed[2] if fixed[2] is not None else size[0] + 7
    width = fixed[3] if fixed[3] is not None else size[1] + 5
    return random_images((batch, channels, height, width), unit_range, seed)


def random_images(shape: tuple[int, ...], unit_range: bool, seed: int = 0) -> Tensor:
    """Seeded random images: uniform in [0, 1], or standard normal (like normalised pixels)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator) if unit_range else torch.randn(shape, generator=generator)


def compare(
    what: str, names: Sequence[str], outputs: Sequence[Any], expected: Sequence[Tensor], image: Tensor
) -> dict[str, Any]:
    """`{"batch", "size", "max_abs_diff"}` of `outputs` against `expected`; one sentence naming the
    output when a shape differs or a value is outside the tolerance."""
    worst = 0.0
    for name, output, reference in zip(names, outputs, expected, strict=True):
        got = np.asarray(output.detach().cpu() if isinstance(output, Tensor) else output, dtype=np.float64)
        want = reference.detach().cpu().double().numpy()
        if got.shape != want.shape:
            raise InputError(
                f"the {what} export gives output {name} of shape {list(got.shape)} for a batch of "
                f"{list(image.shape)}, PyTorch {list(want.shape)}: the export does not match and was not written"
            )
        difference = np.abs(got - want)
        if not np.all(difference <= ATOL + RTOL * np.abs(want)):
            raise InputError(
                f"the {what} export differs from PyTorch by up to {difference.max():.3g} in output {name} "
                f"(tolerance atol {ATOL} + rtol {RTOL}): the export does not match and was not written"
            )
        worst = max(worst, float(difference.max()) if difference.size else 0.0)
    return {"batch": int(image.shape[0]), "size": list(image.shape[2:]), "max_abs_diff": worst}
