"""The `airbench` network: shape and parameter count, patch whitening that gives the first layer's
outputs identity second moment on the training patches, BatchNorm shifts at 64x the learning rate,
channels-last and bf16, and the PatchWhitening callback that sets, freezes and keeps it."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tests.conftest import cpu_trainer
from vision_lightning import ClassifierModule, ImageClassificationDataModule, PatchWhitening
from vision_lightning.data.classification_sources import SyntheticShapes
from vision_lightning.models import create_backbone
from vision_lightning.models.airbench import ShiftOnlyBatchNorm, WhiteningConv
from vision_lightning.utils.errors import InputError


def _smooth_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Images whose neighbouring pixels and channels correlate, as photos' do (far from white)."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 3, 36, 36, generator=generator)
    images = F.avg_pool2d(noise, 5, stride=1)  # 32x32, spatially correlated
    return images + 0.5 * images.mean(dim=1, keepdim=True) + 0.3  # correlated channels, non-zero mean


def test_output_shape_and_parameter_count():
    model = ClassifierModule(backbone="airbench", num_classes=10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == 1_971_650  # as documented
    backbone, features = create_backbone("airbench")
    assert features == 256 and backbone(torch.randn(1, 3, 32, 32)).shape == (1, 256)
    with pytest.raises(InputError, match="takes 3x32x32 images"):
        backbone(torch.randn(1, 3, 64, 64))


def test_whitening_gives_identity_second_moment_on_the_training_patches():
    images = _smooth_images()
    layer = WhiteningConv(3)
    assert not layer.whitened
    layer.whiten_from(images, eps=0.0)
    assert layer.whitened
    with torch.no_grad():
        outputs = layer(images)  # (N, 24, 31, 31): every 2x2 patch
    channels = outputs.permute(1, 0, 2, 3).reshape(24, -1).double()
    moment = channels @ channels.T / channels.shape[1]
    torch.testing.assert_close(moment[:12, :12], torch.eye(12, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(channels[12:], -channels[:12])  # the negatives, for the GELU
    raw = F.unfold(images.double(), 2)  # the patches themselves are far from white
    raw_moment = torch.einsum("nil,njl->ij", raw, raw) / (raw.shape[0] * raw.shape[2])
    assert (raw_moment - torch.eye(12, dtype=torch.float64)).abs().max() > 0.5
    layer.whiten_from(images)  # eps 5e-4 shrinks only the directions of tiny variance
    with torch.no_grad():
        first = layer(images)[:, :12].permute(1, 0, 2, 3).reshape(12, -1).double()
    diagonal = (first @ first.T / first.shape[1]).diagonal()
    assert torch.all(diagonal <= 1) and diagonal.max() > 0.99


def test_batchnorm_shift_trains_at_64_times_the_rate():
    norm, plain = ShiftOnlyBatchNorm(4), nn.BatchNorm2d(4, eps=1e-12, momentum=0.4)
    x = torch.randn(8, 4, 5, 5)
    target = torch.randn(8, 4, 5, 5)
    for module, lr in ((norm, 0.01), (plain, 0.64)):
        optimizer = torch.optim.SGD([module.shift if module is norm else module.bias], lr=lr)
        F.mse_loss(module(x), target).backward()
        optimizer.step()
    torch.testing.assert_close(norm.shift * norm.shift_multiplier, plain.bias.detach())
    assert not hasattr(norm, "weight") or norm.weight is None  # no learned scale


def test_channels_last_and_bf16():
    torch.manual_seed(0)
    model = ClassifierModule(backbone="airbench", num_classes=10, channels_last=True).eval()
    images = torch.randn(4, 3, 32, 32)
    reference = model(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(images)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), reference, atol=0.05, rtol=0.05)


# ----------------------------------------------------------------------------- the callback
def _data(batch_size: int = 16) -> ImageClassificationDataModule:
    return ImageClassificationDataModule(
        SyntheticShapes(40, num_classes=4), image_size=32, batch_size=batch_size
    )


class WhiteningWatch(PatchWhitening):
    """Records the first layer's state after each of its hooks."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.states: list[tuple[int, bool, bool, bool]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        layer = pl_module.backbone[0]
        self.states.append(
            (
                trainer.current_epoch,
                bool(layer.whitened),
                layer.weight.requires_grad,
                layer.bias.requires_grad,
            )
        )
        if batch_idx == 0 and trainer.current_epoch == 0:
            self.first_batch = batch["image"].clone()
            self.first_weight = layer.weight.detach().clone()


def test_the_callback_whitens_from_the_first_batch_then_freezes():
    model = ClassifierModule(backbone="airbench", num_classes=4, log_images=0)
    watch = WhiteningWatch(bias_epochs=1)
    cpu_trainer(callbacks=[watch], max_epochs=2, num_sanity_val_steps=0, limit_train_batches=2).fit(
        model, _data()
    )
    reference = WhiteningConv(3)
    reference.whiten_from(watch.first_batch)
    torch.testing.assert_close(watch.first_weight, reference.weight)
    assert [s[1:] for s in watch.states if s[0] == 0] == [(True, False, True)] * 2  # bias trains
    assert [s[1:] for s in watch.states if s[0] == 1] == [(True, False, False)] * 2  # then is fixed
    torch.testing.assert_close(model.backbone[0].weight, reference.weight)  # frozen through training


def test_a_whitened_layer_is_kept():
    model = ClassifierModule(backbone="airbench", num_classes=4, log_images=0)
    model.backbone[0].whiten_from(_smooth_images(8))  # as restored from a checkpoint
    before = model.backbone[0].weight.detach().clone()
    trainer = cpu_trainer(
        callbacks=[PatchWhitening()], max_steps=1, num_sanity_val_steps=0, limit_val_batches=0
    )
    trainer.fit(model, _data())
    torch.testing.assert_close(model.backbone[0].weight, before)


def test_the_callback_needs_a_whitening_layer():
    with pytest.raises(InputError, match="no whitening layer"):
        cpu_trainer(callbacks=[PatchWhitening()]).fit(
            ClassifierModule(backbone="cifar_lenet", num_classes=4), _data()
        )
    with pytest.raises(InputError, match="bias_epochs"):
        PatchWhitening(bias_epochs=-1)
