"""SuperResModule: single-image super-resolution x2, x3 or x4.

The network works at low resolution and upsamples at its end with ICNR-initialised sub-pixel
convolutions (`models/superres.py`: the seed-004 SrResnet, EDSR-baseline, ESPCN). Its LR feature body
is the backbone; the upsampling stages and the tail are the head.

Seed 004 grows a trained x2 model into x4: `weights: x2.ckpt` on an x4 model loads every tensor that
fits, keeps the new upsampling stage's ICNR initialisation and reports it, and `new_layers_first: N`
trains only the new layers for the first N epochs before everything trains.

Validation runs on whole images and reports PSNR / SSIM on RGB and Y with a border crop of `scale`
(`val_psnr_y_crop4`), next to bicubic upscaling of the same images (`val_bicubic_psnr_y_crop4`) and
the margin over it (`val_psnr_y_crop4_over_bicubic`). `predict` upscales whole images tile by tile
and writes PNGs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from vision_lightning.losses.image import build_superres_loss, warn_if_random_features
from vision_lightning.metrics.superres import SuperResScores
from vision_lightning.models.superres import create_superres_model, load_for_scale
from vision_lightning.models.tiling import tiled_forward
from vision_lightning.outputs.images import ImageSink
from vision_lightning.tasks.base import NetworkTask
from vision_lightning.tasks.tta import augmented_mean, dihedral
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.images import to_float_tensor
from vision_lightning.utils.loggers import log_image
from vision_lightning.utils.resize import bicubic_resize
from vision_lightning.utils.visualize import captioned_grid, to_uint8_images

log = logging.getLogger(__name__)

SuperResLoss = Literal["l1", "mse", "charbonnier", "feature"]


class SuperResNetwork(nn.Module):
    """The exported super-resolution network: LR images (N, 3, h, w) in [0, 1] -> SR images
    (N, 3, h*scale, w*scale) clamped to [0, 1], in one pass (`predict` goes tile by tile, which
    only saves memory)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, lr: Tensor) -> Tensor:
        return self.model(lr).clamp(0, 1)


class SuperResModule(NetworkTask):
    """Super-resolution network + pixel or feature loss + PSNR/SSIM against bicubic.

    Args:
        arch: `srresnet` (seed 004), `edsr_baseline` or `espcn`, or a ready `nn.Module` with
            `features` (its LR body), mapping LR (N, 3, h, w) in [0, 1] to (N, 3, h*scale, w*scale).
        scale: 2, 3 or 4 (linked from the data module by the CLI).
        arch_args: more constructor arguments of the network (`blocks`, `channels`, ...).
        weights: a state dict or checkpoint of this network at this or another scale; loaded
            partially (every tensor that fits), with a report of what was new or skipped.
        new_layers_first: epochs at the start during which only the layers `weights` lacked train.
        loss: `l1`, `mse`, `charbonnier`, or `feature` (seed 004: pixel L1 / 100 + VGG16-BN relu1_2,
            relu2_2, relu3_3 features weighted 0.2, 0.7, 0.1); `loss_args` go to the loss.
        feature_pretrained / feature_weights: ImageNet weights of the feature loss's network, by
            download or from a local file (random features otherwise, with a warning: tests only).
        tile / tile_overlap: `predict` upscales tiles of this many LR pixels with this much context.
        log_images: validation images shown in TensorBoard as LR / bicubic / SR / HR.
        compile / channels_last: run the network through `torch.compile` / in channels-last memory
            order (passed on to `BaseTask`; see `vision_lightning.tasks.acceleration`).
        tta: in `test` and `predict`, the x8 self-ensemble (EDSR's "+"): the mean of the SR images
            of the 4 rotations of the LR image and of its flip, each turned back (passed on to
            `BaseTask`; see `vision_lightning.tasks.tta`).
    """

    no_tta_reason = None
    backbone_child = "features"
    task_name = "super-resolution"

    def __init__(
        self,
        arch: str | nn.Module = "srresnet",
        scale: int = 4,
        arch_args: dict[str, Any] | None = None,
        weights: str | None = None,
        new_layers_first: int = 0,
        loss: SuperResLoss = "l1",
        loss_args: dict[str, Any] | None = None,
        feature_pretrained: bool = False,
        feature_weights: str | None = None,
        tile: int = 128,
        tile_overlap: int = 16,
        log_images: int = 2,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        freeze_backbone: bool | int = False,
        **kwargs: Any,
    ) -> None:
        if scale not in (2, 3, 4):
            raise InputError(f"scale must be 2, 3 or 4, got {scale}")
        if new_layers_first and not weights:
            raise InputError("new_layers_first needs weights: the file whose layers train later")
        if tile < 8 or tile_overlap < 0:
            raise InputError(f"tile must be at least 8 and tile_overlap >= 0, got {tile} and {tile_overlap}")
        super().__init__(optimizer, lr_scheduler, freeze_backbone, **kwargs)
        self.new_parameters: list[str] = []
        self._kept_frozen: set[str] | None = None
        self.hold_module("arch", arch)
        self.save_hyperparameters()

    # ---------------------------------------------------------------- configure
    def configure_models(self) -> None:
        hp = self.hparams
        self._set_model(
            self.given_modules["arch"],
            lambda: create_superres_model(hp.arch, hp.scale, **(hp.arch_args or {})),
        )
        if hp.weights:
            report = load_for_scale(self.model, hp.weights)
            self.new_parameters = [k for k in report["kept_init"] if k in dict(self.model.named_parameters())]

    def configure_losses(self) -> None:
        hp = self.hparams
        self.loss_fn = build_superres_loss(hp.loss, hp.loss_args, hp.feature_pretrained, hp.feature_weights)

    def configure_metrics(self) -> None:
        self.val_metrics = SuperResScores(self.hparams.scale)
        self.test_metrics = SuperResScores(self.hparams.scale)
        self._samples: list[dict[str, Tensor]] = []

    def on_fit_start(self) -> None:
        super().on_fit_start()
        warn_if_random_features(self.loss_fn)

    # ---------------------------------------------------------------- new layers first (seed 004)
    def on_train_epoch_start(self) -> None:
        """While `new_layers_first` lasts, only the layers the loaded weights lacked get gradients.

        With a BackboneFreezeUnfreeze callback (`backbone_scheduled`), which has set the body for this
        epoch just before (callbacks' hooks run first), the body is left as it set it except that
        loaded body layers are frozen too while `new_layers_first` lasts: a parameter trains only
        when neither freezes it."""
        if not self.hparams.new_layers_first:
            return
        body = {f"{self.backbone_child}.{name}" for name, _ in self.backbone.named_parameters()}
        if self._kept_frozen is None:  # what freeze_backbone froze stays frozen in both phases
            self._kept_frozen = {n for n, p in self.model.named_parameters() if not p.requires_grad}
            if self.backbone_scheduled:  # the body is the callback's, frozen or not
                self._kept_frozen -= body
        only_new = self.current_epoch < self.hparams.new_layers_first
        new = set(self.new_parameters)
        for name, parameter in self.model.named_parameters():
            if self.backbone_scheduled and name in body:
                if only_new and name not in new:
                    parameter.requires_grad_(False)
                continue
            parameter.requires_grad_(name not in self._kept_frozen and (name in new or not only_new))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["new_parameters"] = list(self.new_parameters)  # a resume no longer reads `weights`

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.new_parameters = list(checkpoint.get("new_parameters", self.new_parameters))

    # ---------------------------------------------------------------- steps
    def forward(self, lr: Tensor) -> Tensor:
        """SR images (N, 3, h*scale, w*scale), unclamped, for LR images (N, 3, h, w) in [0, 1]."""
        return self.model(lr)

    export_outputs = ("upscaled",)
    export_normalized_inputs = False

    def export_network(self) -> nn.Module:
        """`SuperResNetwork`: the SR image in [0, 1] (see `vision_lightning.export`)."""
        return SuperResNetwork(self.model)

    def augmented_forward(self, lr: Tensor) -> Tensor:
        """The x8 self-ensemble: the mean of the 8 dihedral copies' SR images, each turned back."""
        return augmented_mean(self, lr, dihedral())

    def _loss(self, sr: Tensor, hr: Tensor, stage: str) -> Tensor:
        loss, parts = self.loss_fn(sr, hr)
        # each weighted term, so they can be balanced (seed 004 prints them)
        self.log_loss(stage, loss, len(sr), parts if len(parts) > 1 else None)
        return loss

    def chart_layout(self) -> dict[str, list[str]]:
        return {**super().chart_layout(), "psnr": [r"val/psnr.*"]}

    def _check_batch(self, batch: dict[str, Any]) -> None:
        lr, hr = batch["lr"], batch["hr"]
        scale = self.hparams.scale
        if tuple(hr.shape[-2:]) != (lr.shape[-2] * scale, lr.shape[-1] * scale):
            raise InputError(
                f"HR images of {list(hr.shape[-2:])} are not {scale}x the LR images of {list(lr.shape[-2:])}: "
                f"does the data module's scale match the model's scale {scale}?"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        if batch_idx == 0:
            self._check_batch(batch)
        return self._loss(self(batch["lr"]), batch["hr"], "train")

    def _evaluate(self, batch: dict[str, Any], batch_idx: int, stage: str) -> Tensor:
        if batch_idx == 0:
            self._check_batch(batch)
        lr, hr = batch["lr"], batch["hr"]
        sr = self.evaluation_forward(lr) if stage == "test" else self(lr)
        self._loss(sr, hr, stage)
        bicubic = bicubic_resize(lr, hr.shape[-2:])
        getattr(self, f"{stage}_metrics").update(sr.detach(), hr, bicubic)
        return sr

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        sr = self._evaluate(batch, batch_idx, "val")
        if len(self._samples) < self.hparams.log_images and not self.trainer.sanity_checking:
            for i in range(min(len(sr), self.hparams.log_images - len(self._samples))):
                self._samples.append(
                    {"lr": batch["lr"][i].cpu(), "sr": sr[i].cpu(), "hr": batch["hr"][i].cpu()}
                )

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")
        samples, self._samples = self._samples, []
        if samples and not self.trainer.sanity_checking:
            log_image(self.trainer, "val/lr_bicubic_sr_hr", self._comparison_grid(samples))

    def _comparison_grid(self, samples: list[dict[str, Tensor]], crop: int = 192) -> np.ndarray:
        """LR (pixels enlarged), bicubic, SR and HR side by side: a centre crop of at most `crop` HR
        pixels of each image, so detail is visible at TensorBoard's size."""
        scale = self.hparams.scale
        crop = min([crop] + [min(sample["hr"].shape[-2:]) for sample in samples])  # one tile size
        tiles, captions = [], []
        for i, sample in enumerate(samples):
            hr = sample["hr"][None]
            h, w = hr.shape[-2:]
            ch, cw = crop // scale * scale, crop // scale * scale
            top, left = (h - ch) // 2 // scale * scale, (w - cw) // 2 // scale * scale
            window = (slice(None), slice(None), slice(top, top + ch), slice(left, left + cw))
            lr = sample["lr"][None][
                :, :, top // scale : (top + ch) // scale, left // scale : (left + cw) // scale
            ]
            views = [
                F.interpolate(lr, scale_factor=scale, mode="nearest"),
                bicubic_resize(lr, (ch, cw)),
                sample["sr"][None][window],
                hr[window],
            ]
            tiles += [to_uint8_images(v)[0] for v in views]
            captions += [f"LR {i}", "bicubic", "SR", "HR"]
        return captioned_grid(np.stack(tiles), captions, columns=4)

    # ---------------------------------------------------------------- predict
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """`{"path": names, "images": [uint8 HxWx3 arrays]}` for `{"lr": (N, 3, h, w)}` in [0, 1]."""
        if isinstance(batch, Tensor):
            batch = {"lr": batch}
        images = self.upscale(batch["lr"])
        return {"path": self.batch_names(batch, len(images), batch_idx), "images": images}

    def upscale(self, lr: Tensor) -> list[np.ndarray]:
        """Tiled super-resolution of (N, 3, h, w) [0, 1] images, as uint8 HxWx3 arrays (with `tta`,
        the x8 self-ensemble of tiled passes)."""
        hp = self.hparams

        def tiled(images: Tensor) -> Tensor:
            return tiled_forward(self.model, images, hp.scale, hp.tile, hp.tile_overlap)

        sr = augmented_mean(tiled, lr, dihedral()) if self.tta else tiled(lr)
        return list(to_uint8_images(sr.clamp(0, 1)))  # unclamped, a value over 1 would stretch the image

    def predict_batches(self, images: list[Any], paths: list[str]) -> list[dict[str, Any]]:
        """One batch per image, whole, in [0, 1] (sizes differ)."""
        return [{"lr": to_float_tensor(image)[None], "path": [path]} for image, path in zip(images, paths)]

    def prediction_results(self, outputs: dict[str, Any]) -> list[dict[str, Any]]:
        """`{"path", "image": uint8 HxWx3 array}`."""
        return [{"path": path, "image": image} for path, image in zip(outputs["path"], outputs["images"])]

    def prediction_sink(self, output_dir: Path, suffix: str = "") -> ImageSink:
        return ImageSink(output_dir, suffix)
