"""The fast in-memory data path against the worker path, and against the network it feeds.

On CIFAR-sized JPEGs (32x32; generated into a temporary ImageFolder by default, `--data-root` for
a real one such as ../shared/data/cifar10/train), per repetition and in turn:
- `workers`: the existing path: `--workers` processes decode and augment one image at a time
  (albumentations flip, reflect pad 4, random crop), batches collated and normalised in workers;
- `in_memory`: `in_memory: true`: batches indexed from the decoded uint8 tensor in this process
  (no workers), flipped, pad-cropped, cut out and normalised as whole batches (here on the CPU);
- `step`: the quickstart network (`cifar_lenet`) training on ready batches: forward, backward and
  an Adam step, the rate the loader has to keep up with.
Loader rates are training images per second over one epoch after its first batch (worker start-up
and the first decode excluded); the setup figures are the time to decode a split the first time
and to read it back from the disk cache. The ratio in_memory / step is the target of issue 14
(at least 2: the loader never holds the network up), without worker processes.

    python benchmarks/fast_data.py [--images 5000] [--repeats 3] [--workers 2] [--threads 1] [--data-root DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.startup import spread  # noqa: E402
from vision_lightning import ClassifierModule, ImageClassificationDataModule  # noqa: E402
from vision_lightning.data import ImageFolder  # noqa: E402
from vision_lightning.data.synthetic import write_image_folder  # noqa: E402

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]


def _augmentations() -> list:
    import albumentations as A

    return [
        A.HorizontalFlip(p=0.5),
        A.PadIfNeeded(min_height=40, min_width=40, border_mode=4),
        A.RandomCrop(height=32, width=32),
    ]


def _module(root: Path, args: argparse.Namespace, cache: Path | None) -> ImageClassificationDataModule:
    common = {"image_size": 32, "batch_size": args.batch_size, "val_split": 0.05, "mean": MEAN, "std": STD}
    if cache is None:
        return ImageClassificationDataModule(
            ImageFolder(str(root)),
            augmentations=_augmentations(),
            loader={"num_workers": args.workers},
            **common,
        )
    return ImageClassificationDataModule(
        ImageFolder(str(root)),
        in_memory={"cache_dir": str(cache)},
        batch_augment={"flip": True, "pad_crop": 4, "cutout": 8},
        **common,
    )


def loader_rate(module: ImageClassificationDataModule) -> float:
    """Training images per second over one epoch after its first batch (as the task receives them)."""
    loader = module.train_dataloader()
    batches = iter(loader)
    module.on_after_batch_transfer(next(batches), 0)
    count, start = 0, time.perf_counter()
    for batch in batches:
        batch = module.on_after_batch_transfer(batch, 0)
        count += len(batch["image"])
    return count / (time.perf_counter() - start)


def step_rate(batch_size: int, steps: int) -> float:
    """Training images per second of the quickstart network on batches already in memory."""
    model = ClassifierModule(backbone="cifar_lenet", num_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    images, labels = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", help="an ImageFolder of 32x32 images (default: generated ones)")
    parser.add_argument("--images", type=int, default=5000, help="generated images (without --data-root)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per repetition")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (2 on a shared 2-core machine wait on each other)",
    )
    parser.add_argument("--output", help="also write the figures here as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.data_root) if args.data_root else Path(scratch) / "images"
        if not args.data_root:
            write_image_folder(root, per_class=max(args.images // 10, 1), num_classes=10, extension=".jpg")
        cache = Path(scratch) / "cache"
        start = time.perf_counter()
        first = _module(root, args, cache)
        first.setup("fit")
        first._dataset("train", train=True)
        decode_s = time.perf_counter() - start
        rates: dict[str, list[float]] = {"workers": [], "in_memory": [], "step": []}
        cache_read_s = []
        for repeat in range(args.repeats):
            order = ["workers", "in_memory", "step"]
            for run in order[repeat % 3 :] + order[: repeat % 3]:  # each first, second and last in turn
                if run == "step":
                    rates["step"].append(step_rate(args.batch_size, args.steps))
                    continue
                module = _module(root, args, cache if run == "in_memory" else None)
                start = time.perf_counter()
                module.setup("fit")
                if run == "in_memory":
                    module._dataset("train", train=True)
                    cache_read_s.append(time.perf_counter() - start)
                rates[run].append(loader_rate(module))
        images = len(first._dataset("train", train=True))
    ratios = [m / s for m, s in zip(rates["in_memory"], rates["step"])]
    figures = {
        "images": images,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "threads": torch.get_num_threads(),
        "images_per_s": {name: spread(values) for name, values in rates.items()},
        "in_memory_vs_step": spread(ratios),
        "in_memory_vs_workers": spread([m / w for m, w in zip(rates["in_memory"], rates["workers"])]),
        "first_decode_s": round(decode_s, 3),
        "cache_read_s": spread(cache_read_s),
    }
    print(json.dumps(figures, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()
