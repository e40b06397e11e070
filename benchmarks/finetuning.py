"""A frozen backbone's training step against an unfrozen one, with BackboneFreezeUnfreeze.

While the backbone is frozen its parameters get no gradients, so autograd skips its backward pass
and the optimizer skips its parameters: a frozen step costs about a forward pass of the backbone
plus the head's step. This trains a resnet34 classifier on synthetic images for two epochs through
Lightning (epoch 0 frozen, epoch 1 unfrozen, every parameter group present in both) and reports
the mean time of a training step (forward, backward, optimizer step) in each, after a few warm-up
steps per epoch.

    python benchmarks/finetuning.py [--device cpu|cuda] [--steps 20] [--warmup 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import lightning.pytorch as pl
import torch

from vision_lightning import BackboneFreezeUnfreeze, ClassifierModule
from vision_lightning.data.classification import ImageClassificationDataModule
from vision_lightning.data.classification_sources import SyntheticShapes


class StepTimer(pl.Callback):
    """Seconds from each training batch's start to its end (the batch is already loaded), per epoch."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.times: dict[int, list[float]] = {}

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync()
        self.times.setdefault(trainer.current_epoch, []).append(time.perf_counter() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--backbone", default="resnet34")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start of each epoch")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per epoch")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")

    pl.seed_everything(0, verbose=False)
    steps = args.warmup + args.steps
    data = ImageClassificationDataModule(
        # the training split (80%) has enough batches
        SyntheticShapes(2 * steps * args.batch_size, num_classes=4),
        image_size=args.image_size,
        batch_size=args.batch_size,
    )
    model = ClassifierModule(
        args.backbone,
        num_classes=4,
        optimizer=functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9),
        log_images=0,
    )
    timer = StepTimer(args.device)
    trainer = pl.Trainer(
        accelerator="gpu" if args.device.startswith("cuda") else "cpu",
        devices=1,
        precision=args.precision,
        max_epochs=2,
        limit_train_batches=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[BackboneFreezeUnfreeze(unfreeze_at_epoch=1, backbone_lr_factor=0.1), timer],
    )
    trainer.fit(model, data)

    figures = {}
    for epoch, phase in ((0, "frozen"), (1, "unfrozen")):
        timed = timer.times[epoch][args.warmup :]
        figures[phase] = {
            "mean_ms": 1000 * statistics.mean(timed),
            "stdev_ms": 1000 * statistics.stdev(timed) if len(timed) > 1 else 0.0,
            "steps": len(timed),
        }
    ratio = figures["frozen"]["mean_ms"] / figures["unfrozen"]["mean_ms"]
    print(
        f"{args.backbone}, {args.image_size} px, batch {args.batch_size}, {args.device}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'phase':<10}{'mean step (ms)':>16}{'stdev (ms)':>12}{'steps':>7}")
    for phase, row in figures.items():
        print(f"{phase:<10}{row['mean_ms']:>16.1f}{row['stdev_ms']:>12.1f}{row['steps']:>7}")
    print(f"frozen / unfrozen: {ratio:.2f}")
    if args.json:
        print(json.dumps({**figures, "frozen_over_unfrozen": ratio, "device": args.device}, indent=2))


if __name__ == "__main__":
    main()
