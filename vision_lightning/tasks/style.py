"""StyleTransferModule: fast neural style transfer (Johnson et al. 2016; seed 004).

One feed-forward network learns one style: it is trained so that its output keeps the content
images' features at `content_layers` and takes the style image's Gram matrices at `style_layers`
of a frozen VGG. The style image's Gram matrices are computed once, when training, validation or
testing starts (`setup`), and broadcast over each batch, so a short last batch needs nothing special.
Predicting needs neither the style image nor the VGG weights: `predict` through the CLI builds the
unused loss network without downloading.

The network's down-sampling convolutions are the backbone, the residual blocks and the decoder the
head. Any image size works: the input is reflection-padded to a multiple of 4 and the output cropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from vision_lightning.losses.feature import StyleLoss
from vision_lightning.losses.image import build_feature_loss, warn_if_random_features
from vision_lightning.models.style import create_style_model
from vision_lightning.outputs.images import ImageSink
from vision_lightning.tasks.base import NetworkTask
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.images import read_style_image, to_float_tensor
from vision_lightning.utils.loggers import log_image
from vision_lightning.utils.visualize import captioned_grid, to_uint8_images
from vision_lightning.utils.weights import load_weights

#: seed 004: content at relu4_3 x 1e4; style Gram terms at four ReLUs of VGG16
SEED_CONTENT_LAYERS = {"relu4_3": 1e4}
SEED_STYLE_LAYERS = {"relu2_2": 0.025, "relu3_3": 0.275, "relu4_3": 5.0, "relu5_3": 0.2}


class StyleNetwork(nn.Module):
    """The exported style network: images (N, 3, H, W) in [0, 1] -> stylised images of their size,
    clamped to [0, 1] (as `predict` writes them), reflection-padded to a multiple of 4 inside."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        pad_h, pad_w = -height % 4, -width % 4  # always padded (by 0 where it fits): no branch on the size
        stylised = self.model(F.pad(images, (0, pad_w, 0, pad_h), mode="reflect"))
        # narrow, not slicing: its size is `height` itself, which keeps the traced sizes simple
        return stylised.narrow(-2, 0, height).narrow(-1, 0, width).clamp(0, 1)


class StyleTransferModule(NetworkTask):
    """Image transformation network + content / style / total-variation loss.

    Args:
        arch: `transformer_net` (Johnson et al., instance norm) or `style_resnet` (seed 004, reflection
            pad 40 and unpadded residual blocks), or a ready `nn.Module` with an `encoder` attribute.
        arch_args: more constructor arguments of the network (`channels`, `blocks`).
        weights: initial weights of the network (another style's checkpoint, say).
        style_image / style_size: the style image, its shorter side resized to `style_size`; linked
            from StyleTransferDataModule by the CLI (with the Python API, the data module's style is
            used when these are not given).
        feature_network: the loss's frozen network (VGG16-BN in the seed, fast.ai's vgg16; any name `FeatureNetwork` takes).
        content_layers / style_layers: layer name -> weight.
        tv_weight: weight of the total-variation term (smoothness of the output).
        feature_pretrained / feature_weights: ImageNet weights of the loss network, by download or
            from a local file (random features otherwise, with a warning: tests only).
        log_images: validation content images shown in TensorBoard next to their stylised version.
        optimizer / lr_scheduler: injected factories; freeze_backbone: train the decoder only.
        compile / channels_last: run the network through `torch.compile` / in channels-last memory
            order (passed on to `BaseTask`; see `vision_lightning.tasks.acceleration`).
    """

    no_tta_reason = (
        "a stylised image is a texture, not an estimate, and the mean of the stylisations of flipped "
        "copies blurs their strokes"
    )
    backbone_child = "encoder"
    task_name = "style"

    def __init__(
        self,
        arch: str | nn.Module = "transformer_net",
        arch_args: dict[str, Any] | None = None,
        weights: str | None = None,
        style_image: str | None = None,
        style_size: int | None = None,
        feature_network: str = "vgg16_bn",
        content_layers: dict[str, float] | None = None,
        style_layers: dict[str, float] | None = None,
        tv_weight: float = 0.0,
        feature_pretrained: bool = False,
        feature_weights: str | None = None,
        log_images: int = 4,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        freeze_backbone: bool | int = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer, lr_scheduler, freeze_backbone, **kwargs)
        self.hold_module("arch", arch)
        self.save_hyperparameters()

    # ---------------------------------------------------------------- configure
    def configure_models(self) -> None:
        hp = self.hparams
        self._set_model(
            self.given_modules["arch"], lambda: create_style_model(hp.arch, **(hp.arch_args or {}))
        )
        if hp.weights:
            load_weights(self.model, hp.weights, prefix="model.")

    def configure_losses(self) -> None:
        hp = self.hparams
        self.loss_fn = build_feature_loss(
            StyleLoss,
            hp.feature_pretrained,
            hp.feature_weights,
            network=hp.feature_network,
            content_layers=dict(hp.content_layers or SEED_CONTENT_LAYERS),
            style_layers=dict(hp.style_layers or SEED_STYLE_LAYERS),
            tv_weight=hp.tv_weight,
        )
        self._samples: dict[str, Tensor] = {}

    # ---------------------------------------------------------------- the style, once
    def style_tensor(self) -> Tensor:
        """The style image (1, 3, H, W) in [0, 1]: `style_image`, else the data module's."""
        hp = self.hparams
        if hp.style_image:
            return read_style_image(hp.style_image, hp.style_size)
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "style_tensor"):
            return datamodule.style_tensor()
        raise InputError(
            "StyleTransferModule has no style image: set style_image, or train with a StyleTransferDataModule"
        )

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage in ("fit", "validate", "test") and not self.loss_fn.has_style:
            self.loss_fn.set_style(self.style_tensor())

    def on_fit_start(self) -> None:
        super().on_fit_start()
        warn_if_random_features(self.loss_fn)

    export_outputs = ("stylised",)
    export_normalized_inputs = False

    def export_network(self) -> nn.Module:
        """`StyleNetwork`: the stylised image in [0, 1] (see `vision_lightning.export`)."""
        return StyleNetwork(self.model)

    # ---------------------------------------------------------------- steps
    def forward(self, images: Tensor) -> Tensor:
        """Stylised images, unclamped, of the size of `images` (N, 3, H, W) in [0, 1]."""
        height, width = images.shape[-2:]
        pad_h, pad_w = -height % 4, -width % 4
        if pad_h or pad_w:  # the network halves the size twice and doubles it twice
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            images = F.pad(images, (0, pad_w, 0, pad_h), mode=mode)
        return self.model(images)[..., :height, :width]

    def _shared_step(self, batch: Any, stage: str) -> tuple[Tensor, Tensor]:
        images = self.unpack(batch)["image"]
        stylised = self(images)
        loss, parts = self.loss_fn(stylised, images)
        self.log_loss(stage, loss, len(images), parts)
        return loss, stylised

    def chart_layout(self) -> dict[str, list[str]]:
        return {**super().chart_layout(), "loss terms": [r"(train|val)/loss_.*"]}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")[0]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        _, stylised = self._shared_step(batch, "val")
        if batch_idx == 0 and self.hparams.log_images and not self.trainer.sanity_checking:
            n = self.hparams.log_images
            self._samples = {"content": self.unpack(batch)["image"][:n].cpu(), "stylised": stylised[:n].cpu()}

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        samples, self._samples = self._samples, {}
        if samples and not self.trainer.sanity_checking:
            log_image(self.trainer, "val/content_stylised", self._pairs_grid(samples))

    @staticmethod
    def _pairs_grid(samples: dict[str, Tensor]) -> np.ndarray:
        content, stylised = to_uint8_images(samples["content"]), to_uint8_images(samples["stylised"])
        tiles, captions = [], []
        for i in range(len(content)):
            tiles += [content[i], stylised[i]]
            captions += [f"content {i}", "stylised"]
        return captioned_grid(np.stack(tiles), captions, columns=4)

    # ---------------------------------------------------------------- predict
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """`{"path": names, "images": [uint8 HxWx3 arrays]}` for `{"image": (N, 3, H, W)}` in [0, 1]."""
        batch = self.unpack(batch)
        images = list(to_uint8_images(self(batch["image"])))
        return {"path": self.batch_names(batch, len(images), batch_idx), "images": images}

    def predict_batches(self, images: list[Any], paths: list[str]) -> list[dict[str, Any]]:
        """One batch per image, whole, in [0, 1] (sizes differ)."""
        return [{"image": to_float_tensor(image)[None], "path": [path]} for image, path in zip(images, paths)]

    def prediction_results(self, outputs: dict[str, Any]) -> list[dict[str, Any]]:
        """`{"path", "image": uint8 HxWx3 array}`."""
        return [{"path": path, "image": image} for path, image in zip(outputs["path"], outputs["images"])]

    def prediction_sink(self, output_dir: Path, suffix: str = "") -> ImageSink:
        return ImageSink(output_dir, suffix)
