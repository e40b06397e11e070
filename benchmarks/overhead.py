"""What Lightning and the task add per training step: `trainer.fit` against a hand-written loop on
the same model, loader and optimizer, run alternately in this one process.

The model, the optimizer and the Trainer (with the CLI's callbacks and TensorBoard logger) come from
configs/classification/cifar10_folder.yaml, built by the CLI as `fit --config` builds them; the
hand-written loop is `plain_loop_throughput` of benchmarks/classification.py. By default the
training batches are random tensors already in memory, cut by index, so the loader costs next to
nothing and the comparison shows the per-step cost of the library; `--data-root` trains on the
recipe's CIFAR-10 subset through its own data module instead. Validation is off in both, so only
training steps are timed. Each repetition runs both, in alternating order, on a freshly built model;
the figure is the median (and range) of the per-repetition ratio Lightning / plain of training
images per second, counted over the epochs after the first (warm-up) one.

    python benchmarks/overhead.py [--repeats 5] [--epochs 4] [--data-root ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks.classification` as a script too
from benchmarks.classification import Throughput, from_config, plain_loop_throughput  # noqa: E402

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


def lightning_throughput(cli, data: pl.LightningDataModule, clock: Callable[[], float]) -> float:
    """Train images/s of `trainer.fit` over the epochs after the first."""
    counter = Throughput(clock)
    cli.trainer.callbacks.append(counter)
    cli.trainer.fit(cli.model, data)
    return counter.images / counter.seconds


def build(run: str, epochs: int, data_root: Path | None, images: int, extra: list[str]):
    """(CLI with model and Trainer of the recipe, the data to train on)."""
    overrides = ["--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "true", *extra]
    if data_root is None:  # the recipe's model and trainer; the data module only names 10 classes
        overrides += ["--data.init_args.source", SYNTHETIC_SOURCE]
        cli = from_config(Path("."), run, epochs, overrides)
        data = InMemoryBatches(images, 32, cli.model.hparams.num_classes, cli.datamodule.batch_size)
        return cli, data
    cli = from_config(
        data_root / "cifar10-small", run, epochs, ["--data.init_args.cache_images", "true", *overrides]
    )
    return cli, cli.datamodule


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of the pair (Lightning, plain)")
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
    lightning, plain = [], []
    with tempfile.TemporaryDirectory() as run:
        for repeat in range(args.repeats):
            cli, data = build(f"{run}/{repeat}", args.epochs, args.data_root, args.images, args.overrides)
            first, second = ("lightning", "plain") if repeat % 2 == 0 else ("plain", "lightning")
            for kind in (first, second):
                if kind == "lightning":
                    lightning.append(lightning_throughput(cli, data, clock))
                else:
                    plain.append(plain_loop_throughput(cli.model, data, args.epochs - 1, clock))
            print(
                f"repeat {repeat}: Lightning {lightning[-1]:.0f} img/s, plain {plain[-1]:.0f} img/s",
                flush=True,
            )
    figures = {
        "data": "cifar10-small (cached)" if args.data_root else f"synthetic in memory, {args.images} images",
        "repeats": args.repeats,
        "epochs": args.epochs,
        "overrides": args.overrides,
        "clock": args.clock,
        "lightning_images_per_s": spread(lightning),
        "plain_images_per_s": spread(plain),
        "ratio_lightning_to_plain": spread([a / b for a, b in zip(lightning, plain)]),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(figures, indent=2))
    if args.output:
        args.output.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
