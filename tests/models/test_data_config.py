"""A backbone's own preprocessing: the mean, std and input size its pretrained weights expect.

`backbone_data_config` and `segmentation_data_config` read tables inside timm and this project: every
test here runs with sockets closed, model building and hub downloads patched to fail.
"""

from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
import segmentation_models_pytorch as smp
import timm

from vision_lightning.data.base import VisionDataModule
from vision_lightning.models import backbone_data_config, segmentation_data_config
from vision_lightning.models.classic import CLASSIC_NETS
from vision_lightning.utils.errors import InputError

IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
HALF = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}


def _refuse(*args, **kwargs):
    raise AssertionError("a data config must not use the network or build a model")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _refuse)
    monkeypatch.setattr(socket, "create_connection", _refuse)
    monkeypatch.setattr(timm, "create_model", _refuse)
    monkeypatch.setattr(smp.encoders, "hf_hub_download", _refuse)


def statistics(config: dict) -> dict:
    return {key: pytest.approx(config[key]) for key in ("mean", "std")}


@pytest.mark.parametrize("name", ["vit_base_patch16_224", "timm:vit_base_patch16_224.augreg2_in21k_ft_in1k"])
def test_vit_says_half(name):
    config = backbone_data_config(name)
    assert statistics(config) == HALF
    assert config["input_size"] == [3, 224, 224]
    assert config["fixed_input_size"] is True  # position embeddings for 14x14 patches


def test_timm_inception_gives_its_input_size():
    config = backbone_data_config("timm:inception_v3")
    assert statistics(config) == HALF
    assert config["input_size"] == [3, 299, 299] and config["fixed_input_size"] is False


@pytest.mark.parametrize("name", ["timm:resnet18", "timm:convnext_tiny", "resnet50d", "convnext_atto"])
def test_timm_imagenet_models_say_imagenet(name):
    config = backbone_data_config(name)
    assert statistics(config) == IMAGENET
    assert config["input_size"] == [3, 224, 224] and config["fixed_input_size"] is False


def test_clip_weights_have_their_own_statistics():
    config = backbone_data_config("timm:vit_base_patch16_clip_224.openai")
    assert config["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert config["std"] == pytest.approx([0.26862954, 0.26130258, 0.27577711])


def test_config_is_plain_data():
    """It goes into checkpoints (weights_only loading) and YAML: lists of floats and ints only."""
    config = backbone_data_config("vit_base_patch16_224")
    assert set(config) == {"mean", "std", "input_size", "fixed_input_size"}
    assert all(type(v) is float for v in config["mean"] + config["std"])
    assert all(type(v) is int for v in config["input_size"])


@pytest.mark.parametrize("name", ["resnet18", "torchvision:resnet18", "vit_b_16", "vgg16", *CLASSIC_NETS])
def test_torchvision_and_classic_nets_mean_imagenet(name):
    assert backbone_data_config(name) is None


def test_hub_names_are_not_looked_up():
    assert backbone_data_config("timm:hf-hub:someone/some_model") is None


def test_unknown_backbone_is_the_factory_error():
    with pytest.raises(InputError, match="unknown backbone"):
        backbone_data_config("resnet_eighteen")


# ----------------------------------------------------------------------------- segmentation encoders
@pytest.mark.parametrize("encoder", [None, "resnet34", "efficientnet-b0", "mit_b0", "timm-efficientnet-b0"])
def test_smp_imagenet_encoders_mean_imagenet(encoder):
    assert segmentation_data_config(encoder) is None


@pytest.mark.parametrize("arch", ["classic_unet", "paper_unet"])
def test_classic_unets_mean_the_default(arch):
    assert segmentation_data_config(None, arch=arch) is None


@pytest.mark.parametrize(
    ("encoder", "timm_name"),
    [
        ("inceptionv4", "inception_v4"),
        ("inceptionresnetv2", "inception_resnet_v2"),
        ("xception", "legacy_xception"),
        ("dpn68", "dpn68"),
        ("dpn131", "dpn131"),
        ("timm-tf_efficientnet_lite0", "tf_efficientnet_lite0"),
    ],
)
def test_smp_encoders_with_other_statistics_agree_with_timm(encoder, timm_name):
    """The project's table of smp encoders matches timm's config of the same pretrained weights."""
    config = segmentation_data_config(encoder)
    assert set(config) == {"mean", "std"}
    assert statistics(config) == {key: backbone_data_config(f"timm:{timm_name}")[key] for key in config}
    assert statistics(config) != IMAGENET


def test_smp_timm_universal_encoder_reads_timm():
    assert statistics(segmentation_data_config("tu-vit_small_patch16_224")) == HALF
    assert segmentation_data_config("tu-resnet18", arch="FPN")["input_size"] == [3, 224, 224]


def test_unknown_encoder_is_the_factory_error():
    with pytest.raises(InputError, match="unknown smp encoder"):
        segmentation_data_config("resnet_thirty_four")


# ----------------------------------------------------------------------------- the data module's side
def test_data_module_without_mean_uses_the_backbones():
    """The contract with data/base.py: a task's `data_config` decides when mean/std are not given."""
    data = VisionDataModule()
    task = SimpleNamespace(data_config=backbone_data_config("vit_base_patch16_224"))
    data.trainer = SimpleNamespace(lightning_module=task)
    assert data.mean == pytest.approx((0.5, 0.5, 0.5)) and data.std == pytest.approx((0.5, 0.5, 0.5))
    task.data_config = backbone_data_config("resnet18")  # torchvision: None, so ImageNet's
    assert data.mean == pytest.approx(tuple(IMAGENET["mean"]))
    given = VisionDataModule(mean=[0.0], std=[1.0])
    given.trainer = data.trainer
    task.data_config = backbone_data_config("vit_base_patch16_224")
    assert given.mean == (0.0,) and given.std == (1.0,)  # given values win
