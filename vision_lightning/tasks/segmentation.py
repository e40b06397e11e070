"""SegmentationModule: semantic segmentation with any smp architecture and encoder, or the seeds'
classic U-Nets, in three modes.

- `binary`: one logit plane, foreground where sigmoid >= `threshold` (seeds 000, 003, 004);
- `multiclass`: one plane per class, softmax / argmax (seed 002's drone classes);
- `multilabel`: one plane per class, each thresholded on its own (overlapping classes).

The encoder is the backbone (frozen whole, or its first N children as seed 002 does); decoder and
segmentation head are the head. Any image size works: the network's input is padded to what it
accepts and the logits cropped back (`predict_same_size`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from vision_lightning.losses.segmentation import (
    SegmentationLoss,
    build_segmentation_loss,
    segmentation_loss_options,
)
from vision_lightning.metrics.segmentation import SegmentationScores
from vision_lightning.models.segmentation import (
    create_segmentation_model,
    padded_forward,
    predict_same_size,
    segmentation_data_config,
)
from vision_lightning.models.unet import PaperUNet
from vision_lightning.outputs.masks import MaskSink, RleOutput, rle_output
from vision_lightning.tasks.base import NetworkTask
from vision_lightning.tasks.tta import averaged_logits, flips
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.loggers import log_image
from vision_lightning.utils.transforms import eval_transform
from vision_lightning.utils.visualize import captioned_grid, mask_overlay, to_uint8_images

SegmentationMode = Literal["binary", "multiclass", "multilabel"]


class SegmentationNetwork(nn.Module):
    """The exported segmentation network: logits (N, 1 binary or num_classes, H, W) of images
    (N, C, H, W), padded to the network's stride inside (`padded_forward`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return padded_forward(self.model, images)


class SegmentationModule(NetworkTask):
    """Segmentation network + loss + metrics.

    Args:
        arch: an smp architecture (`Unet`, `UnetPlusPlus`, `FPN`, `DeepLabV3Plus`, `Segformer`, ...),
            `classic_unet` (seed 003), `paper_unet` (seed 000), or a ready `nn.Module` with an
            `encoder` attribute (then `load_from_checkpoint` needs it passed again).
        encoder: smp encoder name (default resnet34; `tu-<timm name>` for any timm model).
        num_classes / class_names / mode: linked from the data module by the CLI; binary has two
            classes (background, foreground) and one logit plane.
        pretrained / weights: ImageNet encoder weights by download, or a local file for the encoder.
        arch_args: more constructor arguments of the architecture.
        loss: a name (`bce`, `ce`, `dice`, `jaccard`, `focal`, `tversky`, `lovasz`), a mapping of
            names to weights (`{bce: 0.5, dice: 0.5}`), `auto` (ce for multiclass, else bce), or
            `{terms: ..., args: {focal: {gamma: 3}}, class_weights: [...]}` (see `SegmentationLoss`).
        ignore_index: a mask value left out of loss and metrics.
        threshold: probability at which binary and multilabel pixels count as foreground.
        log_images: validation samples shown in TensorBoard as image / true mask / predicted mask.
        rle: also write predictions as an RLE CSV: `carvana`, `siim` or `{format: siim, order: C}`.
        optimizer / lr_scheduler: injected factories; the task builds the parameter groups.
        freeze_backbone: True freezes the whole encoder, an integer its first N children.
        compile / channels_last: run the network through `torch.compile` / in channels-last memory
            order (passed on to `BaseTask`; see `vision_lightning.tasks.acceleration`).
        tta: in `test` and `predict`, average the per-pixel probabilities of each image and its
            horizontal flip, flipped back (passed on to `BaseTask`; see `vision_lightning.tasks.tta`).
    """

    no_tta_reason = None
    backbone_child = "encoder"
    task_name = "segmentation"

    def __init__(
        self,
        arch: str | nn.Module = "Unet",
        encoder: str | None = None,
        num_classes: int = 2,
        class_names: list[str] | None = None,
        mode: SegmentationMode = "binary",
        in_channels: int | None = None,
        pretrained: bool = False,
        weights: str | None = None,
        arch_args: dict[str, Any] | None = None,
        loss: str | dict[str, float] | SegmentationLoss = "auto",
        ignore_index: int | None = None,
        threshold: float = 0.5,
        log_images: int = 4,
        rle: Literal["carvana", "siim"] | RleOutput | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        freeze_backbone: bool | int = False,
        **kwargs: Any,
    ) -> None:
        if mode not in ("binary", "multiclass", "multilabel"):
            raise InputError(f"mode must be binary, multiclass or multilabel, got {mode!r}")
        if mode == "binary" and num_classes != 2:
            raise InputError(
                f"mode binary has 2 classes (background, foreground), got num_classes={num_classes}"
            )
        if num_classes < 2 and mode == "multiclass":
            raise InputError(f"mode multiclass needs at least 2 classes, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise InputError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
        if not 0.0 < threshold < 1.0:
            raise InputError(f"threshold is a probability between 0 and 1, got {threshold}")
        super().__init__(optimizer, lr_scheduler, freeze_backbone, **kwargs)
        self.hold_module("arch", arch)
        self.loss_options = segmentation_loss_options(loss)
        self.rle = rle_output(rle)
        self.save_hyperparameters()

    @property
    def class_names(self) -> list[str]:
        if self.hparams.class_names:
            return list(self.hparams.class_names)
        if self.hparams.mode == "binary":
            return ["background", "foreground"]
        return [str(i) for i in range(self.hparams.num_classes)]

    # ---------------------------------------------------------------- configure
    def configure_models(self) -> None:
        hp = self.hparams
        outputs = 1 if hp.mode == "binary" else hp.num_classes
        self._set_model(
            self.given_modules["arch"],
            lambda: create_segmentation_model(
                hp.arch, hp.encoder, outputs, hp.in_channels or 3, hp.pretrained, hp.weights, hp.arch_args
            ),
        )

    def configure_losses(self) -> None:
        hp = self.hparams
        options = self.loss_options
        self.loss_fn = build_segmentation_loss(
            options.terms, hp.mode, hp.num_classes, options.class_weights, hp.ignore_index, options.args
        )

    def configure_metrics(self) -> None:
        hp = self.hparams
        for stage in ("train", "val", "test"):
            scores = SegmentationScores(hp.mode, hp.num_classes, self.class_names, hp.ignore_index)
            setattr(self, f"{stage}_metrics", scores)
        self._samples: dict[str, Tensor] = {}

    @property
    def data_config(self) -> dict[str, Any] | None:
        """The encoder's pretrained mean / std (smp's table), for data modules that leave them unset."""
        arch, encoder = self.hparams.get("arch"), self.hparams.get("encoder")
        return segmentation_data_config(encoder, arch) if isinstance(arch, str) else None

    def chart_layout(self) -> dict[str, list[str]]:
        return {**super().chart_layout(), "iou": [r"train/iou", r"val/iou"]}

    # ---------------------------------------------------------------- forward and predictions
    def forward(self, images: Tensor) -> Tensor:
        """Logits (N, 1 or num_classes, H, W) for images (N, C, H, W) of any size."""
        return predict_same_size(self.model, images)

    def augmented_forward(self, images: Tensor) -> Tensor:
        """Logits whose per-pixel probabilities are the mean of those of the images and their
        horizontal flips, flipped back."""
        activation = "softmax" if self.hparams.mode == "multiclass" else "sigmoid"
        return averaged_logits(self, images, flips(), activation)

    export_outputs = ("logits",)

    @property
    def export_fixed_size(self) -> str | None:
        if isinstance(self.model, PaperUNet):
            return "the paper U-Net takes sides 16 apart, and its overlap-tile padding is computed in Python"
        return super().export_fixed_size

    def export_network(self) -> nn.Module:
        """`SegmentationNetwork`: the logits `forward` gives (see `vision_lightning.export`)."""
        return SegmentationNetwork(self.model)

    def predict_classes(self, logits: Tensor) -> Tensor:
        """Class ids (N, H, W) for binary / multiclass, 0/1 planes (N, C, H, W) for multilabel."""
        mode, threshold = self.hparams.mode, self.hparams.threshold
        if mode == "binary":
            return (torch.sigmoid(logits[:, 0]) >= threshold).long()
        if mode == "multilabel":
            return (torch.sigmoid(logits) >= threshold).long()
        return logits.argmax(dim=1)

    def _target(self, mask: Tensor) -> Tensor:
        return mask.float() if self.hparams.mode == "multilabel" else mask.long()

    def _check_mask(self, batch: dict[str, Any], target: Tensor, logits: Tensor) -> None:
        """Mask values and shape must fit the model (checked on each stage's first batch: a data
        module of the user's own may not check them)."""
        hp = self.hparams
        expected = (
            (len(logits), hp.num_classes, *logits.shape[2:])
            if hp.mode == "multilabel"
            else (len(logits), *logits.shape[2:])
        )
        if tuple(target.shape) != expected:
            raise InputError(
                f"masks of shape {list(target.shape)} do not fit mode {hp.mode} with {hp.num_classes} classes "
                f"and images of {list(logits.shape[2:])} (expected {list(expected)})"
            )
        limit = 2 if hp.mode != "multiclass" else hp.num_classes
        values = target.unique()
        bad = [v for v in values.tolist() if not (0 <= v < limit or v == hp.ignore_index)]
        if bad:
            paths = ", ".join(list(batch.get("path", []))[:3])
            raise InputError(
                f"mask values {bad[:5]} are not classes of mode {hp.mode} (ids 0..{limit - 1})"
                + (f" in a batch of {paths}" if paths else "")
            )

    # ---------------------------------------------------------------- steps
    def _shared_step(self, batch: Any, batch_idx: int, stage: str) -> tuple[dict[str, Any], Tensor, Tensor]:
        batch = self.unpack(batch, "mask")
        images, target = batch["image"], self._target(batch["mask"])
        logits = self.evaluation_forward(images) if stage == "test" else self(images)
        if batch_idx == 0:
            self._check_mask(batch, target, logits)
        loss, parts = self.loss_fn(logits, target)
        # each term of a combined loss, unweighted, so they can be balanced
        self.log_loss(stage, loss, len(images), parts if len(parts) > 1 else None)
        getattr(self, f"{stage}_metrics").update(self.predict_classes(logits.detach().float()), target)
        return batch, loss, logits

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._shared_step(batch, batch_idx, "train")[1]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        batch, _, logits = self._shared_step(batch, batch_idx, "val")
        if batch_idx == 0 and self.hparams.log_images and not self.trainer.sanity_checking:
            n = self.hparams.log_images
            self._samples = {
                "image": batch["image"][:n].cpu(),
                "mask": batch["mask"][:n].cpu(),
                "predicted": self.predict_classes(logits[:n]).cpu(),
            }

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._shared_step(batch, batch_idx, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")
        samples, self._samples = self._samples, {}
        if samples and not self.trainer.sanity_checking:
            log_image(self.trainer, "val/masks", self._overlay_grid(samples))

    def _class_map(self, masks: Tensor) -> Tensor:
        """Multilabel planes -> one class id per pixel for drawing (the highest class present, + 1)."""
        if self.hparams.mode != "multilabel":
            return masks.long()
        weights = torch.arange(1, masks.shape[1] + 1).view(1, -1, 1, 1)
        return (masks.long() * weights).amax(dim=1)

    def _overlay_grid(self, samples: dict[str, Tensor]) -> np.ndarray:
        datamodule = getattr(self.trainer, "datamodule", None)
        images = to_uint8_images(
            samples["image"], getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        )
        colours = self.hparams.num_classes + (self.hparams.mode == "multilabel")
        truth = mask_overlay(images, self._class_map(samples["mask"]).numpy(), colours)
        predicted = mask_overlay(images, self._class_map(samples["predicted"]).numpy(), colours)
        tiles, captions = [], []
        for i in range(len(images)):
            tiles += [images[i], truth[i], predicted[i]]
            captions += [f"image {i}", "true mask", "predicted mask"]
        return captioned_grid(np.stack(tiles), captions, columns=3)

    # ---------------------------------------------------------------- predict
    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """`{"path": names, "masks": [uint8 class-id arrays]}`, each mask at its image's original
        `"size"` (H, W) when the batch says it, else at the input size."""
        batch = self.unpack(batch, "mask")
        logits = self.evaluation_forward(batch["image"])
        sizes = batch["size"].tolist() if "size" in batch else [list(logits.shape[2:])] * len(logits)
        masks = [self._mask_at(logits[i : i + 1], size) for i, size in enumerate(sizes)]
        return {"path": self.batch_names(batch, len(masks), batch_idx), "masks": masks}

    def _mask_at(self, logits: Tensor, size: list[int]) -> np.ndarray:
        """The predicted mask of one image's logits (1, C, h, w), resampled to `size` (H, W)."""
        sample = logits.float()
        if list(sample.shape[2:]) != list(size):  # images were resized for the model: back to the original
            sample = F.interpolate(sample, size=list(size), mode="bilinear", align_corners=False)
        dtype = torch.uint8 if self.hparams.num_classes <= 256 else torch.int32
        return self.predict_classes(sample)[0].to(dtype).cpu().numpy()

    def predict_batches(self, images: list[Any], paths: list[str]) -> list[dict[str, Any]]:
        """One batch per image (sizes differ), with its original `"size"` for the mask."""
        transform = eval_transform(self.preprocessing)
        return [
            {
                "image": transform(image=image)["image"][None],
                "path": [path],
                "size": torch.tensor([image.shape[:2]]),
            }
            for image, path in zip(images, paths)
        ]

    def prediction_results(self, outputs: dict[str, Any]) -> list[dict[str, Any]]:
        """`{"path", "mask": class ids (H, W) at the image's original size; multilabel: (C, H, W) 0/1}`."""
        return [{"path": path, "mask": mask} for path, mask in zip(outputs["path"], outputs["masks"])]

    def prediction_sink(self, output_dir: Path, suffix: str = "") -> MaskSink:
        rle = self.rle
        return MaskSink(
            output_dir, suffix, self.hparams.mode, self.class_names,
            rle.format if rle else None, rle.order if rle else "F",
        )  # fmt: skip
