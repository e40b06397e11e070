"""`compile` and `channels_last`, the two speed switches every task has, and checkpoints that move
between compiled and eager networks."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from tests.conftest import cpu_trainer
from vision_lightning import ClassifierModule, ImageClassificationDataModule, SegmentationModule
from vision_lightning.data.classification_sources import SyntheticShapes
from vision_lightning.tasks.acceleration import CompileOptions, compile_options, to_channels_last
from vision_lightning.tasks.features import FeatureExtractModule
from vision_lightning.utils.errors import InputError
from vision_lightning.utils.weights import load_weights, match_keys, plain_key


def _data(samples: int = 32) -> ImageClassificationDataModule:
    return ImageClassificationDataModule(SyntheticShapes(samples, num_classes=3), image_size=32, batch_size=8)


def _is_channels_last(module: nn.Module) -> bool:
    weights = [p for p in module.parameters() if p.ndim == 4]
    return bool(weights) and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)


class _RecordInputs(nn.Module):
    """Wraps a backbone and records the memory order of the images it receives."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.num_features, self.seen = inner, 84, []

    def forward(self, images):
        self.seen.append(images.is_contiguous(memory_format=torch.channels_last))
        return self.inner(images)


def test_channels_last_converts_the_network_and_each_batch(tmp_path):
    reference = ClassifierModule(backbone="lenet5_bn", num_classes=3, in_channels=3)
    backbone = _RecordInputs(reference.backbone)
    model = ClassifierModule(backbone=backbone, num_classes=3, channels_last=True)
    assert _is_channels_last(model.backbone)
    cpu_trainer(limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0).fit(model, _data())
    assert backbone.seen and all(backbone.seen)
    backbone.seen.clear()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    assert len(model.predict_images(tmp_path)) == 1  # the Python predict path too
    assert backbone.seen == [True]
    assert to_channels_last({"image": torch.zeros(2, 3, 4, 4), "mask": torch.zeros(2, 4, 4)})[
        "image"
    ].is_contiguous(memory_format=torch.channels_last)


def test_channels_last_gives_the_eager_outputs():
    torch.manual_seed(0)
    eager = SegmentationModule(arch="unet", encoder="resnet18", num_classes=3, mode="multiclass").eval()
    fast = SegmentationModule(
        arch="unet", encoder="resnet18", num_classes=3, mode="multiclass", channels_last=True
    )
    fast.load_state_dict(eager.state_dict())
    assert _is_channels_last(fast.model)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fast.eval()(to_channels_last(images)), eager(images), atol=1e-4, rtol=1e-4)


def test_compiled_training_and_checkpoints_move_between_compiled_and_eager(tmp_path):
    torch.manual_seed(0)
    model = ClassifierModule(backbone="lenet5_bn", num_classes=3, compile=True)
    assert model.compile_options == CompileOptions()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = cpu_trainer(limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, _data())
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # it trained
    # the compiled network keeps its eager key names: nothing to strip, nothing to add
    assert set(before) == set(model.state_dict())
    path = tmp_path / "compiled.ckpt"
    trainer.save_checkpoint(path)
    eager = ClassifierModule.load_from_checkpoint(path, compile=False).eval()
    assert eager.compile_options is None
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(eager(images), model.eval()(images), atol=1e-4, rtol=1e-4)
    # and back: an eager checkpoint into a compiled task
    again = ClassifierModule.load_from_checkpoint(path)
    assert again.compile_options == CompileOptions()
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(images), eager(images), atol=1e-4, rtol=1e-4)


def test_fit_of_a_torch_compiled_task_compiles_its_network_instead():
    """Lightning would compile the whole training step, torchmetrics' update included, and fail."""
    model = ClassifierModule(backbone="lenet5_bn", num_classes=3, compile={"backend": "eager"})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="its network is compiled instead"):
        cpu_trainer(limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0).fit(
            torch.compile(model), _data(16)
        )
    assert model._compiler_ctx is None and "training_step" not in model.__dict__
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_orig_mod_keys_of_a_network_compiled_elsewhere_are_matched(tmp_path):
    """`torch.compile(backbone)` in a user's own code nests `_orig_mod.` in the keys (Lightning
    #17415); the weight loader matches them to the eager names and the other way round."""
    eager = ClassifierModule(backbone="lenet5_bn", num_classes=3)
    wrapped = ClassifierModule(backbone="lenet5_bn", num_classes=3)
    wrapped.backbone = torch.compile(wrapped.backbone)
    assert any("backbone._orig_mod." in key for key in wrapped.state_dict())
    assert plain_key("module.backbone._orig_mod.0.weight") == "backbone.0.weight"
    # compiled keys into the eager model, eager keys into the compiled one
    eager.load_state_dict(match_keys(eager, wrapped.state_dict()))
    wrapped.load_state_dict(match_keys(wrapped, eager.state_dict()))
    path = tmp_path / "compiled_state.pt"
    torch.save(wrapped.state_dict(), path)
    load_weights(eager, path)  # the one loader reads such a file into an eager model
    cpu_trainer(limit_train_batches=1, limit_val_batches=0).fit(eager, _data(16))
    ckpt = tmp_path / "eager.ckpt"
    eager.trainer.save_checkpoint(ckpt)
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["state_dict"] = {
        k.replace("backbone.", "backbone._orig_mod."): v for k, v in checkpoint["state_dict"].items()
    }
    torch.save(checkpoint, ckpt)
    reloaded = ClassifierModule.load_from_checkpoint(ckpt)
    torch.testing.assert_close(reloaded.state_dict(), eager.state_dict())


def test_feature_extraction_takes_both_switches():
    module = FeatureExtractModule(backbone="lenet5_bn", in_channels=3, channels_last=True)
    assert _is_channels_last(module.backbone)
    eager = FeatureExtractModule(backbone="lenet5_bn", in_channels=3)
    eager.load_state_dict(module.state_dict())
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(module(images)["output"], eager(images)["output"], atol=1e-5, rtol=1e-5)


def test_bad_switch_values_are_named():
    assert compile_options(False) is None and compile_options({"mode": "max-autotune"}).mode == "max-autotune"
    with pytest.raises(InputError, match="compile: .*mode, dynamic, fullgraph, backend"):
        compile_options({"speed": "high"})
    with pytest.raises(InputError, match="channels_last must be true or false"):
        ClassifierModule(backbone="lenet5_bn", channels_last="yes")
