"""One factory for segmentation networks: every smp architecture with any smp encoder, and the two
classic U-Nets of the seeds (`classic_unet`: seed 003, padded; `paper_unet`: seed 000, unpadded).

All of them have `encoder`, `decoder` and `segmentation_head`, so a task freezes `encoder` and trains
the rest the same way for each. `predict_same_size` runs any of them on any image size and returns
logits of that size: smp encoders need sides divisible by their output stride (32), the classic
U-Net by 16, and the paper U-Net loses 184 pixels to its unpadded convolutions.
"""

from __future__ import annotations

import difflib
from functools import cache
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from vision_lightning.models.factory import backbone_data_config
from vision_lightning.models.unet import PaperUNet, UNet
from vision_lightning.utils.errors import DownloadError, InputError
from vision_lightning.utils.weights import load_weights, read_state_dict

CLASSIC_ARCHITECTURES = {"classic_unet": UNet, "paper_unet": PaperUNet}

# smp's own encoders whose pretrained weights expect other statistics than ImageNet's: mean, std
# (smp's pretrained settings; timm's configs of the same weights agree). smp 0.5+ only keeps them in
# a config.json on the Hugging Face hub (`get_preprocessing_params` downloads it), so they are here.
# Every other smp encoder was trained on ImageNet-normalised images.
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
_DPN = ((124 / 255, 117 / 255, 104 / 255), (1 / (0.0167 * 255),) * 3)
_SMP_ENCODER_STATISTICS = {
    **dict.fromkeys(("inceptionv4", "inceptionresnetv2", "xception"), _HALF),
    **dict.fromkeys((f"timm-tf_efficientnet_lite{i}" for i in range(5)), _HALF),
    **dict.fromkeys(("dpn68", "dpn68b", "dpn92", "dpn98", "dpn107", "dpn131"), _DPN),
}


def _smp() -> Any:
    """segmentation_models_pytorch, imported on first use: with timm it would slow down CLI start-up."""
    import segmentation_models_pytorch

    return segmentation_models_pytorch


@cache
def _smp_architectures() -> dict[str, str]:
    """lower-case name -> smp class name (`unetplusplus` -> `UnetPlusPlus`)."""
    return {name: cls.__name__ for name, cls in _smp().MODEL_ARCHITECTURES_MAPPING.items()}


def available_architectures() -> list[str]:
    return sorted({*_smp_architectures().values(), *CLASSIC_ARCHITECTURES})


def _check_encoder(encoder: str) -> None:
    known = _smp().encoders.get_encoder_names()
    if encoder in known or encoder.startswith("tu-"):  # tu-<name>: any timm model through smp
        return
    close = difflib.get_close_matches(encoder, known, n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise InputError(
        f"unknown smp encoder {encoder!r}: {hint}see segmentation_models_pytorch.encoders.get_encoder_names(), "
        "or use tu-<timm model name>"
    )


def segmentation_data_config(encoder: str | None = None, arch: str = "Unet") -> dict[str, Any] | None:
    """How the pretrained encoder of a segmentation network expects its images, or None for ImageNet's.

    `tu-<timm name>` encoders give timm's pretrained config, as `backbone_data_config` does (mean,
    std, input_size, fixed_input_size); smp's own encoders give `{"mean", "std"}` where their weights
    were not trained on ImageNet-normalised images (Inception, Xception, DPN, EfficientNet-Lite) and
    None otherwise, as do the classic U-Nets (no pretrained weights). Nothing is downloaded.
    """
    if arch.lower() in CLASSIC_ARCHITECTURES:
        return None
    encoder = encoder or "resnet34"
    _check_encoder(encoder)
    if encoder.startswith("tu-"):
        return backbone_data_config(f"timm:{encoder[3:]}")
    statistics = _SMP_ENCODER_STATISTICS.get(encoder)
    if statistics is None:
        return None
    return {"mean": list(statistics[0]), "std": list(statistics[1])}


def _load_weights(model: nn.Module, path: str) -> None:
    """A whole segmentation checkpoint of this project (the previous stage of a recipe: every key
    under `model.`, decoder included) loads into the whole network; anything else is encoder
    weights: a plain file (a torchvision ResNet's, say) or a classifier checkpoint whose backbone
    fits the encoder (`backbone.`)."""
    keys = read_state_dict(path)
    if any(k.startswith("model.decoder.") or k.startswith("model.segmentation_head.") for k in keys):
        load_weights(model, path, strict=True, prefix="model.")
        return
    prefix = next(
        (p for p in ("model.encoder.", "encoder.", "backbone.") if any(k.startswith(p) for k in keys)), None
    )
    load_weights(model.encoder, path, strict=True, prefix=prefix, ignore=("fc.", "classifier.", "head."))


def create_segmentation_model(
    arch: str = "Unet",
    encoder: str | None = None,
    classes: int = 1,
    in_channels: int = 3,
    pretrained: bool = False,
    weights: str | None = None,
    arch_args: dict[str, Any] | None = None,
) -> nn.Module:
    """A segmentation network giving `classes` logit planes.

    Args:
        arch: an smp architecture (`Unet`, `UnetPlusPlus`, `FPN`, `DeepLabV3Plus`, ...; any case) or
            `classic_unet` / `paper_unet`.
        encoder: an smp encoder name (default `resnet34`); the classic U-Nets have their own.
        pretrained: ImageNet encoder weights, downloaded by smp.
        weights: a local file instead: encoder weights, or a whole segmentation checkpoint of this
            project to start from (see `_load_weights`).
        arch_args: further constructor arguments (`decoder_attention_type`, `encoder_depth`,
            `bilinear` and `base_channels` for the classic U-Nets, ...).
    """
    arch_args = dict(arch_args or {})
    key = arch.lower()
    if key in CLASSIC_ARCHITECTURES:
        if encoder is not None:
            raise InputError(f"arch {arch} has its own encoder; remove encoder: {encoder}")
        if pretrained:
            raise InputError(f"arch {arch} has no pretrained weights: set pretrained: false")
        try:
            model = CLASSIC_ARCHITECTURES[key](in_channels=in_channels, classes=classes, **arch_args)
        except TypeError as error:
            raise InputError(f"arch_args for {arch}: {error}") from None
    elif key in _smp_architectures():
        encoder = encoder or "resnet34"
        _check_encoder(encoder)

        def build(encoder_weights: str | None) -> nn.Module:
            return _smp().create_model(
                key, encoder_name=encoder, encoder_weights=encoder_weights,
                in_channels=in_channels, classes=classes, **arch_args,
            )  # fmt: skip

        try:
            model = build("imagenet" if pretrained else None)
        except TypeError as error:
            raise InputError(f"arch_args for {arch}: {error}") from None
        except Exception as error:  # noqa: BLE001 - hub errors come in many types
            if not pretrained:
                raise
            build(None)  # the architecture itself is fine, so the download failed
            raise DownloadError(
                f"could not download ImageNet weights for encoder {encoder!r} ({type(error).__name__}); "
                "without internet access set pretrained: false, or pass weights: path/to/encoder_weights.pth"
            ) from None
    else:
        close = difflib.get_close_matches(key, [a.lower() for a in available_architectures()], n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise InputError(
            f"unknown segmentation arch {arch!r}: {hint}choose from {', '.join(available_architectures())}"
        )
    if weights:
        _load_weights(model, weights)
    return model


def _pad(images: Tensor, top: int, bottom: int, left: int, right: int) -> Tensor:
    if not (top or bottom or left or right):
        return images
    fits = max(top, bottom) < images.shape[-2] and max(left, right) < images.shape[-1]
    return F.pad(images, (left, right, top, bottom), mode="reflect" if fits else "replicate")


def predict_same_size(model: nn.Module, images: Tensor) -> Tensor:
    """Logits of the same height and width as `images`, for any size.

    Sides are reflect-padded up to what the network accepts and the logits cropped back. The paper
    U-Net gets the paper's overlap-tile input: the image mirrored by at least 92 pixels on each side,
    so its valid convolutions see context at the borders and its output covers the whole image.
    """
    height, width = images.shape[-2:]
    if isinstance(model, PaperUNet):
        sides = [PaperUNet.valid_input_size(side + 184) for side in (height, width)]
        top, left = (sides[0] - height) // 2, (sides[1] - width) // 2
        padded = _pad(images, top, sides[0] - height - top, left, sides[1] - width - left)
        logits = model(padded)  # output pixel j is padded-input pixel j + 92
        return logits[..., top - 92 : top - 92 + height, left - 92 : left - 92 + width]
    stride = getattr(model, "output_stride", None) or getattr(
        getattr(model, "encoder", None), "output_stride", 1
    )
    pad_h, pad_w = -height % stride, -width % stride
    if not (pad_h or pad_w):
        return model(images)
    top, left = pad_h // 2, pad_w // 2
    logits = model(_pad(images, top, pad_h - top, left, pad_w - left))
    return logits[..., top : top + height, left : left + width]


def padded_forward(model: nn.Module, images: Tensor) -> Tensor:
    """`predict_same_size` written without branches on the image size, so that torch.export keeps
    height and width dynamic: sides are always reflect-padded up to the network's stride (by 0 where
    they fit) and the logits cropped back. The same logits for sides of at least the stride; the
    paper U-Net's size arithmetic stays `predict_same_size`'s (export fixes its size)."""
    if isinstance(model, PaperUNet):
        return predict_same_size(model, images)
    stride = getattr(model, "output_stride", None) or getattr(
        getattr(model, "encoder", None), "output_stride", 1
    )
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % stride, -width % stride
    top, left = pad_h // 2, pad_w // 2
    logits = model(F.pad(images, (left, pad_w - left, top, pad_h - top), mode="reflect"))
    # narrow, not slicing: its size is `height` itself, which keeps the traced sizes simple
    return logits.narrow(-2, top, height).narrow(-1, left, width)
