"""The API a user touches from their own Lightning project (issue 11): a subclass with its own
argument and loss, a data module of their own with tuple batches, injected optimizers, prediction
from Python with the preprocessing saved in the checkpoint, TensorBoard that opens on what matters."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import cpu_trainer
from vision_lightning import (
    BackboneFreezeUnfreeze,
    ClassifierModule,
    SegmentationModule,
    StyleTransferModule,
    SuperResModule,
    WarmupCosineLR,
    parameter_groups,
)
from vision_lightning.utils.errors import InputError


class TupleData(pl.LightningDataModule):
    """A user's own data module: `(image, label)` tuples, no paths, no preprocessing()."""

    def __init__(self, count: int = 32, size: int = 32, classes: int = 3, masks: bool = False) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(count, 3, size, size, generator=generator)
        labels = torch.arange(count) % classes
        self.images[:, 0] += (
            labels.view(-1, 1, 1, 1).float()[:, 0] * 0.5
        )  # learnable: class in the red channel
        if masks:
            self.targets = (self.images[:, 0] > self.images[:, 0].mean()).long()
        else:
            self.targets = labels

    def _loader(self, shuffle: bool = False) -> DataLoader:
        return DataLoader(TensorDataset(self.images, self.targets), batch_size=8, shuffle=shuffle)

    def train_dataloader(self):
        return self._loader(True)

    def val_dataloader(self):
        return self._loader()

    def predict_dataloader(self):
        return DataLoader(TensorDataset(self.images), batch_size=8)


class FocalClassifier(ClassifierModule):
    """What the README shows: one new argument, a custom loss that reads it."""

    def __init__(self, gamma: float = 2.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.gamma = gamma
        self.save_hyperparameters()

    def configure_losses(self) -> None:
        gamma = self.gamma  # set after super().__init__(): the hooks run once __init__ has returned

        def focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            log_p = logits.log_softmax(dim=1).gather(1, target.view(-1, 1)).squeeze(1)
            return (-((1 - log_p.exp()) ** gamma) * log_p).mean()

        self.loss_fn = focal


def test_subclass_with_its_own_argument_and_loss_trains_and_reloads(tmp_path):
    model = FocalClassifier(
        gamma=3.0,
        backbone="lenet5",
        num_classes=3,
        in_channels=3,
        optimizer=functools.partial(torch.optim.SGD, lr=0.05),
    )
    assert model.hparams.gamma == 3.0 and model.hparams.num_classes == 3
    trainer = cpu_trainer(max_epochs=1, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=TupleData())
    trainer.save_checkpoint(tmp_path / "focal.ckpt")
    loaded = FocalClassifier.load_from_checkpoint(tmp_path / "focal.ckpt")
    assert loaded.gamma == 3.0 and loaded.hparams.optimizer["class_path"].endswith("SGD")
    assert loaded.configure_optimizers().param_groups[0]["lr"] == pytest.approx(0.05)
    x = torch.rand(2, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(loaded(x), model(x))


def test_a_subclass_forwarding_only_some_arguments_fits():
    class Small(ClassifierModule):
        def __init__(self, lr: float = 0.01) -> None:
            super().__init__(
                backbone="lenet5",
                num_classes=3,
                in_channels=3,
                optimizer=functools.partial(torch.optim.Adam, lr=lr),
            )
            self.save_hyperparameters()

    model = Small(lr=0.02)
    cpu_trainer(max_epochs=1).fit(model, datamodule=TupleData())
    assert model.lr == pytest.approx(0.02)


def test_signature_of_a_task_class_shows_its_arguments():
    parameters = inspect.signature(ClassifierModule).parameters
    assert "backbone" in parameters and "optimizer" in parameters and "self" not in parameters
    for task in (ClassifierModule, SegmentationModule, SuperResModule, StyleTransferModule):
        named = [p for p in inspect.signature(task).parameters.values() if p.kind != p.VAR_KEYWORD]
        assert len(named) <= 17, task.__name__  # `**kwargs` carries BaseTask's compile / channels_last


def test_tuple_batches_train_validate_and_predict_without_paths():
    model = ClassifierModule("lenet5", num_classes=3, in_channels=3)
    trainer = cpu_trainer(max_epochs=2)
    trainer.fit(model, datamodule=TupleData())
    assert "val/acc" in trainer.callback_metrics and "val/loss" in trainer.callback_metrics
    outputs = trainer.predict(model, datamodule=TupleData())
    names = [name for batch in outputs for name in batch["path"]]
    assert names[:2] == ["image_000000", "image_000001"] and len(set(names)) == 32


def test_segmentation_tuple_batches_and_masks_at_input_size_without_size():
    model = SegmentationModule("classic_unet", num_classes=2, in_channels=3, arch_args={"base_channels": 4})
    data = TupleData(count=16, size=32, masks=True)
    trainer = cpu_trainer(max_epochs=1)
    trainer.fit(model, datamodule=data)
    outputs = trainer.predict(model, datamodule=data)
    assert outputs[0]["masks"][0].shape == (32, 32)
    assert outputs[0]["path"][0] == "image_000000"


def test_optimizer_groups_no_weight_decay_on_norms_and_biases():
    model = ClassifierModule(
        "lenet5_bn", num_classes=3, optimizer=functools.partial(torch.optim.AdamW, lr=0.01, weight_decay=0.1)
    )
    optimizer = model.configure_optimizers()
    by_name = {group["name"]: group for group in optimizer.param_groups}
    assert by_name["backbone_no_decay"]["weight_decay"] == 0.0 and by_name["backbone"]["weight_decay"] == 0.1
    assert all(p.ndim <= 1 for p in by_name["backbone_no_decay"]["params"])
    assert all(p.ndim > 1 for p in by_name["backbone"]["params"])
    assert isinstance(optimizer, torch.optim.AdamW)


def test_discriminative_rates_and_warmup_cosine_from_the_trainer():
    model = ClassifierModule(
        "lenet5", num_classes=3, in_channels=3,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        lr_scheduler=functools.partial(WarmupCosineLR, warmup_epochs=1),
    )  # fmt: skip
    lrs = []

    class Record(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append({g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups})

    trainer = cpu_trainer(
        max_epochs=2,
        callbacks=[BackboneFreezeUnfreeze(unfreeze_at_epoch=0, backbone_lr_factor=0.1), Record()],
    )
    trainer.fit(model, datamodule=TupleData())
    assert lrs[0]["backbone"] == pytest.approx(lrs[0]["head"] * 0.1)
    assert lrs[3]["head"] == pytest.approx(0.1)  # warm-up over epoch 0's 4 steps ends at the peak
    assert lrs[-1]["head"] < 0.1 * 0.5  # cosine decay in epoch 1


class OwnModule(pl.LightningModule):
    """Not a vision_lightning task: a backbone, a head and its own configure_optimizers."""

    def __init__(self, honour_factors: bool) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head = nn.Linear(4, 3)
        self.honour_factors = honour_factors

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.head(self.backbone(x)), y)

    def configure_optimizers(self):
        if self.honour_factors:
            groups = parameter_groups(self, getattr(self, "backbone_lr_factors", (1.0,)), lr=0.1)
            return torch.optim.SGD(groups, lr=0.1)
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_freeze_unfreeze_works_on_any_module_with_a_backbone():
    module = OwnModule(honour_factors=True)
    callback = BackboneFreezeUnfreeze(unfreeze_at_epoch=1, backbone_lr_factor=0.1)
    trainer = cpu_trainer(max_epochs=2, callbacks=[callback], limit_val_batches=0)
    before = [p.detach().clone() for p in module.backbone.parameters()]
    trainer.fit(module, datamodule=TupleData())
    assert all(p.requires_grad for p in module.backbone.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, module.backbone.parameters()))


def test_freeze_unfreeze_refuses_an_optimizer_that_ignores_its_rates():
    callback = BackboneFreezeUnfreeze(unfreeze_at_epoch=1, backbone_lr_factor=0.1)
    trainer = cpu_trainer(max_epochs=2, callbacks=[callback], limit_val_batches=0)
    with pytest.raises(
        InputError, match="backbone_lr_factor 0.1 means the backbone of OwnModule trains at 0.01"
    ):
        trainer.fit(OwnModule(honour_factors=False), datamodule=TupleData())


def test_freeze_unfreeze_refuses_a_module_without_a_backbone():
    class NoBackbone(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(2, 2)

        def training_step(self, batch, batch_idx):
            return self.layer(torch.zeros(1, 2)).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = cpu_trainer(callbacks=[BackboneFreezeUnfreeze()])
    with pytest.raises(InputError, match="needs a LightningModule with a `backbone` module"):
        trainer.fit(NoBackbone(), datamodule=TupleData())


def _images(folder: Path, count: int = 3, size: int = 40) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"photo{i}.png"
        Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_predict_images_from_a_checkpoint_uses_the_saved_preprocessing(tmp_path):
    from vision_lightning import ImageClassificationDataModule

    data = ImageClassificationDataModule(
        image_size=32, batch_size=8, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]
    )
    model = ClassifierModule(
        "lenet5", num_classes=data.num_classes, class_names=data.class_names, in_channels=3
    )
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    loaded = ClassifierModule.load_from_checkpoint(tmp_path / "model.ckpt")
    assert loaded.preprocessing["image_size"] == 32 and loaded.preprocessing["mean"] == [0.5, 0.5, 0.5]
    paths = _images(tmp_path / "photos")
    results = loaded.predict_images(tmp_path / "photos")
    assert [r["path"] for r in results] == [str(p) for p in paths]
    assert all(r["prediction"] in data.class_names for r in results)
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-5 for r in results)
    # the same numbers as predicting the prepared tensors directly
    from vision_lightning.utils.images import read_image
    from vision_lightning.utils.transforms import eval_transform

    tensor = eval_transform(loaded.preprocessing)(image=read_image(paths[0]))["image"][None]
    with torch.no_grad():
        expected = loaded.probabilities(loaded(tensor))[0]
    assert results[0]["probs"][data.class_names[0]] == pytest.approx(float(expected[0]), abs=1e-5)


def test_predict_images_of_segmentation_gives_masks_at_the_original_size(tmp_path):
    model = SegmentationModule("classic_unet", num_classes=2, in_channels=3, arch_args={"base_channels": 4})
    model.preprocessing = {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    _images(tmp_path / "photos", count=2, size=40)
    results = model.predict_images(tmp_path / "photos")
    assert results[0]["mask"].shape == (40, 48)


def test_predict_images_of_superres_and_style(tmp_path):
    paths = _images(tmp_path / "photos", count=1, size=16)
    sr = SuperResModule("espcn", scale=2)
    assert sr.predict_images(paths)[0]["image"].shape == (32, 48, 3)
    style = StyleTransferModule(arch_args={"channels": 4, "blocks": 1})
    assert style.predict_images(paths)[0]["image"].shape == (16, 24, 3)


def test_predict_images_names_missing_files(tmp_path):
    model = ClassifierModule("lenet5", num_classes=3, in_channels=3)
    with pytest.raises(InputError, match="no such image file"):
        model.predict_images([tmp_path / "nope.png"])


def test_load_from_checkpoint_insists_on_weights_only(tmp_path):
    model = ClassifierModule("lenet5", num_classes=3, in_channels=3)
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(model, datamodule=TupleData())
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    with pytest.raises(InputError, match="weights_only=True"):
        ClassifierModule.load_from_checkpoint(tmp_path / "m.ckpt", weights_only=False)


def test_a_vit_gets_its_own_mean_and_std_and_size_check():
    from vision_lightning import ImageClassificationDataModule

    model = ClassifierModule("timm:vit_tiny_patch16_224", num_classes=4)
    data = ImageClassificationDataModule(image_size=32, batch_size=4)
    trainer = cpu_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    with pytest.raises(InputError, match="takes 224x224 images only .* set image_size: 224"):
        trainer.fit(model, datamodule=data)
    assert data.mean == (0.5, 0.5, 0.5) and data.std == (0.5, 0.5, 0.5)  # the ViT's, not ImageNet's
    assert model.preprocessing["mean"] == [0.5, 0.5, 0.5]
