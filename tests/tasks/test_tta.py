"""Test-time augmentation (issue 14, point 3): every inverse transform is exact, the x8 self-ensemble
is the mean of the 8 turned-back SR images, test and predict use it, validation does not."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from tests.conftest import cpu_trainer, run_cli
from vision_lightning import ClassifierModule, SegmentationModule, SuperResModule
from vision_lightning.tasks.style import StyleTransferModule
from vision_lightning.tasks.tta import dihedral, flips
from vision_lightning.utils.errors import InputError


def test_every_inverse_undoes_its_transform_and_the_eight_are_distinct():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)  # no symmetry, not square
    for transform, inverse in [*flips(), *dihedral()]:
        assert torch.equal(inverse(transform(x)), x)
    square = torch.arange(25.0).reshape(1, 1, 5, 5)
    copies = {tuple(transform(square).flatten().tolist()) for transform, _ in dihedral()}
    assert len(copies) == 8


# ----------------------------------------------------------------------------- super-resolution
class Upsampler(nn.Module):
    """Nearest-neighbour upscaling after a learned conv: equivariant under the dihedral group when
    the kernel is symmetric, position-dependent otherwise."""

    def __init__(self, scale: int, symmetric: bool) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        with torch.no_grad():
            kernel = torch.zeros(3, 3, 3, 3)
            for c in range(3):
                weights = (
                    torch.ones(3, 3)
                    if symmetric
                    else torch.rand(3, 3, generator=torch.Generator().manual_seed(c))
                )
                kernel[c, c] = weights / weights.sum()  # outputs stay in [0, 1]
            self.features.weight.copy_(kernel)
        self.up = nn.Upsample(scale_factor=scale, mode="nearest")

    def forward(self, x: Tensor) -> Tensor:
        return self.up(self.features(x))


def _by_hand_x8(network: nn.Module, lr: Tensor) -> Tensor:
    outputs = []
    for flip in (False, True):
        for k in range(4):
            seen = torch.rot90(lr.flip(-1) if flip else lr, k, (2, 3))
            back = torch.rot90(network(seen), -k, (2, 3))
            outputs.append(back.flip(-1) if flip else back)
    return torch.stack(outputs).mean(dim=0)


def test_x8_self_ensemble_is_the_mean_of_the_eight_turned_back_images():
    network = Upsampler(2, symmetric=False)
    model = SuperResModule(arch=network, scale=2, tta=True, tile=8, tile_overlap=2).eval()
    lr = torch.rand(2, 3, 10, 14)
    with torch.no_grad():
        expected, plain = _by_hand_x8(network, lr), network(lr)
        assert torch.allclose(model.evaluation_forward(lr), expected, atol=1e-6)
        assert not torch.allclose(expected, plain, atol=1e-3)  # the network is not equivariant
        upscaled = model.upscale(lr)  # predict: tiled passes, ensembled
    assert np.array_equal(np.stack(upscaled), _uint8(expected))


def _uint8(images: Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def test_an_equivariant_network_gives_the_same_sr_with_and_without_tta():
    network = Upsampler(3, symmetric=True)
    lr = torch.rand(1, 3, 9, 12)
    with torch.no_grad():
        ensembled = SuperResModule(arch=network, scale=3, tta=True).evaluation_forward(lr)
        assert torch.allclose(ensembled, network(lr), atol=1e-6)


# ----------------------------------------------------------------------------- segmentation
class PixelNet(nn.Module):
    """Foreground where the image is bright (a 1x1 conv): position plays no part."""

    output_stride = 1

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.encoder.weight.fill_(10.0)
            self.encoder.bias.fill_(-15.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


class LeftEdgeNet(PixelNet):
    """Foreground in the 3 leftmost columns whatever the image: position is all that counts."""

    def forward(self, x: Tensor) -> Tensor:
        logits = torch.full_like(x[:, :1], -10.0) + 0 * self.encoder(x)
        logits[..., :3] = 10.0
        return logits


def _bar_at_left(n: int = 2, size: int = 16) -> Tensor:
    images = torch.zeros(n, 3, size, size)
    images[..., :3] = 1.0
    return images


def test_a_mask_predicted_at_the_left_edge_stays_there():
    images = _bar_at_left()
    model = SegmentationModule(arch=PixelNet(), tta=True).eval()
    with torch.no_grad():
        plain, ensembled = model(images), model.evaluation_forward(images)
    assert torch.allclose(torch.sigmoid(ensembled), torch.sigmoid(plain), atol=1e-5)
    mask = model.predict_classes(ensembled)
    assert mask[..., :3].all() and not mask[..., 3:].any()


def test_the_flipped_copy_is_flipped_back():
    model = SegmentationModule(arch=LeftEdgeNet(), tta=True).eval()
    with torch.no_grad():
        probabilities = torch.sigmoid(model.evaluation_forward(torch.rand(1, 3, 8, 12)))[0, 0]
    # the plain pass says left, the flipped pass (its left is the image's right) says right: half each
    expected = torch.zeros(8, 12)
    expected[:, :3] = expected[:, -3:] = 0.5
    assert torch.allclose(probabilities, expected, atol=1e-4)


# ----------------------------------------------------------------------------- classification
class ColumnNet(nn.Module):
    """Pooled features that weigh each column by its position: not flip-invariant."""

    def __init__(self, invariant: bool = False) -> None:
        super().__init__()
        self.invariant = invariant
        self.num_features = 3

    def forward(self, x: Tensor) -> Tensor:
        if self.invariant:
            return x.mean(dim=(2, 3))
        weights = torch.linspace(-1, 1, x.shape[-1])
        return (x * weights).mean(dim=(2, 3)) * 20


def _classifier(tta: bool, invariant: bool = False, **kwargs) -> ClassifierModule:
    torch.manual_seed(0)
    model = ClassifierModule(backbone=ColumnNet(invariant), num_classes=3, num_features=3, tta=tta, **kwargs)
    return model.eval()


def test_classifier_averages_the_probabilities_of_image_and_flip():
    images = torch.rand(4, 3, 8, 8)
    for mode in ("multiclass", "binary", "multilabel"):
        model = _classifier(True, label_mode=mode)
        with torch.no_grad():
            ensembled = model.probabilities(model.evaluation_forward(images))
            expected = (model.probabilities(model(images)) + model.probabilities(model(images.flip(-1)))) / 2
        assert torch.allclose(ensembled, expected, atol=1e-5), mode


class Images(torch.utils.data.Dataset):
    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(1)
        self.images = torch.rand(12, 3, 8, 8, generator=generator)
        self.labels = torch.arange(12) % 3

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"image": self.images[i], "label": self.labels[i]}


def _metrics(model: ClassifierModule, stage: str) -> dict[str, float]:
    loader = torch.utils.data.DataLoader(Images(), batch_size=4)
    run = cpu_trainer().test if stage == "test" else cpu_trainer().validate
    return run(model, loader, verbose=False)[0]


def test_test_metrics_follow_tta_and_validation_stays_plain():
    plain, augmented = _metrics(_classifier(False), "test"), _metrics(_classifier(True), "test")
    assert augmented.keys() == plain.keys()  # the same names
    assert augmented["test/loss"] != pytest.approx(plain["test/loss"], abs=1e-4)
    assert _metrics(_classifier(True), "val") == pytest.approx(_metrics(_classifier(False), "val"))
    invariant = _metrics(_classifier(False, invariant=True), "test")
    assert _metrics(_classifier(True, invariant=True), "test") == pytest.approx(invariant, abs=1e-5)


def _image_folder(folder: Path, flipped: bool = False) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        image = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(image[:, ::-1] if flipped else image).save(folder / f"{i}.png")
    return folder


def _written_probabilities(path: Path | str) -> np.ndarray:
    with Path(path).open() as handle:  # predict_to_folder returns the file it wrote
        return np.array([[float(v) for v in row[2:]] for row in list(csv.reader(handle))[1:]])


def test_predict_files_are_written_with_tta(tmp_path):
    images = _image_folder(tmp_path / "images")
    model = _classifier(False)
    model.preprocessing = {"image_size": 8, "mean": [0.0] * 3, "std": [1.0] * 3}
    plain = _written_probabilities(model.predict_to_folder(images, tmp_path / "plain"))
    flipped = _written_probabilities(
        model.predict_to_folder(_image_folder(tmp_path / "flipped", True), tmp_path / "f")
    )
    model.tta = True  # on a loaded task too
    results = np.array([list(r["probs"].values()) for r in model.predict_images(images)])
    written = _written_probabilities(model.predict_to_folder(images, tmp_path / "tta"))
    assert np.allclose(written, results, atol=2e-6) and np.allclose(written, (plain + flipped) / 2, atol=2e-6)
    assert not np.allclose(written, plain, atol=1e-3)


def test_segmentation_predict_writes_the_averaged_masks(tmp_path):
    images = _image_folder(tmp_path / "images")
    model = SegmentationModule(arch=LeftEdgeNet(), tta=True, threshold=0.4)
    model.preprocessing = {"image_size": 8, "mean": [0.0] * 3, "std": [1.0] * 3}
    (result,) = model.predict_images(images / "0.png")
    assert result["mask"][:, :3].all() and result["mask"][:, -3:].all() and not result["mask"][:, 3:-3].any()


def test_tasks_without_tta_refuse_it_in_one_sentence():
    with pytest.raises(
        InputError, match="tta: StyleTransferModule cannot use test-time augmentation: a stylised"
    ):
        StyleTransferModule(tta=True)
    with pytest.raises(InputError, match="tta must be true or false"):
        ClassifierModule(backbone="lenet5", tta="yes")
    features = ClassifierModule(backbone="identity", num_features=4, num_classes=3, tta=True)
    with pytest.raises(InputError, match="tta flips images, but this classifier's inputs are 2-D"):
        features.evaluation_forward(torch.rand(2, 4))


def test_predict_images_command_takes_tta(tmp_path):
    model = SuperResModule(arch="espcn", scale=2)
    checkpoint = tmp_path / "sr.ckpt"
    trainer = cpu_trainer(max_epochs=0)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(checkpoint)
    images = tmp_path / "images"
    images.mkdir()
    lr = np.random.default_rng(0).integers(0, 255, (6, 10, 3), dtype=np.uint8)
    Image.fromarray(lr).save(images / "a.png")
    for option in ([], ["--tta"]):
        run_cli("predict_images", "--ckpt_path", checkpoint, "--images", images,
                "--output_dir", tmp_path / f"out{len(option)}", *option)  # fmt: skip
    plain, ensembled = (np.asarray(Image.open(next((tmp_path / f"out{i}").rglob("*.png")))) for i in (0, 1))
    assert plain.shape == ensembled.shape == (12, 20, 3) and not np.array_equal(plain, ensembled)


CONFIG = """
trainer: {accelerator: cpu, logger: false, enable_progress_bar: false}
model:
  class_path: vision_lightning.ClassifierModule
  init_args: {backbone: lenet5, num_classes: 3}
data:
  class_path: vision_lightning.ImageClassificationDataModule
  init_args:
    source:
      class_path: vision_lightning.data.classification_sources.SyntheticShapes
      init_args: {samples: 16, num_classes: 3}
    image_size: 32
    batch_size: 4
"""


def test_cli_test_turns_tta_on_over_a_checkpoint_trained_without(tmp_path, monkeypatch):
    (tmp_path / "config.yaml").write_text(CONFIG)
    model = ClassifierModule(backbone="lenet5", num_classes=3, tta=False)  # recorded in the checkpoint
    trainer = cpu_trainer(max_epochs=0)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "plain.ckpt")
    calls = []
    original = ClassifierModule.augmented_forward
    monkeypatch.setattr(
        ClassifierModule, "augmented_forward", lambda self, x: calls.append(1) or original(self, x)
    )
    common = ["test", "--config", tmp_path / "config.yaml", "--ckpt_path", tmp_path / "plain.ckpt"]
    run_cli(*common)
    assert not calls
    run_cli(*common, "--model.init_args.tta", "true")
    assert calls  # 4 test batches, each averaged over the image and its flip
