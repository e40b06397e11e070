"""Segmentation benchmark on ../shared/data/isbi2012 (30 labelled 512x512 EM images: 24 train, 6 held out).

Each recipe is built by the CLI from its config, exactly as `fit --config` would, and trains for a
fixed wall-clock budget (`Trainer(max_time=...)`, validation included). The model as it stands when
the budget runs out is scored on the 6 held-out images: Dice and IoU of the foreground (cell
interior, label 255), mean IoU over background (membranes) and foreground, and the membranes' IoU.
Because 78% of ISBI pixels are foreground, the score of predicting "all foreground" is printed
alongside: a recipe is only as good as its margin over that.

    python benchmarks/segmentation.py --data-root ../shared/data [--budget 300] [--recipes isbi_unet isbi_fast_unet] \
        [--repeats 3] [--tta] [-- --trainer.precision bf16-mixed ...]

`--tta` also scores the same weights with flip test-time augmentation; `--repeats N` trains each
recipe N times with seeds 0..N-1; arguments after `--` go to every recipe's CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
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


@torch.no_grad()
def tta_scores(trainer: pl.Trainer, model, datamodule) -> dict[str, float]:
    """The held-out scores of the same weights with flip test-time augmentation (`tta`), in the
    Trainer's precision: validation itself never augments."""
    model.eval()
    was, model.tta = model.tta, True
    scores = SegmentationScores("binary", 2, ["background", "foreground"])
    for batch in datamodule.val_dataloader():
        batch = datamodule.on_after_batch_transfer(batch, 0)
        with trainer.precision_plugin.forward_context():
            logits = model.evaluation_forward(batch["image"])
        scores.update(model.predict_classes(logits.float()), batch["mask"].long())
    model.tta = was
    result = scores.compute()
    return {
        "val_dice_tta": round(float(result["dice"]), 4),
        "val_iou_tta": round(float(result["iou"]), 4),
        "val_iou_macro_tta": round(float(result["iou_macro"]), 4),
        "val_iou_membrane_tta": round(float(result["iou_class/background"]), 4),
    }


def run_recipe(
    name: str,
    data_root: Path,
    budget: int,
    run: str,
    extra: list[str] = (),
    seed: int | None = None,
    tta: bool = False,
) -> dict:
    seconds = f"00:00:{budget // 60:02d}:{budget % 60:02d}"
    cli = VisionCLI(
        args=["--config", str(CONFIGS / f"{name}.yaml"),
              "--data.init_args.source.init_args.root", str(data_root / "isbi2012"),
              "--trainer.max_epochs", "10000", "--trainer.max_time", seconds,
              "--trainer.default_root_dir", run, "--checkpoint.dirpath", f"{run}/checkpoints",
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
              *(["--seed_everything", str(seed)] if seed is not None else []), *extra],
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
        "extra": list(extra),
        "seed": cli.config.get("seed_everything"),
        "parameters": sum(p.numel() for p in cli.model.parameters()),
        "epochs": throughput.epochs,
        "fit_seconds": round(fit_seconds, 1),
        "train_images_per_s": round(throughput.images / max(throughput.seconds, 1e-9), 2),
        "val_dice": round(held_out["val/dice"], 4),
        "val_iou": round(held_out["val/iou"], 4),
        "val_iou_macro": round(held_out["val/iou_macro"], 4),
        "val_iou_membrane": round(held_out["val/iou_class/background"], 4),
        "val_pixel_acc": round(held_out["val/pixel_acc"], 4),
        **(tta_scores(cli.trainer, cli.model, cli.datamodule) if tta else {}),
        "baseline_all_foreground": all_foreground_scores(cli.datamodule),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument(
        "--budget", type=int, default=300, help="training seconds per recipe (validation included)"
    )
    parser.add_argument("--recipes", nargs="+", default=["isbi_unet", "isbi_fast_unet"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each recipe, seeds 0, 1, ... (default: the config's seed)",
    )
    parser.add_argument("--tta", action="store_true", help="also score the same weights with flip TTA")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if not (args.data_root / "isbi2012/train/image").is_dir():
        parser.error(
            f"{args.data_root}/isbi2012/train/image not found: pass --data-root <shared data folder>"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes:
            for repeat in range(args.repeats):
                seed = repeat if args.repeats > 1 else None
                run = f"{tmp}/{recipe}-{repeat}"
                result = run_recipe(recipe, args.data_root, args.budget, run, extra, seed, args.tta)
                print(json.dumps(result), flush=True)
                results.append(result)
    print(f"threads={torch.get_num_threads()} budget={args.budget}s")
    return results


if __name__ == "__main__":
    main()
