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
