"""Divergence: training stops at the first non-finite loss (or warns), no checkpoint holds a diverged
state, and no load path accepts weights that are not finite."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import cpu_trainer, optimizer, run_cli
from vision_lightning import ClassifierModule
from vision_lightning.callbacks import ModelCheckpoint
from vision_lightning.tasks.divergence import MAX_PENDING, LossWatch, _Step
from vision_lightning.tasks.loading import load_task, load_task_checkpoint
from vision_lightning.tasks.segmentation import SegmentationModule
from vision_lightning.tasks.style import StyleTransferModule
from vision_lightning.tasks.superres import SuperResModule
from vision_lightning.utils.errors import InputError, TrainingDivergedError

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs/quickstart/classification.yaml"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
BATCHES = 4  # per epoch
pytestmark = pytest.mark.filterwarnings("ignore:.*random weights.*", "ignore:.*no .val_dataloader.*")


class LossRecorder(pl.Callback):
    """Every training step's loss as a float."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


class PoisonWeights(pl.Callback):
    """Sets one weight of the task to NaN before global step `step`: its loss is the first non-finite one."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(p for p in pl_module.parameters() if p.requires_grad).view(-1)[0] = float("nan")


def classification_data(soft: bool = False, poison: str | None = None, at: int = 0) -> DataLoader:
    """BATCHES batches of 8 random 32x32 images of 4 classes (soft: label rows); `poison` ("image"
    or "label") puts a NaN into that entry of batch `at`."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(8 * BATCHES, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 4, (8 * BATCHES,), generator=generator)
    if soft:
        labels = torch.nn.functional.one_hot(labels, 4).float()
    if poison:
        (images if poison == "image" else labels)[8 * at] = float("nan")
    return DataLoader(TensorDataset(images, labels), batch_size=8)


def classifier(lr: float = 1e-3, **kwargs) -> ClassifierModule:
    kwargs = {"backbone": "cifar_lenet", "num_classes": 4, "log_images": 0, **kwargs}
    return ClassifierModule(optimizer=optimizer("SGD", lr=lr), **kwargs)


def fit(model: pl.LightningModule, data, val=None, epochs: int = 2, callbacks=(), **trainer) -> pl.Trainer:
    pl.seed_everything(0, verbose=False)
    trainer = cpu_trainer(max_epochs=epochs, callbacks=list(callbacks), **trainer)
    if isinstance(data, DataLoader):
        trainer.fit(model, data, val)
    else:
        trainer.fit(model, datamodule=data)
    return trainer


def weights_finite(path: Path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def nan_checkpoint(tmp_path: Path, value: float = float("nan")) -> tuple[Path, str]:
    """A classifier checkpoint whose one tensor holds `value`; (path, tensor name)."""
    trainer = fit(classifier(), classification_data(), epochs=1, limit_train_batches=1)
    path = tmp_path / "diverged.ckpt"
    trainer.save_checkpoint(path)
    return path, poison(path, value)


# ---------------------------------------------------------------- the stop
def test_fit_stops_at_the_first_nonfinite_loss():
    recorder = LossRecorder()
    with pytest.raises(TrainingDivergedError) as caught:
        fit(classifier(lr=1e6), classification_data(), epochs=3, callbacks=[recorder])
    first = next(i for i, loss in enumerate(recorder.losses) if not torch.isfinite(torch.tensor(loss)))
    error = caught.value
    assert (error.step, error.epoch, error.batch_idx) == (first, first // BATCHES, first % BATCHES)
    assert len(recorder.losses) == first + 1  # nothing trained after it (on the CPU the loss is read at once)
    assert "learning rate 1e+06" in str(error) and "gradient clipping" in str(error)
    assert "no checkpoint was written" in str(error)


def test_nonfinite_targets_are_named_as_the_likely_cause():
    with pytest.raises(TrainingDivergedError, match=r"at step 2 \(epoch 0, batch 2\).*'target' \(nan\)"):
        fit(classifier(label_mode="soft"), classification_data(soft=True, poison="label", at=2))


@pytest.mark.parametrize(
    "task",
    ["segmentation", "superres", "style"],
)
def test_every_task_stops(task, tmp_path):
    if task == "segmentation":
        from tests.tasks.test_segmentation import TINY_UNET, SyntheticShapes, datamodule

        model = SegmentationModule(**TINY_UNET, log_images=0)
        data = datamodule(source=SyntheticShapes(16), batch_size=4)
    elif task == "superres":
        from tests.tasks.test_superres import small_data

        model, data = SuperResModule(arch="espcn", scale=2), small_data(batch_size=4)
    else:
        from PIL import Image

        from tests.tasks.test_style import SMALL_NET, small_data
        from vision_lightning.data.textures import SyntheticTextures

        style = tmp_path / "style.png"
        Image.fromarray(SyntheticTextures(1, 40, seed=5).sample(0)).save(style)
        model, data = StyleTransferModule(**SMALL_NET), small_data(style, batch_size=2)
    with pytest.raises(
        TrainingDivergedError, match=r"the loss was nan at step 1 \(epoch 0, batch 1\)"
    ) as caught:
        fit(model, data, callbacks=[PoisonWeights(step=1)], limit_val_batches=0)
    assert caught.value.step == 1


def test_warn_mode_trains_on():
    recorder = LossRecorder()
    with pytest.warns(RuntimeWarning, match=r"loss was nan at step 1 .*training goes on") as warned:
        trainer = fit(
            classifier(nonfinite_loss="warn"), classification_data(), callbacks=[recorder, PoisonWeights(1)]
        )
    assert len(recorder.losses) == 2 * BATCHES and trainer.current_epoch == 2  # every epoch ran
    assert sum("training goes on" in str(w.message) for w in warned) == 1  # once


class UnfinishedCopy:
    """A CUDA event stand-in: the copy behind it has not finished until something waits for it."""

    def __init__(self) -> None:
        self.done = self.waited = False

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.waited = self.done = True


def test_accelerator_losses_are_read_without_waiting_until_something_must_know():
    watch = LossWatch()
    events = [UnfinishedCopy() for _ in range(MAX_PENDING + 1)]
    for step, event in enumerate(events):  # what `add` queues for CUDA losses still being copied
        watch._pending.append(
            _Step(torch.tensor(float("nan") if step == 1 else 1.0), event, step, 0, step, None)
        )
    events[0].done = True
    watch.poll()  # reads the finished copy only, waits for none
    assert len(watch._pending) == MAX_PENDING and not any(e.waited for e in events)
    with pytest.raises(
        TrainingDivergedError, match=r"the loss was nan at step 1 \(epoch 0, batch 1\); try"
    ) as caught:
        watch.poll(wait=True)  # an epoch's end, a validation start or a backlog over MAX_PENDING
    assert caught.value.step == 1 and events[1].waited and not events[2].waited and not watch._pending


def test_an_unknown_mode_is_refused():
    with pytest.raises(InputError, match="nonfinite_loss must be error or warn, got 'skip'"):
        classifier(nonfinite_loss="skip")


def test_bf16_mixed_precision_is_not_stopped():
    trainer = fit(classifier(), classification_data(), epochs=1, precision="bf16-mixed")
    assert trainer.state.finished


# ---------------------------------------------------------------- checkpoints
def test_no_checkpoint_holds_a_diverged_state(tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/loss", save_last=True, save_top_k=3)
    data = classification_data()
    with pytest.raises(TrainingDivergedError) as caught:  # diverges in the second epoch
        fit(classifier(), data, data, epochs=3, callbacks=[checkpoint, PoisonWeights(BATCHES + 1)],
            enable_checkpointing=True)  # fmt: skip
    saved = sorted(p.name for p in tmp_path.glob("*.ckpt"))
    assert saved == ["epoch=0-step=4.ckpt", "last.ckpt"]
    assert all(weights_finite(tmp_path / name) for name in saved)
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"] == 0
    assert f"the last good weights are in {tmp_path / 'last.ckpt'}" in str(caught.value)


def test_warn_mode_saves_neither_nonfinite_weights_nor_a_nan_best(tmp_path):
    checkpoint = ModelCheckpoint(
        dirpath=tmp_path, monitor="val/loss", save_last=True, filename="{epoch}-{val/loss:.3f}",
        auto_insert_metric_name=False,
    )  # fmt: skip
    data = classification_data()
    with pytest.warns(RuntimeWarning, match="training goes on"):
        fit(classifier(nonfinite_loss="warn"), data, data, callbacks=[checkpoint, PoisonWeights(BATCHES + 1)],
            enable_checkpointing=True)  # fmt: skip
    assert [p.name for p in tmp_path.rglob("*.ckpt") if "nan" in p.name or "inf" in p.name] == []
    assert checkpoint.best_model_path and weights_finite(Path(checkpoint.best_model_path))
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["epoch"] == 0  # never overwritten after


def test_a_nonfinite_monitored_value_is_never_among_the_best():
    checkpoint = ModelCheckpoint(monitor="val/loss", save_top_k=2)
    with pytest.warns(UserWarning, match="val/loss is (nan|inf): no top-k checkpoint is saved"):
        assert not checkpoint.check_monitor_top_k(None, torch.tensor(float("nan")))
        assert not checkpoint.check_monitor_top_k(None, torch.tensor(float("inf")))
    assert checkpoint.check_monitor_top_k(None, torch.tensor(0.5))  # fewer than k kept


# ---------------------------------------------------------------- loading refuses non-finite weights
def test_every_load_path_refuses_nonfinite_weights(tmp_path):
    path, name = nan_checkpoint(tmp_path)
    expected = rf"checkpoint {path} holds weights that are not finite \({name} has nan\)"
    for load in (ClassifierModule.load_from_checkpoint, load_task, load_task_checkpoint):
        with pytest.raises(InputError, match=expected):
            load(path)
    with pytest.raises(InputError, match=expected):
        cpu_trainer().predict(classifier(), classification_data(), ckpt_path=path)
    with pytest.raises(InputError, match=expected):  # nor is a diverged run resumed
        cpu_trainer().fit(classifier(), classification_data(), ckpt_path=path)


def poison(path: Path, value: float = float("nan")) -> str:
    """Put `value` into one weight of checkpoint `path`; the tensor's name."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    name = sorted(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point())[-1]
    checkpoint["state_dict"][name].view(-1)[0] = value
    torch.save(checkpoint, path)
    return name


def test_cli_predict_from_nonfinite_weights_exits_2(tmp_path, capsys):
    common = ["--config", QUICKSTART, *QUIET, "--trainer.default_root_dir", tmp_path,
              "--data.init_args.source.init_args.samples", "32", "--model.init_args.log_images", "0"]  # fmt: skip
    run_cli("fit", *common, "--trainer.max_epochs", "1", "--checkpoint.dirpath", tmp_path / "checkpoints")
    path = tmp_path / "checkpoints/last.ckpt"
    name = poison(path, float("inf"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli("predict", *common, "--ckpt_path", path, "--trainer.logger", "false",
                "--prediction_writer.output_dir", tmp_path / "predictions")  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: checkpoint {path} holds weights that are not finite ({name} has inf): " + (
        "it was saved after training diverged; use a checkpoint from before, or train again with a lower "
        "learning rate or gradient clipping"
    )
    assert not any("Traceback" in line for line in err)


def test_cli_fit_that_diverges_exits_2_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", "--config", QUICKSTART, *QUIET, "--trainer.default_root_dir", tmp_path,
                "--data.init_args.source.init_args.samples", "256", "--model.init_args.log_images", "0",
                "--model.init_args.optimizer.init_args.lr", "1e6")  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: training diverged: the loss was ")
    assert "Traceback" not in err
    assert [p.name for p in tmp_path.rglob("*.ckpt") if "nan" in p.name or "inf" in p.name] == []


def test_under_ddp_every_process_stops_at_the_step_one_of_them_diverged(tmp_path):
    """Rank 1's loss alone is NaN: both processes stop at that step instead of rank 0 waiting for
    rank 1 in the next gradient all-reduce until a timeout."""
    from tests.distributed_helpers import run_ddp_script

    ranks = run_ddp_script("ddp_divergence_script.py", tmp_path, timeout=240)
    assert all(rank["stopped"] and rank["batch_idx"] == 2 for rank in ranks), ranks
    assert "the loss was nan at step 2" in ranks[1]["message"]
    assert "in another process" in ranks[0]["message"]
