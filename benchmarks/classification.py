"""Classification benchmark on ../shared/data/cifar10-small (500 train + 100 test JPEGs per class).

Trains the configs/classification/cifar10_folder.yaml recipe (built by the CLI from that file) for a
fixed number of epochs on CPU, reports test accuracy of the best checkpoint and training throughput,
and times a plain PyTorch loop on the same model, loader and optimizer, so the Lightning overhead
is visible.

    python benchmarks/classification.py --data-root ../shared/data [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from vision_lightning import ClassifierModule
from vision_lightning.cli import VisionCLI
from vision_lightning.optim import build_optimizer

CONFIG = Path(__file__).resolve().parents[1] / "configs/classification/cifar10_folder.yaml"


class Throughput(pl.Callback):
    """Training images per second over the epochs after the first (warm-up) one, timed from the start
    of the second epoch to the end of training, so epoch-end work (metrics, logging, checkpoints) is
    included; seconds of `clock` (wall time by default, `time.process_time` for this process's CPU
    time)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.images, self.seconds, self.clock = 0, 0.0, clock
        self._start: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch > 0 and self._start is None:
            self._start = self.clock()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch > 0:
            self.images += len(batch["image"])

    def on_train_end(self, trainer, pl_module) -> None:
        if self._start is not None:
            self.seconds = self.clock() - self._start


def plain_loop_throughput(
    model: ClassifierModule,
    data: pl.LightningDataModule,
    epochs: int,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Train images/s of a hand-written loop: same model, loader and optimizer, no Lightning;
    `epochs` timed by `clock` after one warm-up epoch."""
    data.setup("fit")
    loader = data.train_dataloader()
    optimizer = build_optimizer(model.optimizer_factory, model.parameter_groups())  # the task's own
    model.train()
    images, start = 0, 0.0
    for epoch in range(epochs + 1):
        if epoch == 1:
            images, start = 0, clock()  # the first epoch warms up
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(
                model(batch["image"]), batch["label"], label_smoothing=model.hparams.label_smoothing
            )
            loss.backward()
            optimizer.step()
            images += len(batch["image"])
    return images / (clock() - start)


def from_config(root: Path, run: str, epochs: int, overrides: list[str]) -> VisionCLI:
    """Model, data and trainer of the recipe, exactly as `fit --config` would build them."""
    return VisionCLI(
        args=["--config", str(CONFIG), "--data.init_args.source.init_args.root", str(root), "--trainer.max_epochs", str(epochs),
              "--trainer.default_root_dir", run, "--checkpoint.dirpath", f"{run}/checkpoints",
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false", *overrides],
        run=False,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--speed-epochs", type=int, default=2, help="timed epochs for the plain-loop comparison"
    )
    parser.add_argument("--cache-images", action="store_true", help="decode the images once into memory")
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    if args.epochs < 2 or args.speed_epochs < 1:
        parser.error("--epochs must be at least 2 (the first epoch is warm-up) and --speed-epochs at least 1")
    root = args.data_root / "cifar10-small"
    if not (root / "train").is_dir():
        raise SystemExit(
            f"error: {root}/train not found: pass --data-root, the folder holding cifar10-small/"
        )

    with tempfile.TemporaryDirectory() as run:
        overrides = ["--data.init_args.cache_images", "true"] if args.cache_images else []
        cli = from_config(root, run, args.epochs, overrides)
        counter = Throughput()
        cli.trainer.callbacks.append(counter)
        start = time.perf_counter()
        cli.trainer.fit(cli.model, cli.datamodule)
        fit_seconds = time.perf_counter() - start
        test = cli.trainer.test(cli.model, cli.datamodule, ckpt_path="best", verbose=False)[0]
        lightning_speed = counter.images / counter.seconds

        # The same model and loader in a plain loop (fresh weights, same seed).
        plain = from_config(root, run, args.speed_epochs, overrides)
        plain_speed = plain_loop_throughput(plain.model, plain.datamodule, args.speed_epochs)

    figures = {
        "epochs": args.epochs,
        "cache_images": args.cache_images,
        "test_acc": round(float(test["test/acc"]), 4),
        "test_f1_macro": round(float(test["test/f1_macro"]), 4),
        "fit_seconds": round(fit_seconds, 1),
        "lightning_train_images_per_s": round(lightning_speed, 1),
        "plain_loop_train_images_per_s": round(plain_speed, 1),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(figures, indent=2))
    if args.output:
        args.output.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
