"""Super-resolution and style-transfer benchmark on ../shared/data (CPU).

1. Accuracy: the x4 recipe `configs/superres/edsr_x4_cbsd68.yaml` (or `--config`, or its network
   swapped with `--arch`), built by the CLI exactly as `fit --config` would (with any CLI arguments
   after `--`), trains on random crops of the 68 CBSD68 photos for the recipe's epochs (about 15
   minutes on 2 CPU cores) or `--epochs`, and is then scored on whole CSet5 and CSet14 images:
   PSNR / SSIM on Y with a 4-pixel border crop, next to bicubic upscaling of the same LR images;
   with `--tta`, also the x8 self-ensemble of the same weights (`x8_psnr_y_crop4`, EDSR's "+").
2. Throughput at 512x512 on CPU, batch 1, inference mode: x4 upscaling to a 512x512 output (LR
   128x128, one tile) and of a 512x512 input (tiled, 2048x2048 out); stylisation of a 512x512 image.

    python benchmarks/superres.py --data-root ../shared/data [--epochs 22] [--arch srresnet] [--tta] [--skip-training] \
        [-- --trainer.callbacks+=lightning.pytorch.callbacks.EMAWeightAveraging ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from vision_lightning.cli import VisionCLI
from vision_lightning.data.superres import SuperResDataModule
from vision_lightning.data.superres_sources import SuperResFolders
from vision_lightning.models.style import create_style_model
from vision_lightning.models.superres import create_superres_model
from vision_lightning.models.tiling import tiled_forward

CONFIG = Path(__file__).resolve().parents[1] / "configs/superres/edsr_x4_cbsd68.yaml"


def scores_on(trainer, model, test_root: Path, name: str, tta: bool = False) -> dict:
    """Y-channel PSNR / SSIM (border crop 4) of `model` on the images of `test_root`, next to
    bicubic; with `tta`, those of the x8 self-ensemble of the same weights too (`<name>_x8_...`)."""
    data = SuperResDataModule(SuperResFolders(test_root=str(test_root)), scale=model.hparams.scale)
    result, was = {}, model.tta
    for ensemble in (False, True) if tta else (False,):
        model.tta = ensemble
        scores = trainer.test(model, data, verbose=False)[0]
        keys = ("psnr_y_crop4", "ssim_y_crop4") if ensemble else SCORES
        for key in keys:
            result[f"{name}_{'x8_' if ensemble else ''}{key}"] = round(
                scores[f"test/{key}"], 3 if "ssim" in key else 2
            )
    model.tta = was
    return result


SCORES = ("psnr_y_crop4", "bicubic_psnr_y_crop4", "ssim_y_crop4", "bicubic_ssim_y_crop4")


def train_and_score(
    data_root: Path, epochs: int | None, run: str, arch: str | None, tta: bool = False,
    config: Path = CONFIG, extra: list[str] = (),
) -> dict:  # fmt: skip
    sr = data_root / "sr"
    args = ["--config", str(config), "--data.init_args.source.init_args.train_root", str(sr / "CBSD68"),
            "--data.init_args.source.init_args.val_root", str(sr / "CSet5"),
            "--trainer.default_root_dir", run, "--checkpoint.dirpath", f"{run}/checkpoints",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]  # fmt: skip
    if epochs is not None:
        args += ["--trainer.max_epochs", str(epochs)]
    args += ["--model.init_args.arch", arch] if arch else []
    cli = VisionCLI(args=[*args, *extra], run=False)
    epochs = cli.trainer.max_epochs
    cli.trainer.check_val_every_n_epoch = max(epochs // 4, 1)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    fit_seconds = time.perf_counter() - start
    result = {
        "recipe": Path(config).stem,
        "extra": list(extra),
        "arch": cli.model.hparams.arch,
        "parameters": sum(p.numel() for p in cli.model.parameters()),
        "epochs": cli.trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 1),
    }
    for name in ("CSet5", "CSet14"):
        result.update(scores_on(cli.trainer, cli.model, sr / name, name, tta))
    return result


@torch.inference_mode()
def images_per_second(fn, image: torch.Tensor, repeats: int = 5) -> float:
    fn(image)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn(image)
    return round(repeats / (time.perf_counter() - start), 3)


def throughput() -> dict:
    torch.manual_seed(0)
    srresnet = create_superres_model("srresnet", scale=4).eval()
    transformer = create_style_model("transformer_net").eval()
    return {
        "x4_srresnet_to_512x512_img_per_s": images_per_second(srresnet, torch.rand(1, 3, 128, 128)),
        "x4_srresnet_from_512x512_tiled_img_per_s": images_per_second(
            lambda x: tiled_forward(srresnet, x, scale=4, tile=128, overlap=16), torch.rand(1, 3, 512, 512), 2
        ),
        "style_transformer_net_512x512_img_per_s": images_per_second(transformer, torch.rand(1, 3, 512, 512)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument(
        "--config", type=Path, default=CONFIG, help="the x4 recipe (default: edsr_x4_cbsd68.yaml)"
    )
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: the recipe's)")
    parser.add_argument("--arch", default=None, help="another network for the recipe (srresnet, espcn)")
    parser.add_argument("--tta", action="store_true", help="also score the x8 self-ensemble (8x test time)")
    parser.add_argument("--skip-throughput", action="store_true", help="measure accuracy only")
    parser.add_argument("--skip-training", action="store_true", help="measure throughput only")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if not (args.data_root / "sr/CBSD68").is_dir():
        parser.error(f"{args.data_root}/sr/CBSD68 not found: pass --data-root <shared data folder>")
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_throughput:
        print(json.dumps(throughput()), flush=True)
    if not args.skip_training:
        with tempfile.TemporaryDirectory() as tmp:
            print(
                json.dumps(
                    train_and_score(
                        args.data_root, args.epochs, f"{tmp}/x4", args.arch, args.tta, args.config, extra
                    )
                ),
                flush=True,
            )
    print(f"threads={torch.get_num_threads()}")


if __name__ == "__main__":
    main()
