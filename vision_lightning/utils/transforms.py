"""Albumentations pipelines built from a few YAML numbers plus an optional list of augmentations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # albumentations is imported where a pipeline is built (slow: not at CLI start-up)
    import albumentations as A

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def channel_stats(values: Sequence[float] | None, channels: int) -> tuple[float, ...] | None:
    """Mean/std for `channels`: RGB statistics are averaged for grayscale input."""
    if values is None:
        return None
    values = tuple(float(v) for v in values)
    if len(values) == channels:
        return values
    if len(values) == 3 and channels == 1:
        return (sum(values) / 3,)
    if len(values) == 1:
        return values * channels
    raise ValueError(f"mean/std have {len(values)} values but the images have {channels} channel(s)")


def build_transform(
    image_size: int | tuple[int, int],
    resize: int | None = None,
    augmentations: Sequence[A.BasicTransform | A.BaseCompose] | None = None,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    channels: int = 3,
    geometry: Sequence[A.BasicTransform] | None = None,
) -> A.Compose:
    """Resize (or shorter side to `resize`, then centre crop), augment, normalise, to a CHW tensor.

    `mean`/`std` of None only scales pixels to [0, 1] (the seeds' MNIST/CIFAR `ToTensor()`).
    `geometry` replaces the resizing steps (segmentation's random crops, or nothing for whole
    images). A mask passed along (`transform(image=..., mask=...)`) follows every geometric step
    with nearest-neighbour sampling and comes out as a tensor, channels first when it has any.
    """
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    steps = list(geometry) if geometry is not None else resize_steps(image_size, resize)
    steps += list(augmentations or [])
    mean, std = channel_stats(mean, channels), channel_stats(std, channels)
    if mean is None or std is None:
        steps.append(A.ToFloat(max_value=255.0))
    else:
        steps.append(A.Normalize(mean=mean, std=std, max_pixel_value=255.0))
    steps.append(ToTensorV2(transpose_mask=True))
    return A.Compose(steps)


def resize_steps(image_size: int | tuple[int, int], resize: int | None = None) -> list:
    """Resize to `image_size`, or the shorter side to `resize` and a centre crop of `image_size`
    (what every image path does before augmenting; the in-memory path stores its result)."""
    import albumentations as A

    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    if resize:
        return [A.SmallestMaxSize(max_size=resize), A.CenterCrop(height=height, width=width)]
    return [A.Resize(height=height, width=width)]


def eval_transform(preprocessing: dict) -> A.Compose:
    """The evaluation transform a data module's `preprocessing()` describes (saved in checkpoints):
    resize to `image_size` (or shorter side to `resize`, then centre crop; or no resizing with
    `whole_images`, segmentation's crop training), normalise with `mean` / `std`, to a CHW tensor."""
    size = preprocessing.get("image_size", 224)
    geometry = [] if preprocessing.get("whole_images") else None
    return build_transform(
        size,
        preprocessing.get("resize"),
        None,
        preprocessing.get("mean", IMAGENET_MEAN),
        preprocessing.get("std", IMAGENET_STD),
        int(preprocessing.get("channels", 3)),
        geometry,
    )
