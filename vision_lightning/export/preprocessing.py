"""What a deployment needs besides the network: how to prepare an image and what comes out.

The same document is written beside the network as `preprocessing.json` and inside the ONNX file's
`metadata_props` (key `vision_lightning.preprocessing`); preprocessing.json adds the measured
differences between each written file and PyTorch (`checks`).

Inputs are read as the task's evaluation read them (the checkpoint's `preprocessing`, saved from
the data module): RGB (or grayscale) uint8, resized to `image_size` (or the shorter side to `resize`
then centre-cropped; whole images for super-resolution, style transfer and segmentation trained on
crops), scaled to [0, 1], then normalised with `mean` / `std`: before the network, or inside it with
`bake_normalization` (the network then takes [0, 1] pixels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vision_lightning.utils.errors import InputError
from vision_lightning.utils.transforms import IMAGENET_MEAN, IMAGENET_STD, channel_stats

FORMAT = "vision_lightning export"
FORMAT_VERSION = 1
#: outputs of ONNX Runtime and of a reloaded torch.export program must match PyTorch's
#: `export_network` within |a - b| <= ATOL + RTOL * |b| (float32 on the CPU)
ATOL, RTOL = 1e-4, 1e-3
#: hyperparameters that say how to read the outputs (those a task has)
TASK_KEYS = (
    "label_mode",
    "num_classes",
    "mode",
    "threshold",
    "ignore_index",
    "scale",
    "style_image",
    "style_size",
    "layers",
    "pool",
    "pool_size",
    "normalize",
)


@dataclass(frozen=True)
class InputSpec:
    """The exported network's input: channels, example size, and its normalisation (None: pixels
    in [0, 1] go in as they are)."""

    channels: int
    height: int
    width: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    whole_images: bool


def input_spec(task: Any, image_size: int | Sequence[int] | None) -> InputSpec:
    """The input of `task`'s exported network: size from `image_size`, else the checkpoint's
    preprocessing, the backbone's pretrained config or a fixed-input backbone; channels and
    mean/std likewise (ImageNet's where nothing says otherwise, as the data modules do)."""
    pre = dict(getattr(task, "preprocessing", None) or {})
    config = getattr(task, "data_config", None) or {}
    hparams = getattr(task, "hparams", {}) or {}
    fixed_input = getattr(getattr(task, "backbone", None), "input_size", None)  # classic nets: (C, H, W)
    size = image_size if image_size is not None else pre.get("image_size")
    if size is None and config.get("input_size"):
        size = list(config["input_size"])[-2:]
    if size is None and fixed_input is not None:
        size = list(fixed_input)[-2:]
    if size is None:
        raise InputError(
            f"{type(task).__name__} records no image size (it was not trained with a data module): "
            "pass image_size (CLI: --image_size N)"
        )
    height, width = _pair(size)
    channels = pre.get("channels") or hparams.get("in_channels")
    if channels is None and fixed_input is not None:
        channels = fixed_input[0]
    channels = int(channels or 3)
    normalized = getattr(task, "export_normalized_inputs", True)
    mean = std = None
    if normalized:
        mean = pre["mean"] if "mean" in pre else config.get("mean", IMAGENET_MEAN)
        std = pre["std"] if "std" in pre else config.get("std", IMAGENET_STD)
        if mean is not None and std is not None:
            mean, std = channel_stats(mean, channels), channel_stats(std, channels)
    whole = bool(pre.get("whole_images")) or not normalized
    return InputSpec(channels, height, width, mean, std, whole)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    values = [size] * 2 if isinstance(size, int) else list(size)
    if len(values) != 2 or not all(isinstance(v, int) and v > 0 for v in values):
        raise InputError(f"image_size must be a positive number of pixels or (height, width), got {size!r}")
    return int(values[0]), int(values[1])


def document(
    task: Any,
    spec: InputSpec,
    baked: bool,
    input_name: str,
    fixed: Sequence[int | None],
    minimum: Mapping[str, int],
    fixed_reason: str | None,
    output_names: Sequence[str],
    output_shapes: Sequence[Sequence[int | str]],
    files: Mapping[str, str],
    opset: int | None,
) -> dict[str, Any]:
    """The preprocessing document of an export (see the module docstring)."""
    pre = dict(getattr(task, "preprocessing", None) or {})
    hparams = getattr(task, "hparams", {}) or {}
    batch, _, height, width = fixed
    normalization = "none" if spec.mean is None else ("inside the network" if baked else "before the network")
    info = {key: _plain(hparams[key]) for key in TASK_KEYS if key in hparams}
    class_names = getattr(task, "class_names", None)
    if class_names is not None:
        info["class_names"] = list(class_names)
    info.update(_plain(getattr(task, "export_info", None) or {}))  # what else a task says about its outputs
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": type(task).__name__,
        "files": dict(files),
        "onnx_opset": opset,
        "input": {
            "name": input_name,
            "dtype": "float32",
            "layout": "NCHW",
            "channels": spec.channels,
            "color": "RGB" if spec.channels == 3 else ("grayscale" if spec.channels == 1 else "as trained"),
            "image_size": [spec.height, spec.width],
            "batch": "dynamic" if batch is None else batch,
            "height": "dynamic" if height is None else height,
            "width": "dynamic" if width is None else width,
            "min_size": dict(minimum),
            "fixed_size_reason": fixed_reason,
            "resize": _resize(pre, spec),
            "pixels": "uint8 / 255, in [0, 1]",
            "normalization": normalization,
            "mean": None if spec.mean is None else list(spec.mean),
            "std": None if spec.std is None else list(spec.std),
        },
        "outputs": [{"name": n, "shape": list(s)} for n, s in zip(output_names, output_shapes)],
        "task_info": info,
        "preprocessing": {key: _plain(value) for key, value in pre.items()},
        "tolerance": {"atol": ATOL, "rtol": RTOL, "dtype": "float32"},
    }


def _resize(pre: Mapping[str, Any], spec: InputSpec) -> str:
    if spec.whole_images:
        return "none: whole images at their own size"
    if isinstance(pre.get("resize"), str):  # a mode, such as detection's letterbox or stretch
        return f"{pre['resize']} to {spec.height}x{spec.width}"
    if pre.get("resize"):
        return f"shorter side to {pre['resize']}, then a centre crop of {spec.height}x{spec.width}"
    return f"to {spec.height}x{spec.width}"


def _plain(value: Any) -> Any:
    """JSON-ready: tuples and other sequences as lists, mappings as dicts, other objects as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_plain(v) for v in value]
    return str(value)
