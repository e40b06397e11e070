"""SuperResModule: training, metrics against bicubic, scale growth, tiled predict, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from tests.conftest import cpu_trainer, fit_then_predict, optimizer
from vision_lightning.callbacks.prediction_writer import PredictionWriter
from vision_lightning.data.superres import SuperResDataModule
from vision_lightning.data.superres_sources import SyntheticTextureImages
from vision_lightning.data.textures import SyntheticTextures
from vision_lightning.metrics.superres import SuperResScores, image_scores, rgb_to_y
from vision_lightning.models.superres import create_superres_model
from vision_lightning.models.tiling import tiled_forward
from vision_lightning.tasks.superres import SuperResModule
from vision_lightning.utils.errors import DownloadError, InputError
from vision_lightning.utils.resize import bicubic_resize

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs/quickstart/superres.yaml"


def small_data(scale: int = 2, **kwargs) -> SuperResDataModule:
    args = {"source": SyntheticTextureImages(samples=16, size=48), "image_size": 24, "batch_size": 8}
    return SuperResDataModule(scale=scale, **{**args, **kwargs})


# ---------------------------------------------------------------- metrics
def test_psnr_follows_the_mse_and_y_uses_bt601():
    target = torch.full((1, 3, 16, 16), 0.5)
    prediction = target.clone()
    prediction[..., 2:-2, 2:-2] += 10 / 255  # inside the crop: every pixel off by 10 levels
    scores = image_scores(prediction, target, border=2)
    assert scores["psnr_rgb"].item() == pytest.approx(20 * math.log10(255 / 10), abs=1e-3)
    assert rgb_to_y(torch.ones(1, 3, 1, 1)).item() == pytest.approx(235 / 255)
    assert rgb_to_y(torch.zeros(1, 3, 1, 1)).item() == pytest.approx(16 / 255)


def test_border_crop_hides_the_edges():
    target = torch.rand(1, 3, 20, 20)
    prediction = target.clone()
    prediction[..., :3, :] = 1 - prediction[..., :3, :]  # errors only in the top 3 rows
    assert image_scores(prediction, target, border=3)["psnr_y"].item() > 90
    assert image_scores(prediction, target, border=2)["psnr_y"].item() < 40


def test_scores_name_their_convention_and_compare_with_bicubic():
    metric = SuperResScores(scale=4)
    hr = torch.rand(2, 3, 32, 32)
    metric.update(hr, hr, bicubic=hr * 0.8)
    values = metric.compute()
    assert {"psnr_y_crop4", "ssim_y_crop4", "psnr_rgb_crop4", "ssim_rgb_crop4"} <= set(values)
    assert values["psnr_y_crop4_over_bicubic"] == pytest.approx(
        values["psnr_y_crop4"] - values["bicubic_psnr_y_crop4"]
    )
    assert values["ssim_rgb_crop4"] == pytest.approx(1.0, abs=1e-4)


def test_scores_average_per_image():
    metric = SuperResScores(scale=2)
    hr = torch.rand(2, 3, 24, 24)
    noisy = hr + torch.stack([0.01 * torch.ones(3, 24, 24), 0.05 * torch.ones(3, 24, 24)])
    metric.update(noisy, hr)
    per_image = image_scores(noisy, hr, 2)["psnr_y"]
    assert metric.compute()["psnr_y_crop2"].item() == pytest.approx(per_image.mean().item(), rel=1e-5)


# ---------------------------------------------------------------- training
def test_training_beats_its_start_and_logs_bicubic(tmp_path):
    pl_seed = 0
    torch.manual_seed(pl_seed)
    model = SuperResModule(arch="espcn", scale=2, optimizer=optimizer(lr=3e-3))
    data = small_data(2)
    trainer = cpu_trainer(max_epochs=6, default_root_dir=tmp_path)
    before = trainer.validate(model, data, verbose=False)[0]
    trainer.fit(model, data)
    after = trainer.validate(model, data, verbose=False)[0]
    assert after["val/psnr_y_crop2"] > before["val/psnr_y_crop2"] + 1.0
    assert "val/bicubic_psnr_y_crop2" in after and "val/ssim_rgb_crop2" in after
    assert after["val/bicubic_psnr_y_crop2"] == pytest.approx(before["val/bicubic_psnr_y_crop2"])


def test_validation_uses_the_same_bicubic_as_the_data():
    data = small_data(2)
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    metric = SuperResScores(scale=2)
    bicubic = bicubic_resize(batch["lr"], batch["hr"].shape[-2:])
    metric.update(bicubic, batch["hr"], bicubic)
    values = metric.compute()
    assert values["psnr_y_crop2_over_bicubic"].item() == pytest.approx(0.0, abs=1e-6)


def test_feature_loss_logs_its_terms_and_keeps_vgg_out_of_the_optimizer(tmp_path):
    model = SuperResModule(arch="espcn", scale=2, loss="feature")
    own = {id(p) for p in model.model.parameters()}
    trainer = cpu_trainer(max_epochs=1, default_root_dir=tmp_path, limit_train_batches=2, limit_val_batches=1)
    with pytest.warns(UserWarning, match="random"):
        trainer.fit(model, small_data(2))
    optimizer = trainer.optimizers[0]
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimized == own
    logged = trainer.callback_metrics
    assert {"train/loss_pixel", "train/loss_feature_relu1_2", "train/loss_feature_relu3_3"} <= set(logged)
    assert not any(key.startswith("loss_fn.") for key in model.state_dict())


def test_scale_mismatch_between_data_and_model_is_named(tmp_path):
    model = SuperResModule(arch="espcn", scale=4)
    with pytest.raises(InputError, match="scale"):
        cpu_trainer(default_root_dir=tmp_path, limit_train_batches=1, limit_val_batches=0).fit(
            model, small_data(2)
        )


def test_bad_arguments():
    with pytest.raises(InputError, match="scale"):
        SuperResModule(scale=5)
    with pytest.raises(InputError, match="new_layers_first"):
        SuperResModule(new_layers_first=2)
    with pytest.raises(InputError, match="loss"):
        SuperResModule(loss="perceptual")


# ---------------------------------------------------------------- growing the scale (seed 004)
def test_x2_weights_grow_into_x4_and_new_layers_train_first(tmp_path):
    x2 = SuperResModule(arch="srresnet", scale=2, arch_args={"blocks": 2, "channels": 16})
    trainer = cpu_trainer(max_epochs=1, default_root_dir=tmp_path, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(x2, small_data(2))
    path = tmp_path / "x2.ckpt"
    trainer.save_checkpoint(path)

    x4 = SuperResModule(
        arch="srresnet",
        scale=4,
        arch_args={"blocks": 2, "channels": 16},
        weights=str(path),
        new_layers_first=1,
    )
    assert x4.new_parameters == ["upsample.1.conv.weight", "upsample.1.conv.bias"]
    for name, tensor in x2.model.state_dict().items():
        assert torch.equal(x4.model.state_dict()[name], tensor), name

    start = {k: v.clone() for k, v in x4.model.state_dict().items()}
    data = small_data(4, image_size=32)
    cpu_trainer(max_epochs=1, default_root_dir=tmp_path, limit_train_batches=2, limit_val_batches=0).fit(
        x4, data
    )
    changed = {k for k, v in x4.model.state_dict().items() if not torch.equal(v, start[k])}
    assert {"upsample.1.conv.weight", "upsample.1.conv.bias"} <= changed
    assert not any(k.startswith("features.") for k in changed)  # loaded layers wait in epoch 0

    after_first = {k: v.clone() for k, v in x4.model.state_dict().items()}
    trainer = cpu_trainer(max_epochs=2, default_root_dir=tmp_path, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(x4, data)
    changed = {k for k, v in x4.model.state_dict().items() if not torch.equal(v, after_first[k])}
    assert any(k.startswith("features.") for k in changed)  # then everything trains


def test_new_layers_survive_a_resume(tmp_path):
    x2 = SuperResModule(arch="espcn", scale=2)
    path = tmp_path / "x2.pt"
    torch.save(x2.model.state_dict(), path)
    grown = SuperResModule(arch="espcn", scale=3, weights=str(path), new_layers_first=2)
    assert grown.new_parameters  # the x3 sub-pixel conv cannot come from x2
    trainer = cpu_trainer(max_epochs=1, default_root_dir=tmp_path, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(grown, small_data(3, image_size=24))
    ckpt = tmp_path / "grown.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed = SuperResModule(arch="espcn", scale=3, new_layers_first=0)
    resumed.on_load_checkpoint(torch.load(ckpt, weights_only=False))
    assert resumed.new_parameters == grown.new_parameters


# ---------------------------------------------------------------- predict
def test_tiles_give_the_whole_image_result():
    model = create_superres_model("srresnet", scale=2, blocks=1, channels=8).eval()
    lr = torch.rand(1, 3, 37, 29)
    with torch.no_grad():
        whole = model(lr)
    tiled = tiled_forward(model, lr, scale=2, tile=12, overlap=8)
    assert tiled.shape == whole.shape
    assert torch.allclose(tiled, whole, atol=1e-5)


def test_predict_writes_upscaled_pngs(tmp_path):
    folder = tmp_path / "lr"
    folder.mkdir()
    textures = SyntheticTextures(2, 40, seed=3)
    sizes = [(40, 40), (33, 21)]
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(textures.sample(i)[:h, :w]).save(folder / f"photo{i}.png")
    model = SuperResModule(arch="espcn", scale=3, tile=16, tile_overlap=4)
    data = small_data(3, image_size=24, predict_root=str(folder))
    writer = PredictionWriter(str(tmp_path / "out"))
    cpu_trainer(callbacks=[writer], default_root_dir=tmp_path).predict(model, data, return_predictions=False)
    for i, (w, h) in enumerate(sizes):
        with Image.open(tmp_path / "out/images" / f"photo{i}.png") as image:
            assert image.size == (w * 3, h * 3) and image.mode == "RGB"


def test_cli_fit_then_predict_from_the_checkpoint(tmp_path):
    written = fit_then_predict(
        QUICKSTART, tmp_path / "run", "--data.init_args.source.init_args.samples", "8",
        "--data.init_args.patches_per_image", "1",
    )  # fmt: skip
    assert written
    image = np.asarray(Image.open(written[0]))
    assert image.ndim == 3 and image.shape[2] == 3


def test_load_from_checkpoint_needs_no_arguments(tmp_path):
    model = SuperResModule(arch="edsr_baseline", scale=2, arch_args={"blocks": 2, "channels": 16})
    trainer = cpu_trainer(max_epochs=1, default_root_dir=tmp_path, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model, small_data(2))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = SuperResModule.load_from_checkpoint(path)
    lr = torch.rand(1, 3, 10, 10)
    assert torch.equal(loaded.eval()(lr), model.eval()(lr))
    with pytest.raises(InputError, match="scale"):
        SuperResModule.load_from_checkpoint(path, scale=4)


def test_a_frozen_backbone_stays_frozen_after_the_new_layers_phase(tmp_path):
    x2 = SuperResModule(arch="espcn", scale=2)
    path = tmp_path / "x2.pt"
    torch.save(x2.model.state_dict(), path)
    model = SuperResModule(arch="espcn", scale=3, weights=str(path), new_layers_first=1, freeze_backbone=True)
    start = {k: v.clone() for k, v in model.model.state_dict().items()}
    trainer = cpu_trainer(max_epochs=2, default_root_dir=tmp_path, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(model, small_data(3, image_size=24))
    changed = {k for k, v in model.model.state_dict().items() if not torch.equal(v, start[k])}
    assert changed and not any(k.startswith("features.") for k in changed)


def test_a_ready_network_can_be_passed_as_arch():
    network = create_superres_model("espcn", scale=2)
    model = SuperResModule(arch=network, scale=2)
    assert model.model is network and model.backbone is network.features
    assert "arch" not in model.hparams  # a module is not a hyperparameter
    with pytest.raises(InputError, match="`features` attribute"):
        SuperResModule(arch=torch.nn.Conv2d(3, 12, 3), scale=2)


def test_offline_feature_weights_fail_with_the_task_arguments_to_use(monkeypatch):
    real = torchvision.models.get_model

    def offline(name, weights=None, **kwargs):
        if weights is not None:
            raise OSError("no network")
        return real(name, weights=None, **kwargs)

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(DownloadError, match="feature_weights: path.*feature_pretrained: false"):
        SuperResModule(arch="espcn", scale=2, loss="feature", feature_pretrained=True)
