"""The backbone factory, the seeds' classic nets, the heads and the weight loader.

Parameter counts are the seeds' own (and torchvision's originals); nothing is downloaded: the one
`pretrained=True` test below checks the offline error with every download function patched to fail.
"""

from __future__ import annotations

import urllib.error

import pytest
import timm
import torch
import torchvision
from torch import nn

from vision_lightning.models.classic import CLASSIC_NETS
from vision_lightning.models.factory import available_backbones, create_backbone, resolve_backbone_name
from vision_lightning.models.heads import HeadOptions, build_head
from vision_lightning.tasks import ClassifierModule
from vision_lightning.utils.errors import DownloadError, InputError, MissingInputError
from vision_lightning.utils.weights import strip_prefixes


def count(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ----------------------------------------------------------------------------- parameter counts
CLASSIC_COUNTS = {
    "mnist_perceptron": 7_850,
    "mnist_mlp": 79_510,
    "mnist_conv1": 52_084,
    "mnist_conv2": 8_490,
    "cifar_lenet": 59_386,
    "lenet5": 62_006,
    "lenet5_bn": 63_226,
    "airbench": 1_971_650,  # models/airbench.py
}
NATIVE_INPUT = {name: (1, 28, 28) if name.startswith("mnist_") else (3, 32, 32) for name in CLASSIC_COUNTS}


def test_every_classic_net_is_counted():
    assert set(CLASSIC_COUNTS) == set(CLASSIC_NETS) == set(available_backbones()["classic"])


@pytest.mark.parametrize(("name", "expected"), CLASSIC_COUNTS.items())
def test_classic_parameter_counts(name, expected):
    model = ClassifierModule(backbone=name, num_classes=10)
    assert count(model) == expected
    assert count(model, trainable_only=True) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [("alexnet", 61_100_840), ("vgg16", 138_357_544), ("resnet18", 11_689_512), ("mobilenet_v2", 3_504_872)],
)
def test_torchvision_counts_equal_the_originals(name, expected):
    model = ClassifierModule(backbone=name, num_classes=1000)
    assert count(model) == expected
    assert isinstance(model.head, nn.Linear)
    assert model.head.out_features == 1000


def test_seed001_frozen_vgg16_without_its_classifier():
    model = ClassifierModule("vgg16", num_classes=2, cut="classifier", freeze_backbone=True)
    assert model.head.in_features == 25_088
    assert count(model) == 14_764_866
    assert count(model, trainable_only=True) == 50_178
    assert model.backbone_frozen


def test_seed001_frozen_mobilenet_v2():
    model = ClassifierModule("mobilenet_v2", num_classes=2, freeze_backbone=True)
    assert model.head.in_features == 1280
    assert count(model) == 2_226_434
    assert count(model, trainable_only=True) == 2_562
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}


# ----------------------------------------------------------------------------- classic nets
@pytest.mark.parametrize("name", CLASSIC_COUNTS)
def test_classic_forward_on_native_input(name):
    torch.manual_seed(0)
    model = ClassifierModule(backbone=name, num_classes=10).eval()
    with torch.no_grad():
        logits = model(torch.randn(5, *NATIVE_INPUT[name]))
    assert logits.shape == (5, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", CLASSIC_COUNTS)
def test_classic_wrong_input_size_names_backbone_and_size(name):
    model = ClassifierModule(backbone=name, num_classes=10).eval()
    c, h, w = NATIVE_INPUT[name]
    with pytest.raises(InputError) as info:
        model(torch.zeros(2, c, h + 4, w + 4))
    message = str(info.value)
    assert repr(name) in message
    assert f"{c}x{h}x{w}" in message
    assert f"{c}x{h + 4}x{w + 4}" in message
    assert f"image_size: {h}" in message


def test_mnist_net_with_wrong_channels_names_the_channels():
    model = ClassifierModule(backbone="mnist_conv2", num_classes=10)
    with pytest.raises(InputError, match=r"'mnist_conv2' takes 1x28x28 images but got 3x28x28.*channels: 1"):
        model(torch.zeros(2, 3, 28, 28))


def test_mnist_net_with_three_channels():
    backbone, num_features = create_backbone("mnist_perceptron", in_channels=3)
    assert num_features == 3 * 784
    assert backbone(torch.zeros(2, 3, 28, 28)).shape == (2, 3 * 784)
    model = ClassifierModule("mnist_conv1", num_classes=10, in_channels=3)
    assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
    assert count(model) == 52_084 + 2 * 9 * 25  # two more input planes of nine 5x5 filters


def test_classic_net_has_no_pretrained_weights():
    with pytest.raises(InputError, match="'lenet5' has no pretrained weights.*pretrained: false"):
        create_backbone("lenet5", pretrained=True)


# ----------------------------------------------------------------------------- factory: names
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("lenet5", ("classic", "lenet5")),
        ("classic:lenet5", ("classic", "lenet5")),
        ("resnet18", ("torchvision", "resnet18")),
        ("torchvision:resnet18", ("torchvision", "resnet18")),
        ("timm:resnet18", ("timm", "resnet18")),
        ("efficientnet_b0", ("torchvision", "efficientnet_b0")),  # torchvision has it: torchvision wins
        ("timm:efficientnet_b0", ("timm", "efficientnet_b0")),
        ("convnext_atto", ("timm", "convnext_atto")),  # timm only
    ],
)
def test_resolve_backbone_name(name, expected):
    assert resolve_backbone_name(name) == expected


def test_timm_and_torchvision_resnet18_are_different_implementations():
    tv, tv_features = create_backbone("resnet18")
    tm, tm_features = create_backbone("timm:resnet18")
    assert isinstance(tv, torchvision.models.ResNet)
    assert isinstance(tm, timm.models.ResNet)
    assert tv_features == tm_features == 512
    assert isinstance(tv.fc, nn.Identity)
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 64)
        assert tv.eval()(x).shape == tm.eval()(x).shape == (2, 512)


def test_timm_only_backbone_by_name():
    backbone, num_features = create_backbone("convnext_atto")
    assert type(backbone).__module__.startswith("timm.")
    assert num_features == 320
    with torch.no_grad():
        assert backbone.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 320)
    model = ClassifierModule("convnext_atto", num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)


def test_torchvision_grayscale_first_conv_sums_the_rgb_filters():
    torch.manual_seed(0)
    rgb, _ = create_backbone("resnet18")
    torch.manual_seed(0)
    gray, num_features = create_backbone("resnet18", in_channels=1)
    assert num_features == 512
    assert gray.conv1.in_channels == 1
    assert torch.allclose(gray.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(gray.layer1[0].conv1.weight, rgb.layer1[0].conv1.weight)  # the rest is untouched
    with torch.no_grad():
        assert gray.eval()(torch.randn(2, 1, 64, 64)).shape == (2, 512)


def test_torchvision_grayscale_nested_first_conv():
    backbone, num_features = create_backbone("mobilenet_v2", in_channels=1)
    assert backbone.features[0][0].in_channels == 1
    with torch.no_grad():
        assert backbone.eval()(torch.randn(2, 1, 64, 64)).shape == (2, num_features)


def test_timm_grayscale():
    backbone, num_features = create_backbone("convnext_atto", in_channels=1)
    assert backbone.stem[0].in_channels == 1
    with torch.no_grad():
        assert backbone.eval()(torch.randn(2, 1, 64, 64)).shape == (2, num_features)
    model = ClassifierModule("timm:resnet18", num_classes=3, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 3)
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 3, 64, 64))


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(InputError, match=r"unknown backbone 'resnet181'; did you mean .*resnet18") as info:
        create_backbone("resnet181")
    assert isinstance(info.value, ValueError)
    with pytest.raises(InputError, match="did you mean lenet5"):
        ClassifierModule(backbone="lenet55")


def test_unknown_backbone_without_close_names_and_unknown_prefix():
    with pytest.raises(InputError, match=r"unknown backbone 'qqqqzzzz'; see .*available_backbones"):
        create_backbone("qqqqzzzz")
    with pytest.raises(InputError, match="prefixes are 'timm:' and 'torchvision:'"):
        create_backbone("keras:resnet18")
    with pytest.raises(InputError, match="unknown backbone 'torchvision:convnext_atto'"):
        create_backbone("torchvision:convnext_atto")  # timm only


def test_invalid_cut():
    with pytest.raises(InputError, match="cut must be 'last' or 'classifier', got 'middle'"):
        create_backbone("resnet18", cut="middle")


def test_cut_last_and_classifier():
    last, last_features = create_backbone("alexnet", cut="last")
    assert last_features == 4096
    assert isinstance(last.classifier[-1], nn.Identity)
    assert sum(isinstance(m, nn.Linear) for m in last.classifier) == 2  # the 4096-wide layers stay
    whole, whole_features = create_backbone("alexnet", cut="classifier")
    assert whole_features == 256 * 6 * 6
    assert isinstance(whole.classifier, nn.Identity)
    with torch.no_grad():
        x = torch.randn(1, 3, 224, 224)
        assert last.eval()(x).shape == (1, 4096)
        assert whole.eval()(x).shape == (1, 9216)
    # a plain Linear classifier is the same either way
    assert create_backbone("resnet18", cut="classifier")[1] == 512


def test_cut_classifier_refused_where_features_are_unpooled():
    # ConvNeXt's classifier is LayerNorm2d-Flatten-Linear: removing all of it leaves a 4-D map.
    backbone, num_features = create_backbone("convnext_tiny", cut="last")
    assert num_features == 768
    with pytest.raises(InputError, match="cut='classifier' would leave unpooled features; use cut='last'"):
        create_backbone("convnext_tiny", cut="classifier")


# ----------------------------------------------------------------------------- factory: offline
def _no_network(*args, **kwargs):
    raise urllib.error.URLError("no network")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Every way torchvision and timm fetch weights fails as it does without internet."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", _no_network)
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", _no_network)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_url", _no_network)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_hf", _no_network)
    monkeypatch.setattr(timm.models._builder, "download_cached_file", _no_network)


@pytest.mark.parametrize("name", ["resnet18", "timm:resnet18"])
def test_pretrained_without_internet_says_what_to_do(offline, name):
    with pytest.raises(DownloadError) as info:
        create_backbone(name, pretrained=True)
    error = info.value
    assert isinstance(error, InputError) and isinstance(error, ConnectionError)
    message = str(error)
    assert f"backbone {name!r}" in message
    assert "pretrained: false" in message
    assert "weights: path/to/weights.pth" in message
    assert "no network" in message
    assert "\n" not in message


# ----------------------------------------------------------------------------- heads
def test_linear_head():
    head = build_head("linear", 512, 3)
    assert isinstance(head, nn.Linear)
    assert (head.in_features, head.out_features) == (512, 3)
    assert head(torch.randn(4, 512)).shape == (4, 3)


def test_mlp_head_is_seed000s():
    head = build_head({"kind": "mlp", "hidden": 64}, 512, 5)
    kinds = [type(m) for m in head]
    assert kinds == [nn.BatchNorm1d, nn.Dropout, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Dropout, nn.Linear]
    assert head[0].num_features == 512
    assert head[1].p == 0.25
    assert (head[2].in_features, head[2].out_features) == (512, 64)
    assert head[4].num_features == 64
    assert head[5].p == 0.5
    assert (head[6].in_features, head[6].out_features) == (64, 5)
    assert head.train()(torch.randn(4, 512)).shape == (4, 5)
    assert head.eval()(torch.randn(1, 512)).shape == (1, 5)
    assert build_head("mlp", 10, 2)[2].out_features == 2048  # the default width


def test_mlp_head_in_the_classifier():
    model = ClassifierModule(
        "lenet5", num_classes=4, head={"kind": "mlp", "hidden": 32, "dropout": [0.1, 0.2]}
    )
    assert model.head[0].num_features == 84
    assert (model.head[1].p, model.head[5].p) == (0.1, 0.2)
    assert model.head[-1].out_features == 4
    assert model.train()(torch.randn(3, 3, 32, 32)).shape == (3, 4)
    binary = ClassifierModule(
        "lenet5", num_classes=2, label_mode="binary", head=HeadOptions(kind="mlp", hidden=16)
    )
    assert binary.head[-1].out_features == 1


def test_unknown_head():
    with pytest.raises(ValueError, match="head must be linear or mlp, got 'conv'"):
        build_head("conv", 8, 2)


# ----------------------------------------------------------------------------- weights loader
def test_strip_prefixes():
    value = torch.zeros(1)
    cleaned = strip_prefixes(
        {"module._orig_mod.a.b": value, "_orig_mod.module.c": value, "d.module.e": value}
    )
    assert list(cleaned) == ["a.b", "c", "d.module.e"]


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_weights_with_wrapper_prefixes(tmp_path, prefix):
    torch.manual_seed(1)
    source, _ = create_backbone("resnet18")
    with torch.no_grad():
        source.bn1.running_mean.uniform_()  # buffers travel too
    path = tmp_path / "weights.pth"
    torch.save({prefix + k: v for k, v in source.state_dict().items()}, path)
    torch.manual_seed(2)
    fresh, _ = create_backbone("resnet18")
    assert not torch.equal(fresh.conv1.weight, source.conv1.weight)
    torch.manual_seed(2)
    loaded, _ = create_backbone("resnet18", weights=str(path))
    assert_same_state(loaded.state_dict(), source.state_dict())


def test_weights_of_a_plain_torchvision_file_ignore_its_classifier(tmp_path):
    original = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(original.state_dict(), path)
    model = ClassifierModule("resnet18", num_classes=3, weights=str(path))
    expected = {k: v for k, v in original.state_dict().items() if not k.startswith("fc.")}
    assert_same_state(model.backbone.state_dict(), expected)


def test_weights_from_a_lightning_style_checkpoint(tmp_path):
    torch.manual_seed(3)
    trained = ClassifierModule("lenet5_bn", num_classes=4)
    with torch.no_grad():
        trained.backbone[3].running_var.uniform_(0.5, 2)
    path = tmp_path / "model.ckpt"
    torch.save({"epoch": 3, "state_dict": trained.state_dict()}, path)
    assert any(k.startswith("head.") for k in trained.state_dict())
    backbone, _ = create_backbone("lenet5_bn", weights=str(path))
    assert_same_state(backbone.state_dict(), trained.backbone.state_dict())
    # a new head on the trained backbone: another number of classes is fine
    model = ClassifierModule("lenet5_bn", num_classes=7, weights=str(path))
    assert_same_state(model.backbone.state_dict(), trained.backbone.state_dict())


def test_weights_of_another_architecture(tmp_path):
    source, _ = create_backbone("lenet5")
    path = tmp_path / "lenet5.pth"
    torch.save(source.state_dict(), path)
    with pytest.raises(InputError, match="does not fit this model") as info:
        create_backbone("cifar_lenet", weights=str(path))
    message = str(info.value)
    assert str(path) in message
    assert "shape mismatch" in message and "missing key" in message and "unexpected key" in message
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(InputError, match="does not fit this model"):
        create_backbone("mobilenet_v2", weights=str(path))


def test_missing_weights_file(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(MissingInputError, match="does not exist") as info:
        create_backbone("lenet5", weights=str(path))
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, InputError)
    assert str(path) in str(info.value)


def test_weights_file_that_is_not_a_state_dict(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights")
    with pytest.raises(InputError, match=f"weights file {text} is not a complete PyTorch checkpoint"):
        create_backbone("lenet5", weights=str(text))
    numbers = tmp_path / "numbers.pth"
    torch.save({"epoch": 3, "lr": 0.1}, numbers)
    with pytest.raises(InputError, match="does not hold a state dict"):
        create_backbone("lenet5", weights=str(numbers))
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(InputError, match="does not hold a state dict"):
        create_backbone("lenet5", weights=str(tensor))


def test_full_torchvision_file_loads_into_a_backbone_that_keeps_hidden_classifier_layers(tmp_path):
    """cut='last' keeps AlexNet's hidden classifier layers: a torchvision file fills them, and only
    the final Linear, which the backbone no longer has, is ignored."""
    original = torchvision.models.alexnet()
    path = tmp_path / "alexnet.pth"
    torch.save(original.state_dict(), path)
    backbone, features = create_backbone("alexnet", weights=str(path))
    assert features == 4096
    loaded = backbone.state_dict()
    assert "classifier.6.weight" not in loaded
    for key in ("features.0.weight", "classifier.1.weight", "classifier.4.bias"):
        assert torch.equal(loaded[key], original.state_dict()[key]), key
