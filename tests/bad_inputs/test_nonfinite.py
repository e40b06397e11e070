"""Bad-input catalogue, non-finite values in training and in checkpoints: each case one exact outcome."""

from __future__ import annotations

import re

import pytest

from tests.conftest import cpu_trainer, run_cli
from tests.tasks.test_divergence import classification_data, classifier, fit, nan_checkpoint
from vision_lightning import ClassifierModule
from vision_lightning.tasks.loading import load_task
from vision_lightning.utils.errors import InputError, TrainingDivergedError

pytestmark = pytest.mark.filterwarnings("ignore:.*no .val_dataloader.*")
ADVICE = "try a lower learning rate or gradient clipping (trainer.gradient_clip_val)"


def _weights(tmp_path, value: float) -> tuple[str, str]:
    """(checkpoint path, expected message) for a checkpoint holding `value`."""
    path, name = nan_checkpoint(tmp_path, value)
    kind = "nan" if value != value else "inf"
    return path, f"checkpoint {path} holds weights that are not finite ({name} has {kind})"


def lr_1e6(tmp_path):
    with pytest.raises(TrainingDivergedError) as caught:
        fit(classifier(lr=1e6), classification_data(), epochs=3)
    return (
        caught.value,
        rf"training diverged: the loss was (nan|inf) at step \d+ .* with learning rate 1e\+06; {re.escape(ADVICE)}",
    )


def nan_soft_target(tmp_path):
    with pytest.raises(TrainingDivergedError) as caught:
        fit(classifier(label_mode="soft"), classification_data(soft=True, poison="label", at=0))
    return (
        caught.value,
        r"the loss was nan at step 0 \(epoch 0, batch 0\).*the batch's 'target' \(nan\) held non-finite values, so check the data",
    )


def inf_input_image(tmp_path):
    data = classification_data()
    data.dataset.tensors[0][8, 0, 0, 0] = float("inf")  # batch 1
    with pytest.raises(TrainingDivergedError) as caught:
        fit(classifier(), data)
    return (
        caught.value,
        r"at step 1 \(epoch 0, batch 1\).*the batch's 'image' \(inf\) held non-finite values",
    )


def nan_weights_load_from_checkpoint(tmp_path):
    path, message = _weights(tmp_path, float("nan"))
    with pytest.raises(InputError) as caught:
        ClassifierModule.load_from_checkpoint(path)
    return caught.value, re.escape(message)


def inf_weights_load_task(tmp_path):
    path, message = _weights(tmp_path, float("-inf"))
    with pytest.raises(InputError) as caught:
        load_task(path)
    return caught.value, re.escape(message)


def nan_weights_resumed(tmp_path):
    path, message = _weights(tmp_path, float("nan"))
    with pytest.raises(InputError) as caught:
        cpu_trainer().fit(classifier(), classification_data(), ckpt_path=path)
    return caught.value, re.escape(message)


def nan_weights_validate(tmp_path):
    path, message = _weights(tmp_path, float("nan"))
    with pytest.raises(InputError) as caught:
        cpu_trainer().validate(classifier(), classification_data(), ckpt_path=path)
    return caught.value, re.escape(message)


def unknown_mode(tmp_path):
    with pytest.raises(InputError) as caught:
        classifier(nonfinite_loss="skip")
    return caught.value, re.escape("nonfinite_loss must be error or warn, got 'skip'")


CASES = [lr_1e6, nan_soft_target, inf_input_image, nan_weights_load_from_checkpoint, inf_weights_load_task,
         nan_weights_resumed, nan_weights_validate, unknown_mode]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
def test_python_api(case, tmp_path):
    error, pattern = case(tmp_path)
    assert re.search(pattern, str(error)), str(error)
    assert "\n" not in str(error)


def test_warn_mode_warns_naming_the_step():
    data = classification_data(poison="image", at=2)
    with pytest.warns(
        RuntimeWarning,
        match=r"the training loss was nan at step 2 .*training goes on \(nonfinite_loss: warn\)",
    ):
        trainer = fit(classifier(nonfinite_loss="warn"), data, epochs=1)
    assert trainer.state.finished


def test_cli_predict_images_from_nonfinite_weights(tmp_path, capsys):
    path, message = _weights(tmp_path, float("nan"))
    image = tmp_path / "one.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("predict_images", "--ckpt_path", path, "--images", image, "--output_dir", tmp_path / "out")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {message}: ")
