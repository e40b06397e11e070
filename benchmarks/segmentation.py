"""Segmentation benchmark on ../shared/data/isbi2012 (30 labelled 512x512 EM images: 24 train, 6 held out).

Each recipe is built by the CLI from its config, exactly as `fit --config` would, and trains for a
fixed wall-clock budget (`Trainer(max_time=...)`, validation included). The model as it stands when
the budget runs out is scored on the 6 held-out images: Dice and IoU of the foreground (cell
interior, label 255), mean IoU over background (membranes) and foreground, and the membranes' IoU.
Because 78% of ISBI pixels are foreground, the score of predicting "all foreground" is printed
alongside: a recipe is only as good as its margin over that.

    python benchmarks/segmentation.py --data-root ../shared/data [--budget 300] [--recipes isbi_unet isbi_fast_unet]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from vision_lightning.cli import VisionCLI
from vision_lightning.metrics.segmentation import SegmentationScores

CONFIGS = Path(__file__).resolve().parents[1] / "configs/segmentation"


class TrainThroughput(pl.Callback):
    """Training images per second over the training batches only (validation time excluded)."""

    def __init__(self) -> None:
        self.images, self.seconds, self.epochs = 0, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds += time.perf_counter() - self._start
        self.images += len(batch["image"])

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs += 1


def all_foreground_scores(datamodule) -> dict[str, float]:
    """Scores of predicting foreground everywhere on the held-out masks."""
    scores = SegmentationScores("binary", 2, ["background", "foreground"])
    for batch in datamodule.val_dataloader():
        mask = batch["mask"].long()
        scores.update(torch.ones_like(mask), mask)
    return {k: round(float(v), 4) for k, v in scores.compute().items()}


def run_recipe(name: str, data_root: Path, budget: int, run: str) -> dict:
    seconds = f"00:00:{budget // 60:02d}:{budget % 60:02d}"
    cli = VisionCLI(
        args=["--config", str(CONFIGS / f"{name}.yaml"),
              "--data.init_args.source.init_args.root", str(data_root / "isbi2012"),
              "--trainer.max_epochs", "10000", "--trainer.max_time", seconds,
              "--trainer.default_root_dir", run, "--checkpoint.dirpath", f"{run}/checkpoints",
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"],
        run=False,
    )  # fmt: skip
    throughput = TrainThroughput()
    cli.trainer.callbacks.append(throughput)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    fit_seconds = time.perf_counter() - start
    held_out = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0]
    return {
        "recipe": name,
        "parameters": sum(p.numel() for p in cli.model.parameters()),
        "epochs": throughput.epochs,
        "fit_seconds": round(fit_seconds, 1),
        "train_images_per_s": round(throughput.images / max(throughput.seconds, 1e-9), 2),
        "val_dice": round(held_out["val/dice"], 4),
        "val_iou": round(held_out["val/iou"], 4),
        "val_iou_macro": round(held_out["val/iou_macro"], 4),
        "val_iou_membrane": round(held_out["val/iou_class/background"], 4),
        "val_pixel_acc": round(held_out["val/pixel_acc"], 4),
        "baseline_all_foreground": all_foreground_scores(cli.datamodule),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument(
        "--budget", type=int, default=300, help="training seconds per recipe (validation included)"
    )
    parser.add_argument("--recipes", nargs="+", default=["isbi_unet", "isbi_fast_unet"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if not (args.data_root / "isbi2012/train/image").is_dir():
        parser.error(
            f"{args.data_root}/isbi2012/train/image not found: pass --data-root <shared data folder>"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes:
            result = run_recipe(recipe, args.data_root, args.budget, f"{tmp}/{recipe}")
            print(json.dumps(result), flush=True)
            results.append(result)
    print(f"threads={torch.get_num_threads()} budget={args.budget}s")


if __name__ == "__main__":
    main()
