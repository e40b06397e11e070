"""PatchWhitening: initialise a network's whitening layer from training images, as airbench94 does.

On the first training batch of a run (on the device, augmented and normalised as the network sees
it) every module of the task with a `whiten_from(images)` method and a false `whitened` flag (the
`airbench` backbone's first layer, `vision_lightning.models.airbench.WhiteningConv`) is set from the
batch's 2x2 patches, before the first optimizer step. A resumed run keeps its checkpointed weights
(the flag is saved with them). Then its weights stay frozen (airbench's choice; `freeze: false`
trains them) and its bias trains for the first `bias_epochs` epochs only.

Put it before `BatchMixing` in `trainer.callbacks`, so the patches are of unmixed images. One batch
is plenty: 1,024 CIFAR images give about a million patches for a 12x12 second moment (airbench
uses 5,000 images), and even 64 images give 61,000.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
from torch import Tensor, nn

from vision_lightning.utils.errors import InputError


def whitening_layers(module: nn.Module) -> list[nn.Module]:
    """Submodules of `module` that can be whitened from images (duck-typed: `whiten_from`)."""
    return [m for m in module.modules() if callable(getattr(m, "whiten_from", None))]


def _images(batch: Any) -> Tensor:
    if isinstance(batch, Mapping):
        return batch["image"]
    if isinstance(batch, Sequence) and not isinstance(batch, str):
        return batch[0]
    return batch


class PatchWhitening(pl.Callback):
    """Whiten the model's `WhiteningConv` layers from the first training batch.

    Args:
        eps: added to the eigenvalues before scaling by `1/sqrt` (airbench: 5e-4), so directions of
            almost no variance are not blown up.
        freeze: keep the whitening weights fixed after initialisation (airbench does).
        bias_epochs: train the whitening bias for this many epochs, then fix it (airbench: 3);
            None: always train it.
    """

    def __init__(self, eps: float = 5e-4, freeze: bool = True, bias_epochs: int | None = 3) -> None:
        if not eps >= 0:
            raise InputError(f"PatchWhitening eps must be 0 or more, got {eps}")
        if bias_epochs is not None and bias_epochs < 0:
            raise InputError(
                f"PatchWhitening bias_epochs must be 0 or more (or null: always), got {bias_epochs}"
            )
        self.eps, self.freeze, self.bias_epochs = float(eps), freeze, bias_epochs

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and not whitening_layers(pl_module):
            raise InputError(
                f"PatchWhitening found no whitening layer in {type(pl_module).__name__} (backbone airbench "
                "has one): leave the callback out"
            )

    def _set_trainable(self, pl_module: pl.LightningModule, epoch: int) -> None:
        for layer in whitening_layers(pl_module):
            if bool(getattr(layer, "whitened", True)):
                layer.weight.requires_grad_(not self.freeze)
                if layer.bias is not None:
                    layer.bias.requires_grad_(self.bias_epochs is None or epoch < self.bias_epochs)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._set_trainable(pl_module, trainer.current_epoch)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        pending = [m for m in whitening_layers(pl_module) if not bool(getattr(m, "whitened", False))]
        if not pending:
            return
        images = _images(batch)
        for layer in pending:
            layer.whiten_from(images.float(), eps=self.eps)
        self._set_trainable(pl_module, trainer.current_epoch)
