"""Detection benchmark on ../shared/data/pennfudan (150 street photos, 376 pedestrian boxes, one class).

The recipe (configs/detection/pennfudan_fcos.yaml: FCOS on a ResNet-18 feature pyramid, from
scratch: nothing can be downloaded here) is built by the CLI exactly as `fit --config` would, and
trains until its epochs are done or the wall-clock budget runs out (`Trainer(max_time=...)`,
validation included); the CPU seconds it used are reported beside the wall-clock ones. The model as it stands then is scored on the held-out photos (the config's
seeded `val_split`: 30 photos): COCO mAP@0.5 and mAP@0.5:0.95 in original pixels, by torchmetrics'
`MeanAveragePrecision`, the task's own validation metric.

Next to it, a trivial baseline scored by the same metric: every held-out photo gets one box, the
average training box (centre, width and height as shares of the photo), with score 1. A detector
is only as good as its margin over that.

    python benchmarks/detection.py --data-root ../shared/data [--budget 600] [--repeats 1] \
        [--config configs/detection/pennfudan_fcos.yaml] [-- --trainer.max_epochs 60 ...]

Arguments after `--` go to the recipe's CLI.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torchmetrics.detection import MeanAveragePrecision

from vision_lightning.cli import VisionCLI
from vision_lightning.utils.boxes import to_original

CONFIG = Path(__file__).resolve().parents[1] / "configs/detection/pennfudan_fcos.yaml"


def _original_boxes(batch: dict) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Each image's (boxes in original pixels, labels, original (height, width))."""
    return [
        (to_original(boxes, scale, size), labels, size)
        for boxes, labels, scale, size in zip(batch["boxes"], batch["labels"], batch["scale"], batch["size"])
    ]


def mean_box_baseline(datamodule) -> dict[str, float]:
    """mAP of one box per held-out image: the average training box, relative to each image's size."""
    shares = []  # (cx, cy, w, h) as shares of the image's width and height
    for batch in _plain_train_batches(datamodule):
        for boxes, _, (height, width) in _original_boxes(batch):
            size = torch.tensor([width, height, width, height], dtype=torch.float32)
            xyxy = boxes / size
            shares.append(torch.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                                       xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], dim=1))  # fmt: skip
    cx, cy, w, h = torch.cat(shares).mean(0).tolist()
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
    for batch in datamodule.val_dataloader():
        for boxes, labels, (height, width) in _original_boxes(batch):
            guess = torch.tensor([[(cx - w / 2) * width, (cy - h / 2) * height,
                                   (cx + w / 2) * width, (cy + h / 2) * height]])  # fmt: skip
            metric.update(
                [{"boxes": guess, "scores": torch.ones(1), "labels": torch.zeros(1, dtype=torch.long)}],
                [{"boxes": boxes, "labels": labels}],
            )
    result = metric.compute()
    return {"map_50": round(float(result["map_50"]), 4), "map": round(float(result["map"]), 4)}


def _plain_train_batches(datamodule):
    """The training split without augmentation (evaluation transforms): the boxes as annotated."""
    return datamodule._loader(datamodule._dataset("train", train=False))


def run_recipe(
    config: Path, data_root: Path, budget: int, run: str, extra: list[str] = (), seed=None
) -> dict:
    seconds = f"00:00:{budget // 60:02d}:{budget % 60:02d}"
    cli = VisionCLI(
        args=["--config", str(config),
              "--data.init_args.source.init_args.root", str(data_root / "pennfudan"),
              "--trainer.max_time", seconds,
              "--trainer.default_root_dir", run, "--checkpoint.dirpath", f"{run}/checkpoints",
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
              *(["--seed_everything", str(seed)] if seed is not None else []), *extra],
        run=False,
    )  # fmt: skip
    start, cpu_start = time.perf_counter(), time.process_time()
    cli.trainer.fit(cli.model, cli.datamodule)
    fit_seconds, fit_cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    held_out = cli.trainer.validate(cli.model, cli.datamodule, verbose=False)[0]
    return {
        "recipe": config.stem,
        "extra": list(extra),
        "seed": cli.config.get("seed_everything"),
        "parameters": sum(p.numel() for p in cli.model.parameters()),
        "epochs": cli.trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 1),
        "fit_cpu_seconds": round(fit_cpu_seconds, 1),  # all threads: comparable when the machine is shared
        "held_out_images": len(cli.datamodule.val_dataloader().dataset),
        "val_map_50": round(held_out["val/map_50"], 4),
        "val_map": round(held_out["val/map"], 4),
        "baseline_mean_box": mean_box_baseline(cli.datamodule),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--budget", type=int, default=600, help="training seconds (validation included)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs, seeds 0, 1, ... (default: the config's)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if not (args.data_root / "pennfudan/labels").is_dir():
        parser.error(f"{args.data_root}/pennfudan/labels not found: pass --data-root <shared data folder>")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            seed = repeat if args.repeats > 1 else None
            result = run_recipe(args.config, args.data_root, args.budget, f"{tmp}/run-{repeat}", extra, seed)
            print(json.dumps(result), flush=True)
            results.append(result)
    print(f"threads={torch.get_num_threads()} budget={args.budget}s")
    return results


if __name__ == "__main__":
    main()
