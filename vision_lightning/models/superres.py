"""Super-resolution networks with sub-pixel upsampling: SrResnet (seed 004), EDSR-baseline and ESPCN.

Every network maps LR images (N, 3, h, w) in [0, 1] to (N, 3, h*s, w*s), unclamped (the task clamps
for metrics and saving), and has the same three parts so a task can split backbone and head and so
weights move between scales:

- `features`: everything computed at LR resolution (the backbone),
- `upsample`: an `nn.Sequential` of `SubPixelUpsample` stages, one per x2 (x4 = two stages) or a
  single x3 stage,
- `tail`: the layers after upsampling.

Every sub-pixel conv is ICNR-initialised (`icnr_`), so at initialisation the r*r sub-pixels that
PixelShuffle makes from one LR pixel are equal: no checkerboard to unlearn. `load_for_scale`
grows a network as seed 004 does: train x2, then load its weights into an x4 network whose second
upsampling stage keeps its ICNR initialisation.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from vision_lightning.utils.errors import InputError
from vision_lightning.utils.weights import read_state_dict, strip_prefixes

log = logging.getLogger(__name__)

SCALES = (2, 3, 4)
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)  # EDSR's MeanShift, for images in [0, 1]


def icnr_(weight: Tensor, scale: int, init: Callable[[Tensor], Tensor] = nn.init.kaiming_normal_) -> Tensor:
    """ICNR init (Aitken et al. 2017, "Checkerboard artifact free sub-pixel convolution"), in place.

    `weight` is a conv weight (out*r*r, in, k, k) followed by `PixelShuffle(r)`. PixelShuffle puts
    channel `c*r*r + i` at sub-pixel `i` of output channel `c`, so one (out, in, k, k) kernel drawn
    with `init` and repeated r*r times along dim 0 (`repeat_interleave`) makes the r*r sub-pixels of
    each output channel identical: the upsampled image starts as a nearest-neighbour upsampling of a
    convolution instead of a checkerboard. Seed 004 does the same with `icnr(x, scale)`.
    """
    groups = scale * scale
    if weight.dim() < 2 or weight.shape[0] % groups:
        raise InputError(
            f"ICNR with scale {scale} needs a conv weight whose output channels divide by {groups}, "
            f"got shape {list(weight.shape)}"
        )
    kernel = torch.empty((weight.shape[0] // groups, *weight.shape[1:]), dtype=weight.dtype)
    init(kernel)
    with torch.no_grad():
        weight.copy_(kernel.repeat_interleave(groups, dim=0))
    return weight


class SubPixelUpsample(nn.Module):
    """conv(in, out*r*r) -> PixelShuffle(r) [-> activation]: one sub-pixel upsampling stage (ESPCN).

    The conv is ICNR-initialised with a zero bias, so the stage starts checkerboard-free.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: int,
        kernel_size: int = 3,
        activation: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.conv = nn.Conv2d(
            in_channels, out_channels * scale * scale, kernel_size, padding=kernel_size // 2
        )
        self.shuffle = nn.PixelShuffle(scale)
        self.activation = activation if activation is not None else nn.Identity()
        icnr_(self.conv.weight, scale)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.shuffle(self.conv(x)))


def upsample_factors(scale: int) -> list[int]:
    """The factor of each upsampling stage: x2 stages for powers of two (4 -> [2, 2]), else one stage."""
    if scale == 3:
        return [3]
    factors = []
    while scale > 1 and scale % 2 == 0:
        factors.append(2)
        scale //= 2
    if scale != 1:
        raise InputError(f"scale must be one of {', '.join(map(str, SCALES))}, got {scale}")
    return factors


def conv3x3(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Conv2d:
    """A 'same'-padded conv, so any LR size works (odd ones too)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


class ResidualBlock(nn.Module):
    """x + res_scale * (conv -> ReLU -> conv)(x), without BatchNorm (EDSR; seed 004's `res_block`)."""

    def __init__(self, channels: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.body = nn.Sequential(
            conv3x3(channels, channels), nn.ReLU(inplace=True), conv3x3(channels, channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) * self.res_scale


class LongSkip(nn.Module):
    """head, then x + body(x): EDSR's global residual over its body, at LR resolution."""

    def __init__(self, head: nn.Module, body: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(x)
        return x + self.body(x)


class MeanShift(nn.Module):
    """Adds `sign * mean` per channel (a fixed buffer, not saved in the state dict)."""

    def __init__(self, mean: tuple[float, float, float], sign: int) -> None:
        super().__init__()
        self.register_buffer("shift", sign * torch.tensor(mean).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.shift


def check_positive(**values: int) -> None:
    """InputError unless every value is a positive int (network widths and depths)."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")


def _check_scale(scale: int) -> int:
    if isinstance(scale, bool) or scale not in SCALES:
        raise InputError(f"scale must be one of {', '.join(map(str, SCALES))}, got {scale!r}")
    return int(scale)


class SuperResolutionNet(nn.Module):
    """features (LR) -> upsample (sub-pixel stages) -> tail; subclasses build the three parts."""

    arch = "superres"
    features: nn.Module
    upsample: nn.Sequential
    tail: nn.Module

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = _check_scale(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.tail(self.upsample(self.features(x)))


class SrResnet(SuperResolutionNet):
    """The super-resolution ResNet of seed 004 (fast.ai lesson 14), kept as the seed builds it.

    The seed's `conv(ni, nf, actn=False)` has no activation unless asked, so:
    conv(3, 64) -> 8 x res_block [x + 0.1 * (conv -> ReLU -> conv)(x), no BatchNorm: EDSR's ideas]
    -> conv(64, 64) | per x2: conv(64, 64*4) -> PixelShuffle(2), no activation |
    BatchNorm2d(64) -> conv(64, 3). No global skip. The seed builds x3 as one x2 stage
    (`int(log2(3))`); here x3 is one x3 stage, and every sub-pixel conv is ICNR-initialised (the seed
    does it by hand after building the model).
    """

    arch = "srresnet"

    def __init__(self, scale: int = 4, channels: int = 64, blocks: int = 8, res_scale: float = 0.1) -> None:
        super().__init__(scale)
        check_positive(channels=channels, blocks=blocks)
        self.features = nn.Sequential(
            conv3x3(3, channels),
            *[ResidualBlock(channels, res_scale) for _ in range(blocks)],
            conv3x3(channels, channels),
        )
        self.upsample = nn.Sequential(
            *[SubPixelUpsample(channels, channels, r) for r in upsample_factors(scale)]
        )
        self.tail = nn.Sequential(nn.BatchNorm2d(channels), conv3x3(channels, 3))


class EdsrBaseline(SuperResolutionNet):
    """EDSR-baseline (Lim et al. 2017): 16 residual blocks of 64 channels, no BatchNorm, long skip.

    sub DIV2K mean -> conv(3, 64) -> x + (16 x [x + conv-ReLU-conv] -> conv)(x) | per x2 (or one
    x3): conv(64, 64*r*r) -> PixelShuffle(r) | conv(64, 3) -> add DIV2K mean. `features` holds the
    mean subtraction, head and body (a `LongSkip`); `tail` the last conv and the mean addition. The
    fixed mean is a non-persistent buffer, so the state dict holds only learned tensors.
    """

    arch = "edsr_baseline"

    def __init__(self, scale: int = 4, channels: int = 64, blocks: int = 16, res_scale: float = 1.0) -> None:
        super().__init__(scale)
        check_positive(channels=channels, blocks=blocks)
        body = nn.Sequential(
            *[ResidualBlock(channels, res_scale) for _ in range(blocks)], conv3x3(channels, channels)
        )
        self.features = nn.Sequential(MeanShift(DIV2K_RGB_MEAN, -1), LongSkip(conv3x3(3, channels), body))
        self.upsample = nn.Sequential(
            *[SubPixelUpsample(channels, channels, r) for r in upsample_factors(scale)]
        )
        self.tail = nn.Sequential(conv3x3(channels, 3), MeanShift(DIV2K_RGB_MEAN, +1))


class Espcn(SuperResolutionNet):
    """ESPCN (Shi et al. 2016): conv5x5(3, 64)-Tanh -> conv3x3(64, 32)-Tanh -> conv3x3(32, 3*r*r) ->
    PixelShuffle(r), all at LR resolution; one sub-pixel stage with r = scale for x2, x3 and x4.

    The paper's layers are unpadded; here they are 'same'-padded so the output is exactly s times the
    input. `channels` are the two hidden widths.
    """

    arch = "espcn"

    def __init__(self, scale: int = 4, channels: tuple[int, int] = (64, 32)) -> None:
        super().__init__(scale)
        first, second = channels
        check_positive(channels=first)
        check_positive(channels=second)
        self.features = nn.Sequential(
            conv3x3(3, first, kernel_size=5), nn.Tanh(), conv3x3(first, second), nn.Tanh()
        )
        self.upsample = nn.Sequential(SubPixelUpsample(second, 3, scale))
        self.tail = nn.Identity()


SUPERRES_ARCHS: dict[str, type[SuperResolutionNet]] = {
    "srresnet": SrResnet,
    "edsr_baseline": EdsrBaseline,
    "espcn": Espcn,
}


def build_by_name(
    registry: Mapping[str, Callable[..., nn.Module]], what: str, arch: str, **args
) -> nn.Module:
    """`registry[arch](**args)` with one-sentence `InputError`s for an unknown name or argument."""
    key = arch.lower().replace("-", "_") if isinstance(arch, str) else arch
    if key not in registry:
        raise InputError(f"unknown {what} arch {arch!r}: choose one of {', '.join(registry)}")
    builder = registry[key]
    accepted = [p for p in inspect.signature(builder).parameters if p != "self"]
    unknown = [name for name in args if name not in accepted]
    if unknown:
        raise InputError(
            f"{what} arch {key!r} has no argument {', '.join(map(repr, unknown))}; "
            f"it takes {', '.join(accepted)}"
        )
    try:
        return builder(**args)
    except (TypeError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"{what} arch {key!r}: bad arguments {args} ({error})") from None


def create_superres_model(arch: str = "srresnet", scale: int = 4, **arch_args) -> SuperResolutionNet:
    """A super-resolution network by name: `srresnet` (seed 004), `edsr_baseline` or `espcn`.

    `arch_args` go to the network: `channels`, `blocks`, `res_scale` (espcn: `channels`, its two hidden
    widths, (64, 32) by default).
    """
    return build_by_name(SUPERRES_ARCHS, "super-resolution", arch, scale=scale, **arch_args)


def _sample(keys: list[str], n: int = 6) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def _describe(model: nn.Module) -> str:
    arch = getattr(model, "arch", type(model).__name__)
    scale = getattr(model, "scale", None)
    return f"{arch} x{scale}" if scale else arch


def load_for_scale(
    model: nn.Module, path_or_state_dict: str | Path | Mapping[str, Tensor]
) -> dict[str, list[str]]:
    """Load the weights of a (possibly smaller-scale) network into `model`, keeping what does not fit.

    Seed 004 trains x2, then grows the network to x4 with the x2 weights: every tensor whose name and
    shape match is loaded (`features`, the shared `upsample.0` stage, `tail`); tensors of `model` the
    file lacks (x4's `upsample.1.*`) keep their ICNR initialisation; tensors whose shape differs (an
    x2 stage in an x3 network) or that `model` lacks are skipped. Takes a file (state dict or
    Lightning checkpoint, read by `read_state_dict`) or a mapping; when keys start with `model.` (a
    task checkpoint) only those are used, without the prefix.

    Returns `{"loaded": [...], "new": [...], "skipped": [...], "kept_init": [...]}` and logs it in one
    line: `new` are the model's keys the file lacks, `skipped` the file's keys that were not loaded
    (shape differs, or not in the model), `kept_init` every model key not loaded (new and
    shape-mismatched: the layers to train first).
    """
    if isinstance(path_or_state_dict, Mapping):
        source = "the given state dict"
        state_dict = path_or_state_dict
        if isinstance(state_dict.get("state_dict"), Mapping):
            state_dict = state_dict["state_dict"]
        if not all(isinstance(v, Tensor) for v in state_dict.values()):
            raise InputError("load_for_scale needs a state dict: a mapping of names to tensors")
        state_dict = strip_prefixes(state_dict)
    else:
        source = f"weights file {path_or_state_dict}"
        state_dict = read_state_dict(path_or_state_dict)
    if any(key.startswith("model.") for key in state_dict):
        state_dict = {k[len("model.") :]: v for k, v in state_dict.items() if k.startswith("model.")}
    own = model.state_dict()
    loaded = [k for k, v in state_dict.items() if k in own and own[k].shape == v.shape]
    skipped = [k for k in state_dict if k not in loaded]
    new = [k for k in own if k not in state_dict]
    if not loaded:
        raise InputError(f"{source} does not fit a {_describe(model)} model: no tensor matches")
    nn.Module.load_state_dict(model, {k: state_dict[k] for k in loaded}, strict=False)
    log.info(
        "loaded %d tensors from %s into a %s model%s%s",
        len(loaded),
        source.removeprefix("weights file "),
        _describe(model),
        f"; new (kept their init, ICNR for sub-pixel convs): {_sample(new)}" if new else "",
        f"; skipped (shape differs or not in the model): {_sample(skipped)}" if skipped else "",
    )
    kept_init = [k for k in own if k not in loaded]
    return {"loaded": loaded, "new": new, "skipped": skipped, "kept_init": kept_init}
