"""StyleTransferModule: training with a style computed once, loss terms, predict, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import cpu_trainer, fit_then_predict, optimizer, run_cli
from vision_lightning.callbacks.prediction_writer import PredictionWriter
from vision_lightning.data.style import StyleTransferDataModule
from vision_lightning.data.style_sources import SyntheticTextureContent
from vision_lightning.data.textures import SyntheticTextures
from vision_lightning.losses.feature import StyleLoss
from vision_lightning.models.style import create_style_model
from vision_lightning.tasks.style import StyleTransferModule
from vision_lightning.utils.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs/quickstart/style.yaml"
SMALL_NET = {"arch_args": {"channels": 8, "blocks": 1}}
pytestmark = pytest.mark.filterwarnings("ignore:.*random weights.*")


@pytest.fixture
def style_path(tmp_path: Path) -> Path:
    path = tmp_path / "style.png"
    Image.fromarray(SyntheticTextures(1, 40, seed=5).sample(0)).save(path)
    return path


def small_data(style_path: Path, **kwargs) -> StyleTransferDataModule:
    args = {"source": SyntheticTextureContent(samples=10), "image_size": 32, "batch_size": 4}
    return StyleTransferDataModule(style_image=str(style_path), **{**args, **kwargs})


def test_fit_logs_every_loss_term_and_computes_the_style_once(tmp_path, style_path, monkeypatch):
    calls = []
    original = StyleLoss.set_style
    monkeypatch.setattr(StyleLoss, "set_style", lambda self, style: calls.append(1) or original(self, style))
    model = StyleTransferModule(tv_weight=1e-4, **SMALL_NET)
    # 4 contents: one batch an epoch (each step costs a VGG16 forward and backward)
    trainer = cpu_trainer(max_epochs=2, default_root_dir=tmp_path)
    trainer.fit(model, small_data(style_path, source=SyntheticTextureContent(samples=4)))
    assert len(calls) == 1
    logged = set(trainer.callback_metrics)
    expected = {"val/loss_content_relu4_3", "val/loss_tv"} | {
        f"val/loss_style_{layer}" for layer in ("relu2_2", "relu3_3", "relu4_3", "relu5_3")
    }
    assert expected <= logged
    total = trainer.callback_metrics["val/loss"]
    assert total == pytest.approx(sum(float(trainer.callback_metrics[k]) for k in expected), rel=1e-4)


def test_a_short_last_batch_is_handled(tmp_path, style_path):
    model = StyleTransferModule(**SMALL_NET)
    data = small_data(style_path, source=SyntheticTextureContent(samples=4), batch_size=3)  # val: 3 + 1
    trainer = cpu_trainer(max_epochs=1, default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(model, data)
    sizes = [len(batch["image"]) for batch in data.val_dataloader()]
    assert sizes[-1] < sizes[0]  # validation ran through a short last batch
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


def test_training_lowers_the_loss(tmp_path, style_path):
    torch.manual_seed(0)
    model = StyleTransferModule(optimizer=optimizer(lr=3e-3), **SMALL_NET)
    data = small_data(style_path, source=SyntheticTextureContent(samples=8))
    check = cpu_trainer(default_root_dir=tmp_path)
    before = check.validate(model, data, verbose=False)[0]["val/loss"]
    # no validation inside the fit: each pass costs a VGG, and only `before` and `after` are compared
    cpu_trainer(max_epochs=6, default_root_dir=tmp_path, limit_val_batches=0, num_sanity_val_steps=0).fit(
        model, data
    )
    after = check.validate(model, data, verbose=False)[0]["val/loss"]
    assert after < before


def test_only_the_network_trains_and_checkpoints_hold_no_vgg(tmp_path, style_path):
    model = StyleTransferModule(**SMALL_NET)
    trainer = cpu_trainer(max_epochs=1, default_root_dir=tmp_path, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model, small_data(style_path))
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.model.parameters()}
    assert all(key.startswith("model.") for key in model.state_dict())


def test_predict_keeps_full_resolution_of_any_size(tmp_path, style_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    textures = SyntheticTextures(2, 50, seed=9)
    sizes = [(50, 37), (21, 30)]
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(textures.sample(i)[:h, :w]).save(folder / f"photo{i}.jpg")
    model = StyleTransferModule(arch="style_resnet", **SMALL_NET)
    data = small_data(style_path, predict_root=str(folder))
    writer = PredictionWriter(str(tmp_path / "out"))
    cpu_trainer(callbacks=[writer], default_root_dir=tmp_path).predict(model, data, return_predictions=False)
    for i, (w, h) in enumerate(sizes):
        with Image.open(tmp_path / "out/images" / f"photo{i}.png") as image:
            assert image.size == (w, h)


def test_the_data_modules_style_is_used_without_style_image(tmp_path, style_path):
    model = StyleTransferModule(**SMALL_NET)
    trainer = cpu_trainer(max_epochs=1, default_root_dir=tmp_path, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(model, small_data(style_path))
    assert model.loss_fn.has_style


def test_without_any_style_image_the_error_says_what_to_do():
    model = StyleTransferModule(**SMALL_NET)  # no style_image, and no StyleTransferDataModule to ask
    with pytest.raises(InputError, match="style_image"):
        model.setup("fit")


def test_unknown_layer_name_is_refused():
    with pytest.raises(InputError, match="relu9_9"):
        StyleTransferModule(style_layers={"relu9_9": 1.0}, **SMALL_NET)


def test_cli_reports_a_missing_style_image(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", QUICKSTART, "--data.init_args.style_image", tmp_path / "nope.jpg",
                "--trainer.default_root_dir", tmp_path)  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "nope.jpg" in err and "does not exist" in err
    assert "Traceback" not in err


def test_cli_fit_then_predict(tmp_path):
    written = fit_then_predict(
        QUICKSTART,
        tmp_path / "run",
        "--data.init_args.source.init_args.samples",
        "8",
        "--data.init_args.image_size",
        "32",
    )
    assert written


def test_a_ready_network_can_be_passed_as_arch():
    network = create_style_model("transformer_net", channels=8, blocks=1)
    model = StyleTransferModule(arch=network)
    assert model.model is network and model.backbone is network.encoder
    with pytest.raises(InputError, match="`encoder` attribute"):
        StyleTransferModule(arch=torch.nn.Conv2d(3, 3, 3))
