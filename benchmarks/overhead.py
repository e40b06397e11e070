"""What Lightning and the library add to a training step: `trainer.fit` against a hand-written
loop on the same model, loader and optimizer, run in turn in this one process.

Three runs per repetition, each first, second and last in turn:
- `task`: the recipe configs/classification/cifar10_folder.yaml as `fit --config` builds it (the
  CLI's Trainer, callbacks, TensorBoard logger and progress bar; the task's metrics and logging),
  without its learning-rate schedule, which the other two do not step;
- `minimal`: Lightning's floor, the same network, loss and optimizer in the smallest LightningModule
  under a Trainer without logger, checkpoints, progress bar or callbacks;
- `plain`: the hand-written loop, `plain_loop_throughput` of benchmarks/classification.py.
Throughput is training images per second over the epochs after the first (warm-up) one, epoch-end
work included; validation is off. By default the batches are random images already in memory,
drawn by index, so the loader costs next to nothing and an epoch is as long as CIFAR-10's (50,000
images); `--data-root` trains on the recipe's CIFAR-10 subset (4,500 images, cached decoded) through
its own data module instead. The figures are the median and range over repetitions of each run's
images per second and of the ratios task / plain and minimal / plain.

    python benchmarks/overhead.py [--repeats 6] [--threads 1] [--data-root ../shared/data] [--trainer.X Y]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.classification` as a script too
from benchmarks.classification import Throughput, from_config, plain_loop_throughput  # noqa: E402
from benchmarks.startup import spread  # noqa: E402
from vision_lightning import ClassifierModule  # noqa: E402
from vision_lightning.optim import build_optimizer  # noqa: E402

SYNTHETIC_SOURCE = json.dumps(
    {
        "class_path": "vision_lightning.data.classification_sources.SyntheticShapes",
        "init_args": {"num_classes": 10},
    }
)


class _Batches(Dataset):
    """Whole batches by a list of indices: one gather per batch, no per-sample collation."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices: list[int]) -> dict[str, Tensor]:
        return {"image": self.images[indices], "label": self.labels[indices]}


class InMemoryBatches(pl.LightningDataModule):
    """Shuffled training batches drawn from `pool` random normalised images in memory (no validation):
    an epoch of `images` draws, as long as CIFAR-10's by default, from a small pool."""

    def __init__(
        self, images: int, image_size: int, num_classes: int, batch_size: int, pool: int = 4096, seed: int = 0
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        pool = min(pool, images)
        self.dataset = _Batches(
            torch.randn(pool, 3, image_size, image_size, generator=generator),
            torch.randint(0, num_classes, (pool,), generator=generator),
        )
        self.images, self.batch_size = images, batch_size

    def train_dataloader(self) -> DataLoader:
        draws = RandomSampler(self.dataset, replacement=True, num_samples=self.images)
        return DataLoader(
            self.dataset, sampler=BatchSampler(draws, self.batch_size, drop_last=False), batch_size=None
        )


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
#: the contestants: the recipe's task and Trainer as the CLI builds them, Lightning's floor, the plain loop
KINDS = ["task", "minimal", "plain"]


class MinimalModule(pl.LightningModule):
    """Lightning's own floor: the task's network, loss and optimizer in the smallest LightningModule,
    trained by a Trainer without logger, checkpoints, progress bar or other callbacks."""

    def __init__(self, task: ClassifierModule) -> None:
        super().__init__()
        self.backbone, self.head = task.backbone, task.head
        self.task = [task]  # not a submodule: only its optimizer factory and parameter groups are used

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.backbone(images))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        smoothing = self.task[0].hparams.label_smoothing
        return F.cross_entropy(self(batch["image"]), batch["label"], label_smoothing=smoothing)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        task = self.task[0]
        return build_optimizer(task.optimizer_factory, task.parameter_groups())


def fit_throughput(
    trainer: pl.Trainer, model: pl.LightningModule, data: pl.LightningDataModule, clock: Callable[[], float]
) -> float:
    """Train images/s of `trainer.fit` over the epochs after the first."""
    counter = Throughput(clock)
    trainer.callbacks.append(counter)
    trainer.fit(model, data)
    return counter.images / counter.seconds


def minimal_throughput(cli, data: pl.LightningDataModule, epochs: int, clock: Callable[[], float]) -> float:
    trainer = pl.Trainer(
        max_epochs=epochs, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
    )  # fmt: skip
    return fit_throughput(trainer, MinimalModule(cli.model), data, clock)


def build(run: str, epochs: int, data_root: Path | None, images: int, extra: list[str]):
    """(CLI with model and Trainer of the recipe, the data to train on)."""
    overrides = [
        "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "true",
        "--model.init_args.lr_scheduler", "null",  # the hand-written loop steps no schedule either
        *extra,
    ]  # fmt: skip
    if data_root is None:  # the recipe's model and trainer; the data module only names 10 classes
        overrides += ["--data.init_args.source", SYNTHETIC_SOURCE]
        cli = from_config(Path("."), run, epochs, overrides)
        data = InMemoryBatches(images, 32, cli.model.hparams.num_classes, cli.datamodule.batch_size)
        return cli, data
    cli = from_config(
        data_root / "cifar10-small", run, epochs, ["--data.init_args.cache_images", "true", *overrides]
    )
    return cli, cli.datamodule


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=6, help="repetitions of the three runs")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run, the first one warm-up")
    parser.add_argument(
        "--images", type=int, default=50_000, help="synthetic training images per epoch (CIFAR-10's 50,000)"
    )
    parser.add_argument(
        "--data-root", type=Path, default=None, help="the folder holding cifar10-small/ (default: synthetic)"
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or this process's CPU time (steadier on a shared machine; the loader must run in it)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON here")
    args, args.overrides = parser.parse_known_args()  # the rest goes to the recipe: `--trainer.X Y`
    if args.epochs < 2 or args.repeats < 1 or args.images < 1:
        parser.error("--epochs must be at least 2 (the first is warm-up), --repeats and --images at least 1")
    if args.data_root is not None and not (args.data_root / "cifar10-small/train").is_dir():
        raise SystemExit(f"error: {args.data_root}/cifar10-small/train not found: pass the folder holding it")

    if args.threads:
        torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    speeds: dict[str, list[float]] = {kind: [] for kind in KINDS}
    with tempfile.TemporaryDirectory() as run:
        for repeat in range(args.repeats):
            cli, data = build(f"{run}/{repeat}", args.epochs, args.data_root, args.images, args.overrides)
            for kind in KINDS[repeat % 3 :] + KINDS[: repeat % 3]:  # each goes first, second and last
                if kind == "task":
                    speed = fit_throughput(cli.trainer, cli.model, data, clock)
                elif kind == "minimal":
                    speed = minimal_throughput(cli, data, args.epochs, clock)
                else:
                    speed = plain_loop_throughput(cli.model, data, args.epochs - 1, clock)
                speeds[kind].append(speed)
            print(
                f"repeat {repeat}: " + ", ".join(f"{kind} {speeds[kind][-1]:.0f} img/s" for kind in KINDS),
                flush=True,
            )
    figures = {
        "data": "cifar10-small (cached)" if args.data_root else f"synthetic in memory, {args.images} images",
        "repeats": args.repeats,
        "epochs": args.epochs,
        "overrides": args.overrides,
        "clock": args.clock,
        "torch_threads": torch.get_num_threads(),
        **{f"{kind}_images_per_s": spread(values) for kind, values in speeds.items()},
        "ratio_task_to_plain": spread([a / b for a, b in zip(speeds["task"], speeds["plain"])]),
        "ratio_minimal_to_plain": spread([a / b for a, b in zip(speeds["minimal"], speeds["plain"])]),
    }
    print(json.dumps(figures, indent=2))
    if args.output:
        args.output.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
