"""Feature networks, Gram matrices, total variation, the feature (perceptual) and style losses, and
the pixel losses.

Everything runs with random weights (`pretrained=False`) on 32x32 images; the random-weights warning
is silenced here except where it is the subject. Nothing is downloaded: the one `pretrained=True`
test checks the offline error with torchvision's download patched to fail.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn

from vision_lightning.losses.feature import (
    FeatureLoss,
    FeatureNetwork,
    StyleLoss,
    gram_matrix,
    total_variation,
    vgg_layer_indices,
)
from vision_lightning.losses.pixel import CharbonnierLoss, build_pixel_loss
from vision_lightning.utils.errors import DownloadError, InputError

pytestmark = pytest.mark.filterwarnings("ignore:feature network .* has random weights:UserWarning")


def images(n: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def meta_vgg(name: str) -> nn.Module:
    with torch.device("meta"):
        return torchvision.models.get_model(name, weights=None)


# ----------------------------------------------------------------------------- layer names
def test_vgg_layer_indices_are_torchvisions():
    vgg16 = vgg_layer_indices(meta_vgg("vgg16").features)
    assert [vgg16[f"relu{b}_{c}"] for b, c in [(1, 2), (2, 2), (3, 3), (4, 3), (5, 3)]] == [3, 8, 15, 22, 29]
    assert (vgg16["conv1_1"], vgg16["relu1_1"], vgg16["pool1"], vgg16["pool5"]) == (0, 1, 4, 30)
    assert "relu5_4" not in vgg16
    # fast.ai's vgg16 of seed 004 is VGG16-BN: its block ends (relu{b}_last) are 5, 12, 22, 32, 42
    bn = vgg_layer_indices(meta_vgg("vgg16_bn").features)
    assert [bn[name] for name in ["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]] == [
        5,
        12,
        22,
        32,
        42,
    ]
    assert vgg_layer_indices(meta_vgg("vgg19").features)["relu5_4"] == 35


def test_feature_network_shapes_and_truncation():
    net = FeatureNetwork("vgg16_bn", ["relu1_2", "relu2_2", "relu3_3"])
    assert len(net.body) == 23  # seed 004: children(vgg16_bn)[:23]
    out = net(images())
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "relu1_2": (2, 64, 32, 32),
        "relu2_2": (2, 128, 16, 16),
        "relu3_3": (2, 256, 8, 8),
    }
    assert list(net(images(), layers=["relu2_2"])) == ["relu2_2"]
    vgg19 = FeatureNetwork("vgg19", ["relu5_4"])
    assert len(vgg19.body) == 36 and vgg19(images(1))["relu5_4"].shape == (1, 512, 2, 2)


def test_conv_outputs_are_not_overwritten_by_inplace_relu():
    out = FeatureNetwork("vgg16", ["conv1_1", "relu1_1"])(images())
    assert (out["conv1_1"] < 0).any()
    torch.testing.assert_close(out["relu1_1"], out["conv1_1"].clamp(min=0))


def test_unknown_layer_names_the_layer_and_lists_the_choices():
    with pytest.raises(InputError, match=r"'vgg16_bn' has no layer 'relu9_9'.*relu1_2"):
        FeatureNetwork("vgg16_bn", ["relu1_2", "relu9_9"])
    net = FeatureNetwork("vgg16", ["relu1_2"])
    with pytest.raises(InputError, match="relu2_2"):
        net(images(), layers=["relu2_2"])  # not built
    with pytest.raises(InputError, match="RGB"):
        net(torch.rand(2, 1, 8, 8))


def test_random_weights_warn():
    with pytest.warns(UserWarning, match="random weights.*not perceptual"):
        FeatureNetwork("vgg16", ["relu1_1"])


def test_feature_network_is_frozen_but_passes_gradients():
    net = FeatureNetwork("vgg16_bn", ["relu2_2"])
    assert list(net.parameters()) == [] and net.state_dict() == {}
    assert not any(b.requires_grad for b in net.buffers())
    x = images()
    net.eval()
    expected = net(x)["relu2_2"]
    net.train()  # frozen BatchNorm: train mode changes nothing
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert torch.equal(net(x)["relu2_2"], expected)
    x = images().requires_grad_()
    net(x)["relu2_2"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- other networks
def test_timm_network_by_name():
    net = FeatureNetwork("timm:resnet18", ["layer1", "act1"])
    out = net(images())
    assert list(out) == ["layer1", "act1"]  # the order asked for
    assert out["act1"].shape == (2, 64, 16, 16) and out["layer1"].shape == (2, 64, 8, 8)
    assert "layer2" not in dict(net.body.named_children())  # stops after the last stage asked for
    with pytest.raises(InputError, match="'layer9'.*layer4"):
        FeatureNetwork("timm:resnet18", ["layer9"])


def test_timm_weights_file(tmp_path):
    state = timm.create_model("resnet18").state_dict()
    torch.save(state, tmp_path / "resnet18.pth")
    net = FeatureNetwork("timm:resnet18", ["layer1"], weights=str(tmp_path / "resnet18.pth"))
    assert torch.equal(net.body.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    torch.save(timm.create_model("resnet34").state_dict(), tmp_path / "resnet34.pth")
    with pytest.raises(InputError, match="does not fit"):
        FeatureNetwork("timm:resnet18", ["layer1"], weights=str(tmp_path / "resnet34.pth"))


def test_torchvision_network_by_node_name():
    out = FeatureNetwork("torchvision:resnet18", ["layer1"])(images())
    assert out["layer1"].shape == (2, 64, 8, 8)


# ----------------------------------------------------------------------------- weights
def torchvision_vgg16_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's vgg16 state dict: its own keys and shapes, random `features`; the 120M-value
    classifier as stride-0 views of one zero, so the file is small and fast to write."""
    generator = torch.Generator().manual_seed(0)
    return {
        key: torch.randn(value.shape, generator=generator)
        if key.startswith("features")
        else torch.zeros(()).expand(value.shape)
        for key, value in meta_vgg("vgg16").state_dict().items()
    }


def test_weights_file_loads_into_truncated_vgg(tmp_path):
    state = torchvision_vgg16_state_dict()
    torch.save(state, tmp_path / "vgg16.pth")
    net = FeatureNetwork("vgg16", ["relu2_2"], weights=str(tmp_path / "vgg16.pth"))
    assert len(net.body) == 9
    assert torch.equal(net.body[0].weight, state["features.0.weight"])
    assert torch.equal(net.body[7].bias, state["features.7.bias"])
    with pytest.raises(InputError, match="does not fit"):
        FeatureNetwork("vgg16_bn", ["relu2_2"], weights=str(tmp_path / "vgg16.pth"))


def test_pretrained_offline_raises_download_error(monkeypatch):
    def offline(self, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(
        DownloadError, match=r"'vgg16_bn' \(OSError: no network\).*weights:.*pretrained: false"
    ):
        FeatureNetwork("vgg16_bn", pretrained=True)


# ----------------------------------------------------------------------------- Gram and TV
def test_gram_matrix_matches_einsum_and_is_per_sample():
    features = torch.randn(3, 5, 4, 6)
    gram = gram_matrix(features)
    torch.testing.assert_close(gram, torch.einsum("nchw,ndhw->ncd", features, features) / (5 * 4 * 6))
    torch.testing.assert_close(gram, gram.transpose(1, 2))
    changed = features.clone()
    changed[1] = torch.randn(5, 4, 6)
    torch.testing.assert_close(gram_matrix(changed)[[0, 2]], gram[[0, 2]])


def test_gram_matrix_is_independent_of_spatial_size():
    features = torch.randn(2, 4, 3, 5)
    torch.testing.assert_close(gram_matrix(features.repeat(1, 1, 2, 2)), gram_matrix(features))


def test_gram_matrix_is_float32_under_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gram_matrix(torch.randn(1, 4, 8, 8).bfloat16()).dtype == torch.float32


def test_total_variation():
    assert total_variation(torch.full((2, 3, 8, 8), 0.7)) == 0
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    checkerboard = ((rows + cols) % 2).float().expand(2, 3, 8, 8)
    assert total_variation(checkerboard) == pytest.approx(1.0)
    stripes = (cols[:4, :4] % 2).float().expand(1, 1, 4, 4)  # only horizontal neighbours differ
    assert total_variation(stripes) == pytest.approx(12 / 24)


# ----------------------------------------------------------------------------- FeatureLoss
def test_feature_loss_values_and_parts():
    loss = FeatureLoss(tv_weight=0.1)
    target = images()
    total, parts = loss(target, target)
    assert list(parts) == ["pixel", "feature_relu1_2", "feature_relu2_2", "feature_relu3_3", "tv"]
    assert all(value == 0 for name, value in parts.items() if name != "tv")
    prediction = images(seed=1).requires_grad_()
    total, parts = loss(prediction, target)
    assert total > 0 and all(value > 0 for value in parts.values())
    torch.testing.assert_close(total, sum(parts.values()))
    torch.testing.assert_close(parts["pixel"], 0.01 * (prediction - target).abs().mean())
    total.backward()
    assert prediction.grad is not None and prediction.grad.abs().sum() > 0
    assert list(FeatureLoss(pixel_weight=0)(prediction, target)[1]) == [
        "feature_relu1_2",
        "feature_relu2_2",
        "feature_relu3_3",
    ]
    with pytest.raises(InputError, match="same shape"):
        loss(prediction, target[:1])
    with pytest.raises(InputError, match="unknown pixel loss 'l3'"):
        FeatureLoss(criterion="l3")


class Parent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Conv2d(3, 3, 1)
        self.loss = FeatureLoss(layer_weights={"relu1_2": 1.0})


def test_feature_loss_stays_out_of_parameters_and_state_dict():
    parent = Parent()
    assert [name for name, _ in parent.named_parameters()] == ["net.weight", "net.bias"]
    assert list(parent.state_dict()) == ["net.weight", "net.bias"]
    parent.load_state_dict(Parent().state_dict(), strict=True)
    parent.train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in parent.loss.feature_network.modules())
    parent.to(torch.float64)
    assert parent.loss.feature_network.body[0].weight.dtype == torch.float64
    total, _ = parent.loss(parent.net(images().double()), images(seed=1).double())
    assert total.dtype == torch.float64


# ----------------------------------------------------------------------------- StyleLoss
def test_style_loss_set_style_once_then_any_batch_size():
    loss = StyleLoss()
    assert not loss.has_style
    with pytest.raises(RuntimeError, match="set_style"):
        loss(images(), images())
    loss.set_style(images(1, seed=5)[0])
    assert loss.has_style and loss.state_dict() == {}
    assert loss.style_grams["relu2_2"].shape == (1, 128, 128)
    stylised = images(3, seed=1).requires_grad_()
    total, parts = loss(stylised, images(3))
    assert list(parts) == [
        "content_relu4_3",
        "style_relu2_2",
        "style_relu3_3",
        "style_relu4_3",
        "style_relu5_3",
    ]
    torch.testing.assert_close(total, sum(parts.values()))
    total.backward()
    assert stylised.grad.abs().sum() > 0
    total, _ = loss(images(1, seed=2), images(1, seed=3))  # a short last batch
    assert total.ndim == 0 and torch.isfinite(total)
    with pytest.raises(InputError, match=r"\(2, 3, 32, 32\)"):
        loss.set_style(images(2))


def test_style_of_the_style_image_itself_is_zero():
    loss = StyleLoss(tv_weight=1.0)
    style = images(1, seed=5)
    loss.set_style(style)
    _, parts = loss(style, images(1, seed=6))
    _, other = loss(images(1, seed=7), images(1, seed=6))
    for layer in ["relu2_2", "relu3_3", "relu4_3", "relu5_3"]:
        assert parts[f"style_{layer}"] <= 1e-6 * other[f"style_{layer}"]
    assert parts["content_relu4_3"] > 0 and parts["tv"] > 0


def test_style_targets_move_with_to():
    loss = StyleLoss(content_layers={"relu2_2": 1.0}, style_layers={"relu1_2": 1.0})
    loss.set_style(images(1))
    loss.to(torch.float64)
    assert loss.style_grams["relu1_2"].dtype == torch.float64
    assert loss(images().double(), images(seed=1).double())[0].dtype == torch.float64


def test_losses_under_autocast_give_float32_parts():
    style = StyleLoss(content_layers={"relu2_2": 1.0}, style_layers={"relu1_2": 1.0, "relu2_2": 1.0})
    style.set_style(images(1))
    feature = FeatureLoss()
    prediction = images(seed=1).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        parts = {**style(prediction, images())[1], **feature(prediction, images())[1]}
    assert all(value.dtype == torch.float32 and torch.isfinite(value) for value in parts.values())
    sum(parts.values()).backward()
    assert torch.isfinite(prediction.grad).all()


# ----------------------------------------------------------------------------- pixel losses
def test_charbonnier():
    loss = CharbonnierLoss(eps=1e-3)
    x = torch.rand(2, 3, 8, 8)
    assert loss(x, x).item() == pytest.approx(1e-3)
    y = x + 5.0
    assert loss(x, y).item() == pytest.approx(nn.functional.l1_loss(x, y).item(), rel=1e-6)


def test_build_pixel_loss():
    assert isinstance(build_pixel_loss("l1"), nn.L1Loss)
    assert isinstance(build_pixel_loss("mse"), nn.MSELoss)
    assert isinstance(build_pixel_loss("charbonnier"), CharbonnierLoss)
    assert build_pixel_loss("charbonnier", eps=0.1).eps == 0.1
    with pytest.raises(InputError, match="l1, mse, charbonnier"):
        build_pixel_loss("huber")
