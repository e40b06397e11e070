"""One factory for every backbone: the seeds' classic nets, torchvision models and timm models.

Names resolve in that order: a classic net (`lenet5`), then a torchvision model (`resnet18`,
`vgg16`, `mobilenet_v2`: the seeds use torchvision), then a timm model (`convnext_tiny`,
`efficientnet_b0`). Prefix `timm:` or `torchvision:` to choose explicitly (`timm:resnet18`).

Every backbone returns pooled, flattened features of size `num_features`; the task puts its head on
top. `cut` says where a torchvision classifier is cut: `last` removes only the final Linear (AlexNet
and VGG keep their 4096-wide hidden layers, as seed 000 does), `classifier` removes the whole
classifier (VGG16 then gives 25,088 features, as in seed 001's cats vs dogs).
"""

from __future__ import annotations

import difflib
import logging
from functools import cache
from typing import Any, Literal

import torch
import torchvision
from torch import nn

from vision_lightning.models.classic import CLASSIC_NETS, create_classic_backbone
from vision_lightning.utils.errors import DownloadError, InputError
from vision_lightning.utils.weights import load_weights, pretrained_torchvision

log = logging.getLogger(__name__)

Cut = Literal["last", "classifier"]
CLASSIFIER_ATTRIBUTES = ("fc", "classifier", "heads", "head")


def _timm() -> Any:
    """timm, imported on first use: with huggingface_hub it would add about 0.4 s to CLI start-up."""
    import timm

    return timm


@cache
def _torchvision_names() -> frozenset[str]:
    return frozenset(torchvision.models.list_models(module=torchvision.models))


@cache
def _timm_names() -> frozenset[str]:
    return frozenset(_timm().list_models())


def available_backbones() -> dict[str, list[str]]:
    """Every backbone name the factory knows, by source."""
    return {
        "classic": sorted(CLASSIC_NETS),
        "torchvision": sorted(_torchvision_names()),
        "timm": sorted(_timm_names()),
    }


def resolve_backbone_name(name: str) -> tuple[str, str]:
    """(source, model name) for a backbone name, or a clear error with the closest known names."""
    source, _, model = name.partition(":") if ":" in name else ("", "", name)
    if source == "timm" and (_timm().is_model(model) or "/" in model):
        return "timm", model
    if source == "torchvision" and model in _torchvision_names():
        return "torchvision", model
    if source in ("", "classic") and model in CLASSIC_NETS:
        return "classic", model
    if source == "" and model in _torchvision_names():
        return "torchvision", model
    if source == "" and _timm().is_model(model):
        return "timm", model
    known = list(dict.fromkeys([*CLASSIC_NETS, *sorted(_torchvision_names()), *sorted(_timm_names())]))
    close = difflib.get_close_matches(model, known, n=4, cutoff=0.6)
    hint = (
        f"; did you mean {', '.join(close)}?"
        if close
        else "; see vision_lightning.models.available_backbones()"
    )
    if source not in ("", "classic", "timm", "torchvision"):
        hint = "; prefixes are 'timm:' and 'torchvision:'"
    raise InputError(f"unknown backbone {name!r}{hint}")


def backbone_data_config(name: str) -> dict[str, Any] | None:
    """How the pretrained weights of backbone `name` expect their images, or None for ImageNet's.

    A timm backbone (`convnext_tiny`, `timm:resnet18`, `vit_base_patch16_224.augreg_in1k`) gives
    `{"mean": [3 floats], "std": [3 floats], "input_size": [C, H, W], "fixed_input_size": bool}` from
    timm's pretrained config, a table inside timm: nothing is downloaded, no model is built. A ViT
    then says mean and std 0.5, a CLIP model its own statistics; `fixed_input_size` is true where the
    network only takes `input_size` (ViTs with fixed position embeddings).

    None, meaning ImageNet statistics (the data module's default): the classic nets (no pretrained
    weights), torchvision models (all trained on ImageNet-normalised images), and Hugging Face hub
    names (`timm:hf-hub:...`), whose config lives online.
    """
    source, model_name = resolve_backbone_name(name)
    if source != "timm" or "/" in model_name:
        return None
    config = _timm().models.get_pretrained_cfg(model_name)
    if config is None or config.mean is None or config.std is None:
        return None
    return {
        "mean": [float(v) for v in config.mean],
        "std": [float(v) for v in config.std],
        "input_size": [int(v) for v in config.input_size],
        "fixed_input_size": bool(config.fixed_input_size),
    }


def _download_error(name: str, error: Exception) -> DownloadError:
    return DownloadError(
        f"could not download pretrained weights for backbone {name!r} ({type(error).__name__}: {error}); "
        "without internet access set pretrained: false, or pass weights: path/to/weights.pth"
    )


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Give a torchvision model `in_channels` inputs, adapting pretrained filters as timm does."""
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Conv2d):
                if child.in_channels == in_channels:
                    return
                conv = nn.Conv2d(
                    in_channels, child.out_channels, child.kernel_size, child.stride, child.padding,
                    child.dilation, child.groups, child.bias is not None, child.padding_mode,
                )  # fmt: skip
                with torch.no_grad():
                    conv.weight.copy_(_timm().models.adapt_input_conv(in_channels, child.weight))
                    if child.bias is not None:
                        conv.bias.copy_(child.bias)
                setattr(parent, child_name, conv)
                return


def _cut_torchvision(model: nn.Module, name: str, cut: Cut) -> int:
    """Replace the classifier of a torchvision model by Identity; return the feature size."""
    attribute = next(
        (a for a in CLASSIFIER_ATTRIBUTES if isinstance(getattr(model, a, None), nn.Module)), None
    )
    if attribute is None:
        raise InputError(f"backbone {name!r}: torchvision model has no fc/classifier/head to replace")
    classifier = getattr(model, attribute)
    if isinstance(classifier, nn.Linear):
        setattr(model, attribute, nn.Identity())
        return classifier.in_features
    linears = [(i, m) for i, m in enumerate(classifier.children()) if isinstance(m, nn.Linear)]
    if not isinstance(classifier, nn.Sequential) or not linears:
        raise InputError(f"backbone {name!r}: cannot find the final Linear layer of its {attribute}")
    if cut == "last":
        index, last = linears[-1]
        classifier[index] = nn.Identity()
        return last.in_features
    plain = (nn.Linear, nn.Dropout, nn.ReLU, nn.Hardswish, nn.SiLU, nn.GELU, nn.Identity)
    if not all(isinstance(m, plain) for m in classifier.children()):
        raise InputError(f"backbone {name!r}: cut='classifier' would leave unpooled features; use cut='last'")
    setattr(model, attribute, nn.Identity())
    return linears[0][1].in_features


def create_backbone(
    name: str,
    pretrained: bool = False,
    in_channels: int | None = None,
    cut: Cut = "last",
    weights: str | None = None,
) -> tuple[nn.Module, int]:
    """(backbone, num_features) for `name`; see the module docstring for names and `cut`.

    `in_channels` defaults to the network's own: 1 for the seeds' MNIST nets, 3 otherwise.

    `pretrained` downloads ImageNet weights through timm or torchvision; `weights` loads a local
    state dict instead (a torchvision/timm file of the same model, or a checkpoint of this project,
    whose `backbone.` part is used).
    """
    source, model_name = resolve_backbone_name(name)
    if cut not in ("last", "classifier"):
        raise InputError(f"cut must be 'last' or 'classifier', got {cut!r}")
    if source == "classic":
        if pretrained:
            raise InputError(f"backbone {name!r} has no pretrained weights: set pretrained: false")
        backbone, num_features = create_classic_backbone(model_name, in_channels)
    else:
        in_channels = 3 if in_channels is None else in_channels
    if source == "timm":
        try:
            backbone = _timm().create_model(
                model_name, pretrained=pretrained, num_classes=0, in_chans=in_channels
            )
        except Exception as error:  # noqa: BLE001
            if pretrained:
                raise _download_error(name, error) from None
            raise
        num_features = backbone.num_features
    elif source == "torchvision":
        try:
            if pretrained:
                model = pretrained_torchvision(model_name)
            else:
                model = torchvision.models.get_model(model_name, weights=None)
        except Exception as error:  # noqa: BLE001
            if pretrained:
                raise _download_error(name, error) from None
            raise
        if in_channels != 3:
            _adapt_first_conv(model, in_channels)
        num_features = _cut_torchvision(model, name, cut)
        if isinstance(model, torchvision.models.Inception3):
            model.aux_logits, model.AuxLogits = False, None
        backbone = model
    if weights:
        # A plain torchvision/timm file still holds the classifier this backbone no longer has.
        ignore = tuple(f"{a}." for a in CLASSIFIER_ATTRIBUTES) if source != "classic" else ()
        load_weights(backbone, weights, strict=True, prefix="backbone.", ignore=ignore)
    return backbone, num_features


# ---------------------------------------------------------------- feature pyramids (detection)
PyramidTop = Literal["p6p7", "pool", "none"]


class StageOutputs(nn.Module):
    """The children of a torchvision classifier up to its last wanted stage, run in order, giving
    the wanted stages' maps as a list (shallow first). Child names are the classifier's, so its
    state dict (less the classifier) loads as it is."""

    def __init__(self, model: nn.Module, stages: list[str]) -> None:
        super().__init__()
        self.stages = list(stages)
        for name, child in model.named_children():
            self.add_module(name, child)
            if name == self.stages[-1]:
                break

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for name, child in self.named_children():
            x = child(x)
            if name in self.stages:
                outputs.append(x)
        return outputs


class SequentialOutputs(nn.Module):
    """A torchvision classifier's `features` Sequential (MobileNet, EfficientNet, VGG, ConvNeXt)
    cut after its last wanted block, giving the wanted blocks' maps as a list (shallow first)."""

    def __init__(self, features: nn.Sequential, indices: list[int]) -> None:
        super().__init__()
        self.indices = list(indices)
        self.features = features[: self.indices[-1] + 1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, block in enumerate(self.features):
            x = block(x)
            if index in self.indices:
                outputs.append(x)
        return outputs


class FeaturePyramid(nn.Module):
    """`body` (maps at strides 8-32, or 4-32) + torchvision's `FeaturePyramidNetwork` with the top
    level a detector expects (`p6p7`: FCOS / RetinaNet; `pool`: Faster R-CNN). `forward` gives an
    OrderedDict of `out_channels`-channel maps, as torchvision's detectors take."""

    def __init__(self, body: nn.Module, in_channels: list[int], out_channels: int, top: PyramidTop) -> None:
        super().__init__()
        from torchvision.ops import feature_pyramid_network as fpn

        extra = {
            "p6p7": lambda: fpn.LastLevelP6P7(out_channels, out_channels),
            "pool": fpn.LastLevelMaxPool,
            "none": lambda: None,
        }[top]()
        self.body = body
        self.fpn = fpn.FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor):
        from collections import OrderedDict

        maps = self.body(x)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))


def _probe_channels_and_strides(body: nn.Module, in_channels: int) -> tuple[list[int], list[int]]:
    was_training = body.training
    body.eval()
    with torch.no_grad():
        maps = body(torch.zeros(1, in_channels, 64, 64))
    body.train(was_training)
    return [m.shape[1] for m in maps], [64 // m.shape[-1] for m in maps]


def _torchvision_body(model: nn.Module, name: str, strides: tuple[int, ...]) -> nn.Module:
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):  # ResNet, ResNeXt, Wide ResNet
        stage = {4: "layer1", 8: "layer2", 16: "layer3", 32: "layer4"}
        return StageOutputs(model, [stage[s] for s in strides])
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        # the last block at each stride, found by running a small image through the blocks
        with torch.no_grad():
            x, last = torch.zeros(1, 3, 64, 64), {}
            features.eval()
            for index, block in enumerate(features):
                x = block(x)
                last[64 // x.shape[-1]] = index
            features.train()
        if all(s in last for s in strides):
            return SequentialOutputs(features, [last[s] for s in strides])
    raise InputError(
        f"backbone {name!r}: no feature pyramid for this torchvision model (ResNet-style layer1-4 or a "
        "`features` sequence are supported); use a timm name such as timm:resnet18 or timm:convnext_atto"
    )


def create_feature_pyramid(
    name: str,
    pretrained: bool = False,
    weights: str | None = None,
    top: PyramidTop = "p6p7",
    from_stride: int = 8,
    out_channels: int = 256,
) -> FeaturePyramid:
    """A backbone of this factory as a feature pyramid for torchvision's detectors: its maps at
    strides `from_stride`..32 (8: C3-C5, FCOS / RetinaNet; 4: C2-C5, Faster R-CNN) through an FPN of
    `out_channels` with the `top` extra level. Weights follow `create_backbone`'s rules: `pretrained`
    downloads ImageNet weights, `weights` loads a local file (a torchvision / timm classifier file, or
    a checkpoint of this project, whose `backbone.` part is used) into the body."""
    source, model_name = resolve_backbone_name(name)
    if from_stride not in (4, 8):
        raise InputError(f"from_stride must be 4 or 8, got {from_stride}")
    strides = tuple(s for s in (4, 8, 16, 32) if s >= from_stride)
    if source == "classic":
        raise InputError(
            f"backbone {name!r} is a classic classifier without a feature pyramid: use e.g. resnet18"
        )
    if source == "timm":
        try:
            body = _timm().create_model(
                model_name,
                pretrained=pretrained,
                features_only=True,
                out_indices=tuple(range(-len(strides), 0)),
            )
        except Exception as error:  # noqa: BLE001
            if pretrained:
                raise _download_error(name, error) from None
            raise InputError(
                f"backbone {name!r} cannot give feature maps (timm features_only): {error}"
            ) from None
        if tuple(body.feature_info.reduction()) != strides:
            raise InputError(
                f"backbone {name!r}: its last feature maps have strides {body.feature_info.reduction()}, "
                f"a feature pyramid needs {list(strides)}"
            )
        channels = list(body.feature_info.channels())
    else:
        try:
            model = (
                pretrained_torchvision(model_name) if pretrained else torchvision.models.get_model(model_name)
            )
        except Exception as error:  # noqa: BLE001
            if pretrained:
                raise _download_error(name, error) from None
            raise
        body = _torchvision_body(model, name, strides)
        channels, found = _probe_channels_and_strides(body, 3)
        if tuple(found) != strides:
            raise InputError(f"backbone {name!r}: feature maps at strides {found}, expected {list(strides)}")
    if weights:
        # A classifier file also holds layers after the last stage the body keeps (its head, last
        # blocks): those are dropped with a note; every tensor of the body must be in the file.
        load_weights(body, weights, strict=True, prefix="backbone.", ignore=("",))
    return FeaturePyramid(body, channels, out_channels, top)
