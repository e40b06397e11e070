"""Losses measured in the activations of a fixed ImageNet network (Johnson et al. 2016, fast.ai
lesson 14 = seed 004): the perceptual `FeatureLoss` of super-resolution and the Gram-matrix
`StyleLoss` of fast style transfer.

`FeatureNetwork` is the fixed network. Its weights are non-persistent buffers, not parameters: they
never reach an optimizer, a parent's `state_dict()` (so checkpoints do not carry hundreds of MB of
VGG weights that `pretrained`/`weights` re-create) or strict loading, yet `.to()` still moves them.
Under DDP, buffers are broadcast each step unless the strategy sets `broadcast_buffers=False`.

All images are floats in [0, 1], RGB, NCHW; the network normalises them with ImageNet statistics.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from vision_lightning.losses.pixel import PixelLossName, build_pixel_loss
from vision_lightning.models.factory import resolve_backbone_name
from vision_lightning.utils.errors import DownloadError, InputError
from vision_lightning.utils.precision import in_float32
from vision_lightning.utils.weights import (
    check_compatible,
    load_weights,
    pretrained_torchvision,
    read_state_dict,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Seed 004: relu1_2, relu2_2, relu3_3 of VGG16-BN (its blocks[:3]) weighted 0.2, 0.7, 0.1.
SR_LAYER_WEIGHTS = {"relu1_2": 0.2, "relu2_2": 0.7, "relu3_3": 0.1}
# Seed 004's style transfer: content at relu4_3 (x 1e4), Gram MSE at the ends of blocks 2-5.
STYLE_CONTENT_LAYERS = {"relu4_3": 1e4}
STYLE_LAYERS = {"relu2_2": 0.025, "relu3_3": 0.275, "relu4_3": 5.0, "relu5_3": 0.2}


def vgg_layer_indices(features: nn.Sequential) -> dict[str, int]:
    """`conv{b}_{c}`, `relu{b}_{c}` and `pool{b}` -> index in a torchvision VGG's `features`, found by
    walking it (blocks end at a MaxPool), so every VGG depth, with or without BatchNorm, is covered."""
    indices: dict[str, int] = {}
    block, conv = 1, 0
    for index, layer in enumerate(features):
        if isinstance(layer, nn.Conv2d):
            conv += 1
            indices[f"conv{block}_{conv}"] = index
        elif isinstance(layer, nn.ReLU):
            indices[f"relu{block}_{conv}"] = index
        elif isinstance(layer, nn.MaxPool2d):
            indices[f"pool{block}"] = index
            block, conv = block + 1, 0
    return indices


def _check_layers(layers: Sequence[str], available: Sequence[str], network: str) -> None:
    unknown = [layer for layer in layers if layer not in available]
    if unknown:
        listed = ", ".join(available[:60]) + (
            f" and {len(available) - 60} more" if len(available) > 60 else ""
        )
        raise InputError(
            f"feature network {network!r} has no layer {', '.join(map(repr, unknown))}; its layers are {listed}"
        )


def _download_error(network: str, error: Exception) -> DownloadError:
    return DownloadError(
        f"could not download ImageNet weights for feature network {network!r} ({type(error).__name__}: "
        f"{error}); without internet access pass weights: path/to/{network.split(':')[-1]}.pth or set "
        "pretrained: false (random features, only for tests)"
    )


def _torchvision_model(network: str, name: str, pretrained: bool, meta: bool = False) -> nn.Module:
    try:
        if meta:  # shapes only: skips initialising weights that are loaded or truncated away
            with torch.device("meta"):
                return torchvision.models.get_model(name, weights=None)
        return (
            pretrained_torchvision(name) if pretrained else torchvision.models.get_model(name, weights=None)
        )
    except Exception as error:  # noqa: BLE001 - urllib, OSError, RuntimeError ... when offline
        if pretrained:
            raise _download_error(network, error) from None
        raise


def _build_vgg(network: str, name: str, layers: Sequence[str], pretrained: bool, weights: str | None):
    """(features truncated after the last requested layer, {index: layer name})."""
    vgg = _torchvision_model(network, name, pretrained, meta=not pretrained)
    indices = vgg_layer_indices(vgg.features)
    _check_layers(layers, list(indices), network)
    features = vgg.features[: max(indices[layer] for layer in layers) + 1]
    if not pretrained:  # VGG's own initialisation, on the kept layers only (not the 100M classifier)
        features.to_empty(device="cpu")
        for module in features.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
    if weights:  # a full torchvision state dict: keys `features.N.*`, beyond the cut and `classifier.*`
        holder = nn.Module()
        holder.features = features
        load_weights(holder, weights, strict=True, ignore=("features.", "classifier."))
    return features, {indices[layer]: layer for layer in layers}


def _build_timm(network: str, name: str, layers: Sequence[str], pretrained: bool, weights: str | None):
    """(timm `features_only` model returning only the requested stages, their names in output order)."""
    import timm  # on first use: timm (and huggingface_hub) would slow down CLI start-up

    with torch.device("meta"):  # shapes only, fast; lists every stage (features_only: its default ones)
        headless = timm.create_model(name, num_classes=0)
    available = [info["module"] for info in getattr(headless, "feature_info", [])]
    _check_layers(layers, available, network)
    options = {}
    if weights:  # timm applies its own key remapping for features_only; check the file first
        state_dict = read_state_dict(weights)
        head = headless.pretrained_cfg.get("classifier") or "\0"
        body = {k: v for k, v in state_dict.items() if not k.startswith(head)}
        check_compatible(headless, body, f"weights file {weights}")
        options["pretrained_cfg_overlay"] = {"state_dict": state_dict, "source": "timm"}
    out_indices = tuple(sorted(available.index(layer) for layer in layers))
    try:
        model = timm.create_model(
            name,
            pretrained=pretrained or bool(weights),
            features_only=True,
            out_indices=out_indices,
            **options,
        )
    except Exception as error:  # noqa: BLE001
        if pretrained and not weights:
            raise _download_error(network, error) from None
        raise
    return model, [available[index] for index in out_indices]


def _build_torchvision(network: str, name: str, layers: Sequence[str], pretrained: bool, weights: str | None):
    """torchvision FX feature extractor returning the graph nodes or modules `layers` (`layer2`)."""
    model = _torchvision_model(network, name, pretrained).eval()
    if weights:
        load_weights(model, weights, strict=True)
    nodes = get_graph_node_names(model)[1]  # `layer1.0.relu_1`; a module path (`layer1`) means its last node
    prefixes = [".".join(node.split(".")[:i]) for node in nodes for i in range(1, node.count(".") + 2)]
    _check_layers(layers, list(dict.fromkeys(prefixes)), network)
    return create_feature_extractor(model, return_nodes=list(layers))


def _freeze(module: nn.Module) -> nn.Module:
    """The network made fixed in any mode: BatchNorm -> FrozenBatchNorm (timm's conversion, which
    keeps timm's fused activations) and dropout -> Identity, so a parent's `.train()` changes nothing
    and Lightning finds no module left in eval mode; parameters -> non-persistent buffers and buffers
    -> non-persistent (see the module docstring); in-place activations off, because a returned
    activation must not be overwritten by the next layer (VGG's `ReLU(inplace=True)` would otherwise
    overwrite a requested `conv{b}_{c}` output)."""
    from timm.layers import freeze_batch_norm_2d

    module = freeze_batch_norm_2d(module)
    for parent in list(module.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.dropout._DropoutNd):
                setattr(parent, child_name, nn.Identity())
    for sub in module.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            delattr(sub, name)
            sub.register_buffer(name, param.detach(), persistent=False)
        for name, buffer in list(sub.named_buffers(recurse=False)):
            sub.register_buffer(name, buffer, persistent=False)
        if isinstance(getattr(sub, "inplace", None), bool):
            sub.inplace = False
    return module


class FeatureNetwork(nn.Module):
    """A frozen ImageNet network that returns the activations of named layers.

    `network`: a torchvision VGG (`vgg16_bn`, `vgg16`, `vgg19`, `vgg19_bn`; layers `relu{b}_{c}`,
    `conv{b}_{c}`, `pool{b}`, truncated after the last one requested), another torchvision model
    (`torchvision:resnet50`; layers are FX node names such as `layer2`), or a timm model
    (`timm:convnext_tiny`; layers are its feature stages, `model.feature_info.module_name()`).

    `pretrained` downloads ImageNet weights; `weights` loads a local file of the full model instead
    (for VGG a torchvision state dict, `features.N.weight`, ...). With neither, the features are
    random: fine for tests, useless as a perceptual loss (a warning says so).

    Frozen: no parameters (weights are non-persistent buffers, see the module docstring), and the same
    in train and eval mode (frozen BatchNorm, no dropout). Gradients still flow to the input images.
    """

    def __init__(
        self,
        network: str = "vgg16_bn",
        layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3"),
        pretrained: bool = False,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        self.network_name = network
        self.layers = tuple(dict.fromkeys([layers] if isinstance(layers, str) else layers))
        if not self.layers:
            raise InputError(f"feature network {network!r}: layers is empty; name at least one layer")
        source, name = resolve_backbone_name(network)
        pretrained = pretrained and not weights  # a weights file replaces the download
        self._vgg_taps: dict[int, str] = {}
        if source == "torchvision" and name.startswith("vgg"):
            self.body, self._vgg_taps = _build_vgg(network, name, self.layers, pretrained, weights)
        elif source == "timm":
            self.body, self._timm_outputs = _build_timm(network, name, self.layers, pretrained, weights)
        elif source == "torchvision":
            self.body = _build_torchvision(network, name, self.layers, pretrained, weights)
        else:
            raise InputError(
                f"feature network {network!r} is a classic MNIST net; use an ImageNet network such as "
                "vgg16_bn, vgg16, vgg19 or a timm/torchvision model"
            )
        self.body = _freeze(self.body)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if not pretrained and not weights:
            warnings.warn(
                f"feature network {network!r} has random weights (pretrained: false and no weights file), "
                "so its loss is not perceptual; use this only for tests",
                UserWarning,
                stacklevel=2,
            )

    def forward(self, images: Tensor, layers: Sequence[str] | None = None) -> dict[str, Tensor]:
        """{layer: activation} for `layers` (default: all of `self.layers`) of images in [0, 1].

        A VGG stops after the deepest layer asked for, so a subset costs only what it needs.
        """
        wanted = self.layers if layers is None else tuple(layers)
        _check_layers(wanted, self.layers, self.network_name)
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(
                f"feature network {self.network_name!r} takes RGB images (N, 3, H, W), got {tuple(images.shape)}"
            )
        x = (images - self.mean) / self.std
        if self._vgg_taps:
            outputs, last = {}, max(i for i, layer in self._vgg_taps.items() if layer in wanted)
            for index, module in enumerate(self.body):
                x = module(x)
                if self._vgg_taps.get(index) in wanted:
                    outputs[self._vgg_taps[index]] = x
                if index == last:
                    break
            return {layer: outputs[layer] for layer in wanted}
        features = self.body(x)
        if isinstance(features, (list, tuple)):  # timm features_only
            features = dict(zip(self._timm_outputs, features))
        return {layer: features[layer] for layer in wanted}

    def extra_repr(self) -> str:
        return f"network={self.network_name!r}, layers={self.layers}"


def gram_matrix(features: Tensor) -> Tensor:
    """(N, C, C) Gram matrix per sample, F F^T / (C H W) with F the (C, H*W) activations.

    Dividing by C H W makes it independent of the image size. Computed in float32 at least, even
    under autocast: sums over H*W products overflow float16.
    """
    n, c, h, w = features.shape
    dtype = torch.promote_types(features.dtype, torch.float32)
    with torch.autocast(device_type=features.device.type, enabled=False):
        flat = features.reshape(n, c, h * w).to(dtype)
        return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def total_variation(images: Tensor) -> Tensor:
    """Mean absolute difference between vertically and horizontally neighbouring pixels, all pairs of
    both directions pooled: 0 for a constant image, 1 for a 0/1 checkerboard."""
    vertical = (images[..., 1:, :] - images[..., :-1, :]).abs()
    horizontal = (images[..., :, 1:] - images[..., :, :-1]).abs()
    return (vertical.sum() + horizontal.sum()) / max(vertical.numel() + horizontal.numel(), 1)


def _check_pair(a: Tensor, b: Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise InputError(f"{names} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _weights(spec: Mapping[str, float] | None, default: Mapping[str, float], what: str) -> dict[str, float]:
    weights = {str(k): float(v) for k, v in (default if spec is None else spec).items()}
    if not weights:
        raise InputError(f"{what} is empty; name at least one layer with its weight, e.g. relu2_2: 1.0")
    return weights


class FeatureLoss(nn.Module):
    """Perceptual loss for super-resolution (seed 004): `pixel_weight` x pixel loss plus, per layer,
    weight x `criterion`(features of the prediction, features of the target), plus `tv_weight` x TV.

    Defaults are the seed's: L1 on pixels / 100 and L1 on relu1_2, relu2_2, relu3_3 of VGG16-BN
    weighted 0.2, 0.7, 0.1 (`layer_weights=None` means `SR_LAYER_WEIGHTS`).

    `forward` returns (total, parts): parts `pixel`, `feature_<layer>` and `tv` are already multiplied
    by their weights, so total == sum(parts); terms with weight 0 are left out.
    """

    def __init__(
        self,
        network: str = "vgg16_bn",
        layer_weights: Mapping[str, float] | None = None,
        criterion: PixelLossName = "l1",
        pixel_weight: float = 0.01,
        pixel_criterion: PixelLossName = "l1",
        tv_weight: float = 0.0,
        pretrained: bool = False,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        self.layer_weights = _weights(layer_weights, SR_LAYER_WEIGHTS, "FeatureLoss layer_weights")
        self.criterion = build_pixel_loss(criterion)
        self.pixel_criterion = build_pixel_loss(pixel_criterion)
        self.pixel_weight, self.tv_weight = float(pixel_weight), float(tv_weight)
        self.feature_network = FeatureNetwork(network, tuple(self.layer_weights), pretrained, weights)

    @in_float32
    def forward(self, prediction: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        _check_pair(prediction, target, "FeatureLoss prediction and target")
        parts: dict[str, Tensor] = {}
        if self.pixel_weight:
            parts["pixel"] = self.pixel_weight * self.pixel_criterion(prediction, target)
        with torch.no_grad():
            target_features = self.feature_network(target)
        features = self.feature_network(prediction)
        for layer, weight in self.layer_weights.items():
            if weight:
                parts[f"feature_{layer}"] = weight * self.criterion(features[layer], target_features[layer])
        if self.tv_weight:
            parts["tv"] = self.tv_weight * total_variation(prediction)
        return sum(parts.values()), parts


class StyleLoss(nn.Module):
    """Fast style transfer loss (Johnson et al.; seed 004): content `criterion` between activations of
    the stylised and the content images, plus style `criterion` between the Gram matrices of the
    stylised images and those of the one style image, plus `tv_weight` x TV.

    Defaults are the seed's: VGG16-BN (fast.ai's `vgg16` is the BatchNorm one: its block ends are
    features 5, 12, 22, 32, 42), MSE, content relu4_3 x 1e4, style relu2_2, relu3_3, relu4_3, relu5_3
    x 0.025, 0.275, 5, 0.2, and the seed's Gram matrices multiplied by `gram_scale` = 1e6 before the
    MSE. The weights were tuned with that scale: without it the style terms are 1e12 times smaller.

    Call `set_style(image)` once; the Gram targets (1, C, C) are non-persistent buffers (they move with
    `.to()`, are not saved in checkpoints) and broadcast to any batch size. `forward` returns
    (total, parts): `content_<layer>`, `style_<layer>`, `tv`, each already weighted; total == sum(parts).
    """

    def __init__(
        self,
        network: str = "vgg16_bn",
        content_layers: Mapping[str, float] | None = None,
        style_layers: Mapping[str, float] | None = None,
        tv_weight: float = 0.0,
        criterion: PixelLossName = "mse",
        gram_scale: float = 1e6,
        pretrained: bool = False,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        self.content_layers = _weights(content_layers, STYLE_CONTENT_LAYERS, "StyleLoss content_layers")
        self.style_layers = _weights(style_layers, STYLE_LAYERS, "StyleLoss style_layers")
        self.criterion = build_pixel_loss(criterion)
        self.tv_weight, self.gram_scale = float(tv_weight), float(gram_scale)
        layers = tuple(dict.fromkeys([*self.content_layers, *self.style_layers]))
        self.feature_network = FeatureNetwork(network, layers, pretrained, weights)
        for index in range(len(self.style_layers)):  # by index: layer names may contain dots
            self.register_buffer(f"style_gram_{index}", None, persistent=False)

    @property
    def style_grams(self) -> dict[str, Tensor | None]:
        return {layer: getattr(self, f"style_gram_{i}") for i, layer in enumerate(self.style_layers)}

    @property
    def has_style(self) -> bool:
        return all(gram is not None for gram in self.style_grams.values())

    @torch.no_grad()
    def set_style(self, style: Tensor) -> None:
        """Compute the Gram targets of one style image, (3, H, W) or (1, 3, H, W) in [0, 1]."""
        if style.ndim == 3:
            style = style.unsqueeze(0)
        if style.ndim != 4 or tuple(style.shape[:2]) != (1, 3):
            raise InputError(f"style image must be (3, H, W) or (1, 3, H, W), got {tuple(style.shape)}")
        mean = self.feature_network.mean
        features = self.feature_network(style.to(mean.device, mean.dtype), layers=tuple(self.style_layers))
        for index, layer in enumerate(self.style_layers):
            self.register_buffer(f"style_gram_{index}", gram_matrix(features[layer]), persistent=False)

    @in_float32
    def forward(self, stylised: Tensor, content: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if not self.has_style:
            raise RuntimeError("StyleLoss has no style targets yet: call set_style(style_image) first")
        _check_pair(stylised, content, "StyleLoss stylised and content images")
        with torch.no_grad():
            content_features = self.feature_network(content, layers=tuple(self.content_layers))
        features = self.feature_network(stylised)
        parts: dict[str, Tensor] = {}
        for layer, weight in self.content_layers.items():
            if weight:
                parts[f"content_{layer}"] = weight * self.criterion(features[layer], content_features[layer])
        for layer, target in self.style_grams.items():
            weight = self.style_layers[layer]
            if weight:
                gram = gram_matrix(features[layer]) * self.gram_scale
                target = (target * self.gram_scale).expand_as(gram)
                parts[f"style_{layer}"] = weight * self.criterion(gram, target)
        if self.tv_weight:
            parts["tv"] = self.tv_weight * total_variation(stylised)
        return sum(parts.values()), parts
