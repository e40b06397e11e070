"""Time to accuracy: a classification recipe's accuracy against wall-clock minutes, through the CLI,
and the same network trained by a hand-written loop for comparison.

    python benchmarks/time_to_accuracy.py --config configs/classification/cifar10_folder.yaml \
        [--repeats 3] [--plain [N]] [--output-dir runs/tta-bench] [-- --data.init_args.source.init_args.root DIR ...]

Each repetition builds the recipe exactly as `python -m vision_lightning fit --config` does, with
`seed_everything` offset by the repetition, and times from just before `fit` (data set-up, decoding
and caching included) to the end of `test`. At every validation a callback records the wall-clock
seconds and `val/acc`, and logs `time_to_accuracy/val_acc` against whole seconds to the run's
TensorBoard (the curve). `test` runs on the config's test split with the final weights (averaged
ones where an EMA callback is on); with `tta: true` the same weights are tested again without it
(after the clock stops), so one run gives both figures. `--plain` also trains the same network,
loaders, optimizer and schedule in a hand-written PyTorch loop for the same number of epochs,
validating after each, with what the recipe's Trainer adds done by hand (the in-memory batch step,
PatchWhitening, bf16 autocast, EMA, TTA).
Prints a markdown table (accuracy at each validation, by minute) and a JSON summary: median and
spread of the final test accuracy and of the wall time over the repetitions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EMAWeightAveraging
from torch.optim.swa_utils import AveragedModel

from vision_lightning.callbacks.patch_whitening import PatchWhitening, whitening_layers
from vision_lightning.cli import VisionCLI
from vision_lightning.optim import build_optimizer
from vision_lightning.utils.hparams import callable_target

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


class AccuracyClock(pl.Callback):
    """(seconds since `start`, epoch, val/acc) at every validation end, also logged to TensorBoard
    as `time_to_accuracy/val_acc` against whole seconds."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.points: list[dict[str, float]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or "val/acc" not in trainer.callback_metrics:
            return
        seconds = time.perf_counter() - self.start
        accuracy = float(trainer.callback_metrics["val/acc"])
        self.points.append(
            {"seconds": round(seconds, 3), "epoch": trainer.current_epoch, "val_acc": accuracy}
        )
        experiment = getattr(trainer.logger, "experiment", None)
        if trainer.is_global_zero and hasattr(experiment, "add_scalar"):
            experiment.add_scalar("time_to_accuracy/val_acc", accuracy, global_step=int(seconds))


def build(config: Path, run: Path, seed: int, extra: list[str]) -> VisionCLI:
    return VisionCLI(
        args=["--config", str(config), "--seed_everything", str(seed), "--trainer.default_root_dir", str(run),
              "--checkpoint.dirpath", str(run / "checkpoints"), *QUIET, *extra],
        run=False,
    )  # fmt: skip


def lightning_run(config: Path, run: Path, seed: int, extra: list[str]) -> dict[str, Any]:
    cli = build(config, run, seed, extra)
    start = time.perf_counter()
    clock = AccuracyClock(start)
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, cli.datamodule)
    fit_seconds = time.perf_counter() - start
    tested = cli.trainer.test(cli.model, cli.datamodule, verbose=False)[0]
    result = {
        "seed": seed,
        "curve": clock.points,
        "fit_seconds": round(fit_seconds, 3),
        "seconds": round(time.perf_counter() - start, 3),
        "test_acc": round(float(tested["test/acc"]), 4),
    }
    if cli.model.tta:  # the same weights without test-time augmentation, after the clock stopped
        cli.model.tta = False
        result["test_acc_without_tta"] = round(
            float(cli.trainer.test(cli.model, cli.datamodule, verbose=False)[0]["test/acc"]), 4
        )
    return result


@torch.no_grad()
def accuracy(model: torch.nn.Module, loader, prepare, autocast, tta: bool = False) -> float:
    model.eval()
    right = total = 0
    for batch in loader:
        batch = prepare(batch)
        with autocast():
            logits = model.augmented_forward(batch["image"]) if tta else model(batch["image"])
        right += int((logits.argmax(1) == batch["label"]).sum())
        total += len(batch["label"])
    model.train()
    return right / max(total, 1)


def _callback(trainer: pl.Trainer, kind: type) -> Any:
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)


def plain_run(config: Path, run: Path, seed: int, extra: list[str]) -> dict[str, Any]:
    """The recipe's network, loaders, optimizer and schedule, trained by a hand-written loop with
    what the recipe's Trainer would add: the data module's device-side batch step (in-memory
    augmentation), `PatchWhitening`, bf16 autocast for a bf16 `precision`, an EMA of the weights for
    `EMAWeightAveraging` (same decay and start), and flip TTA at test for `tta: true`."""
    cli = build(config, run, seed, extra)
    model, data, trainer = cli.model, cli.datamodule, cli.trainer
    epochs = trainer.max_epochs
    bf16 = str(trainer.precision).startswith("bf16")

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def prepare(batch):
        return data.on_after_batch_transfer(batch, 0)

    whitening = _callback(trainer, PatchWhitening)
    ema = _callback(trainer, EMAWeightAveraging)
    start = time.perf_counter()
    data.setup("fit")
    train, val = data.train_dataloader(), data.val_dataloader()
    optimizer = build_optimizer(model.optimizer_factory, model.parameter_groups())
    scheduler, interval = None, "epoch"
    if model.lr_scheduler_factory is not None:
        target, _ = callable_target(model.lr_scheduler_factory)
        steps = len(train)
        extra_args = (
            {"total_steps": steps * epochs, "steps_per_epoch": [steps] * epochs}
            if getattr(target, "run_length_arguments", False)
            else {}
        )
        scheduler = model.lr_scheduler_factory(optimizer, **extra_args)
        interval = getattr(scheduler, "interval", "epoch")
    averaged = (
        AveragedModel(model, avg_fn=ema._kwargs["avg_fn"], use_buffers=ema._use_buffers)  # as Lightning's
        if ema is not None
        else None
    )
    smoothing = float(model.hparams.get("label_smoothing", 0.0))
    points, step = [], 0
    model.train()
    for epoch in range(epochs):
        if hasattr(train.sampler, "set_epoch"):
            train.sampler.set_epoch(epoch)
        for batch in train:
            batch = prepare(batch)
            if whitening is not None:
                if step == 0:
                    for layer in whitening_layers(model):
                        layer.whiten_from(batch["image"], eps=whitening.eps)
                whitening._set_trainable(model, epoch)
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                logits = model(batch["image"])
            F.cross_entropy(logits.float(), batch["label"], label_smoothing=smoothing).backward()
            optimizer.step()
            if averaged is not None and ema.should_update(step_idx=step):
                averaged.update_parameters(model)
            step += 1
            if scheduler is not None and interval == "step":
                scheduler.step()
        if scheduler is not None and interval == "epoch":
            scheduler.step()
        evaluated = averaged.module if averaged is not None else model
        points.append(
            {
                "seconds": round(time.perf_counter() - start, 3),
                "epoch": epoch,
                "val_acc": accuracy(evaluated, val, prepare, autocast),
            }
        )
    data.setup("test")
    evaluated = averaged.module if averaged is not None else model
    test_acc = accuracy(evaluated, data.test_dataloader(), prepare, autocast, tta=bool(model.tta))
    result = {
        "seed": seed,
        "curve": points,
        "seconds": round(time.perf_counter() - start, 3),
        "test_acc": round(test_acc, 4),
    }
    if model.tta:
        result["test_acc_without_tta"] = round(
            accuracy(evaluated, data.test_dataloader(), prepare, autocast), 4
        )
    return result


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary = {"runs": runs, "test_acc": spread([r["test_acc"] for r in runs]),
               "minutes": spread([r["seconds"] / 60 for r in runs])}  # fmt: skip
    if all("test_acc_without_tta" in r for r in runs):
        summary["test_acc_without_tta"] = spread([r["test_acc_without_tta"] for r in runs])
    return summary


def table(runs: list[dict[str, Any]], name: str) -> str:
    lines = [f"| {name} run | minute | epoch | val acc |", "|---|---|---|---|"]
    for index, result in enumerate(runs):
        for point in result["curve"]:
            lines.append(
                f"| {index} | {point['seconds'] / 60:.1f} | {point['epoch']} | {point['val_acc']:.4f} |"
            )
        lines.append(f"| {index} | {result['seconds'] / 60:.1f} | test | **{result['test_acc']:.4f}** |")
        if "test_acc_without_tta" in result:
            lines.append(f"| {index} | | test without TTA | {result['test_acc_without_tta']:.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=ROOT / "configs/classification/cifar10_folder.yaml")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the first repetition (then +1, +2, ...)")
    parser.add_argument(
        "--plain", type=int, nargs="?", const=-1, default=0, metavar="N",
        help="also the hand-written loop, N times (default: --repeats times)",
    )  # fmt: skip
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="keep the runs (TensorBoard) and summary.json here"
    )
    args = parser.parse_args(argv)
    if args.repeats < 0 or (args.repeats == 0 and args.plain <= 0):
        parser.error("--repeats must be at least 1 (0 only with --plain N: the hand-written loop alone)")
    with tempfile.TemporaryDirectory() as scratch:
        out = args.output_dir or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        summary: dict[str, Any] = {
            "config": str(args.config),
            "extra": extra,
            "threads": torch.get_num_threads(),
        }
        if args.repeats:
            runs = [
                lightning_run(args.config, out / f"lightning-{i}", args.seed + i, extra)
                for i in range(args.repeats)
            ]
            summary["lightning"] = summarise(runs)
            print(table(runs, "Lightning"))
        if args.plain:
            count = args.repeats if args.plain < 0 else args.plain
            plain = [plain_run(args.config, out / f"plain-{i}", args.seed + i, extra) for i in range(count)]
            summary["plain"] = summarise(plain)
            print(table(plain, "plain loop"))
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        json.dumps({k: v for k, v in summary.items() if k in ("lightning", "plain")}, indent=2, default=str)[
            :4000
        ]
    )
    return summary


if __name__ == "__main__":
    main()
