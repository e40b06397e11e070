"""Throughput of each task's benchmark network under the speed levers of issue 12: eager float32,
`channels_last`, `compile`, both, `bf16-mixed` and bf16 with channels_last.

Each network is the one its benchmark trains, built by the CLI from the same config as
`fit --config` would (classification: cifar10_folder.yaml's LeNet-5-BN at 32 px, batch 128;
segmentation: isbi_fast_unet.yaml's U-Net at 256 px, batch 4; super-resolution: edsr_x4_cbsd68.yaml's
EDSR-baseline x4 on 24 px LR crops, batch 16; style: the quickstart's transformer_net at 64 px,
batch 8, with its VGG loss network; features: the extraction of benchmarks/features.py, the
classifier's LeNet-5-BN backbone at 32 px, batch 256). Only the data source is swapped for
synthetic images of the same size: one batch made by the config's own data module is held in
memory (on the device) and served again at every step, so the loader costs nothing.

A training step is a whole step through Lightning (forward, loss, backward, optimizer step, the
task's logging); features are timed on `predict` (inference), as they are used. Each model is
built once per variant and fitted again in every round; a round runs every variant once (in a
rotated order), because the machine is shared and noisy. A step is timed from the end of the one
before (the whole cycle through Lightning); the table gives the throughput of the median step over
all rounds, the spread of the rounds' own throughputs (min-max), the fastest step, and speed-ups
over eager of both. Steps after `--warmup` untimed ones count; the first step's time (compilation,
for `compile`) is reported separately, from an empty compile cache unless `--warm-compile-cache`.

    python benchmarks/acceleration.py [--tasks classification ...] [--repeats 3] [--steps N]
        [--device cpu|cuda] [--variants eager channels_last ...] [--threads N] [--output FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

if not __package__:  # run as `python benchmarks/acceleration.py`: the other benchmarks are siblings
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import classification, features, segmentation, superres  # noqa: E402
from vision_lightning.cli import VisionCLI  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Variant:
    precision: str = "32-true"
    channels_last: bool = False
    compile: bool = False


VARIANTS = {
    "eager": Variant(),
    "channels_last": Variant(channels_last=True),
    "compile": Variant(compile=True),
    "compile+channels_last": Variant(channels_last=True, compile=True),
    "bf16": Variant(precision="bf16-mixed"),
    "bf16+channels_last": Variant(precision="bf16-mixed", channels_last=True),
    "fp16": Variant(precision="16-mixed"),  # CUDA only; not in the default set
}
DEFAULT_VARIANTS = [name for name in VARIANTS if name != "fp16"]

SYNTHETIC_CLASSES = "--data.init_args.source", "vision_lightning.data.classification_sources.SyntheticShapes"


@dataclass(frozen=True)
class Bench:
    """A task's benchmark network: the CLI arguments that build it with synthetic data, the stage
    it is timed in, and the timed steps per round on a CPU."""

    network: str
    args: list[str] = field(default_factory=list)
    stage: str = "fit"
    steps: int = 10


BENCHES = {
    "classification": Bench(
        "LeNet-5-BN, 32 px, batch 128",
        [*SYNTHETIC_CLASSES, "--data.init_args.source.init_args.samples", "160",
         "--data.init_args.source.init_args.num_classes", "10"],
        steps=10,
    ),
    "segmentation": Bench(
        "U-Net (base 16), 1x256x256, batch 4",
        ["--config", str(segmentation.CONFIGS / "isbi_fast_unet.yaml"),
         "--data.init_args.source", "vision_lightning.data.segmentation_sources.SyntheticShapes",
         "--data.init_args.source.init_args.samples", "8"],
        steps=2,
    ),
    "superres": Bench(
        "EDSR-baseline x4, 24->96 px, batch 16",
        ["--config", str(superres.CONFIG), "--data.init_args.source", "vision_lightning.data.SyntheticTextureImages",
         "--data.init_args.source.init_args.samples", "1", "--data.init_args.source.init_args.size", "128"],
        steps=2,
    ),
    "style": Bench(
        "transformer_net (16 ch) + VGG16-BN loss, 64 px, batch 8",
        ["--config", str(ROOT / "configs/quickstart/style.yaml"), "--data.init_args.source.init_args.samples", "8"],
        steps=2,
    ),
    "features": Bench(
        "LeNet-5-BN backbone (84-d), 32 px, batch 256, predict",
        ["--model", "vision_lightning.FeatureExtractModule", "--model.backbone", "lenet5_bn",
         "--data", "vision_lightning.ImageClassificationDataModule", *SYNTHETIC_CLASSES,
         "--data.source.samples", "300", "--data.source.num_classes", "10", "--data.val_split", "0.1",
         "--data.image_size", "32", "--data.mean", "[0.4914, 0.4822, 0.4465]",
         "--data.std", "[0.2470, 0.2435, 0.2616]", "--data.batch_size", "256"],
        stage="predict",
        steps=20,
    ),
}  # fmt: skip


def build(task: str, variant: Variant, run: str, device: str) -> tuple[pl.LightningModule, dict[str, Any]]:
    """The task's model with the variant's switches, built by the CLI from the benchmark's config,
    and one batch of its data module's (synthetic) training data on `device`."""
    switches = ["--model.init_args.compile", str(variant.compile).lower(),
                "--model.init_args.channels_last", str(variant.channels_last).lower(),
                "--data.init_args.loader.num_workers", "0"]  # fmt: skip
    bench = BENCHES[task]
    if task == "classification":  # the benchmark's own builder (cifar10_folder.yaml)
        cli = classification.from_config(Path(run), run, 1, [*bench.args, *switches])
    else:
        cli = VisionCLI(
            args=[*bench.args, *switches, *features.QUIET, "--trainer.default_root_dir", run,
                  "--checkpoint.dirpath", f"{run}/checkpoints"],
            run=False,
        )  # fmt: skip
    cli.datamodule.setup("fit")
    batch = next(iter(cli.datamodule.train_dataloader()))
    batch = {key: value.to(device) if torch.is_tensor(value) else value for key, value in batch.items()}
    return cli.model, batch


class SameBatch(Dataset):
    """`length` times the same ready batch (a loader with `batch_size=None` serves it as it is)."""

    def __init__(self, batch: dict[str, Any], length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.batch


class StepClock(pl.Callback):
    """When each training or predict step starts and ends (after a CUDA sync)."""

    def __init__(self, device: str) -> None:
        self.device, self.starts, self.ends = device, [], []

    def _now(self) -> float:
        if self.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_start(self, *args: Any) -> None:
        self.starts.append(self._now())

    def on_train_batch_end(self, *args: Any) -> None:
        self.ends.append(self._now())

    on_predict_batch_start = on_train_batch_start
    on_predict_batch_end = on_train_batch_end


def time_steps(
    model: pl.LightningModule,
    batch: dict[str, Any],
    stage: str,
    variant: Variant,
    steps: int,
    warmup: int,
    device: str,
) -> dict[str, float]:
    """Images/s over `steps` steps after `warmup` ones, through a fresh Trainer; the first step's seconds."""
    clock = StepClock(device)
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=variant.precision,
        max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[clock],
    )  # fmt: skip
    loader = DataLoader(SameBatch(batch, warmup + steps), batch_size=None)
    if stage == "fit":
        trainer.fit(model, train_dataloaders=loader)
    else:
        trainer.predict(model, dataloaders=loader, return_predictions=False)
    images = batch_size(batch)
    # A step's time runs from the end of the one before: the whole cycle, loader and hooks included.
    cycles = [end - before for before, end in zip(clock.ends[warmup - 1 :], clock.ends[warmup:])]
    return {
        "images_per_s": images * steps / sum(cycles),
        "step_images_per_s": [images / seconds for seconds in cycles],
        "first_step_s": clock.ends[0] - clock.starts[0],
    }


def benchmark_task(
    task: str, variants: list[str], repeats: int, steps: int, warmup: int, device: str
) -> dict[str, dict]:
    """Every variant of `task` once per round, `repeats` rounds, each round in a rotated order."""
    torch._dynamo.reset()  # compiled frames of another task's networks count towards the recompile limit
    bench = BENCHES[task]
    failed: dict[str, dict] = {}  # a variant that fails is reported, and the others still run
    with tempfile.TemporaryDirectory() as run:
        built = {}
        for name in variants:
            try:
                built[name] = build(task, VARIANTS[name], run, device)
            except Exception as error:  # noqa: BLE001
                failed[name] = failure(task, name, error)
        rounds: dict[str, list[dict]] = {name: [] for name in built}
        for round_ in range(repeats):
            order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
            for name in [name for name in order if name in built and name not in failed]:
                model, batch = built[name]
                try:
                    figures = time_steps(model, batch, bench.stage, VARIANTS[name], steps, warmup, device)
                except Exception as error:  # noqa: BLE001
                    failed[name] = failure(task, name, error)
                    continue
                rounds[name].append(figures)
                print(f"  {task:<15}{name:<24}round {round_ + 1}: {figures['images_per_s']:9.1f} img/s, "
                      f"first step {figures['first_step_s']:.2f} s", flush=True)  # fmt: skip
    eager = rounds.get("eager") if "eager" not in failed else None
    return {
        name: failed[name]
        if name in failed
        else summarise(rounds[name], eager, batch_size(built[name][1]), steps, bench.stage)
        for name in variants
    }


def failure(task: str, variant: str, error: Exception) -> dict[str, str]:
    message = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    print(f"  {task:<15}{variant:<24}failed: {message}", flush=True)
    return {"error": message}


def batch_size(batch: dict[str, Any]) -> int:
    return len(next(value for value in batch.values() if torch.is_tensor(value)))


def summarise(
    rounds: list[dict], eager: list[dict] | None, batch_size: int, steps: int, stage: str
) -> dict[str, Any]:
    """Throughput of the median step over every round, the spread of the rounds' own figures, and
    the fastest step. On a shared machine other processes slow some steps down many times over (two
    processes of two threads on two cores), so the median step and the fastest one say more about
    the network than a mean does; the speed-ups over eager are ratios of those."""
    speeds = [r["images_per_s"] for r in rounds]
    steps_speeds = [speed for r in rounds for speed in r["step_images_per_s"]]
    summary = {
        "stage": "train" if stage == "fit" else "predict",
        "batch_size": batch_size,
        "timed_steps_per_round": steps,
        "images_per_s_median_step": round(statistics.median(steps_speeds), 2),
        "images_per_s_best_step": round(max(steps_speeds), 2),
        "images_per_s_rounds": [round(speed, 2) for speed in speeds],
        "first_step_s": round(rounds[0]["first_step_s"], 3),  # the first round's: compilation happens there
        "first_step_s_later_rounds": [round(r["first_step_s"], 3) for r in rounds[1:]],
    }
    if eager:
        eager_steps = [speed for r in eager for speed in r["step_images_per_s"]]
        summary["vs_eager"] = round(summary["images_per_s_median_step"] / statistics.median(eager_steps), 3)
        summary["best_vs_eager_best"] = round(summary["images_per_s_best_step"] / max(eager_steps), 3)
    return summary


def machine(device: str) -> dict[str, Any]:
    info = {
        "device": device,
        "torch": torch.__version__,
        "lightning": pl.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def cpu_model() -> str:
    """The CPU's model name (what `lscpu` prints), or the platform's processor string."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def markdown_table(results: dict[str, dict[str, dict]]) -> str:
    lines = [
        "| task (network, input) | variant | img/s, median step | rounds min-max | vs eager "
        "| img/s, best step | vs eager's best | first step (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for task, by_variant in results.items():
        for name, row in by_variant.items():
            label = f"{task} ({BENCHES[task].network})"
            if "error" in row:
                lines.append(f"| {label} | {name} | failed: {row['error'][:120]} | | | | | |")
                continue
            ratio = f"{row['vs_eager']:.2f}x" if "vs_eager" in row else "-"
            best_ratio = f"{row['best_vs_eager_best']:.2f}x" if "best_vs_eager_best" in row else "-"
            rounds = row["images_per_s_rounds"]
            lines.append(
                f"| {label} | {name} | {_figure(row['images_per_s_median_step'])} | "
                f"{_figure(min(rounds))}-{_figure(max(rounds))} | {ratio} | "
                f"{_figure(row['images_per_s_best_step'])} | {best_ratio} | {row['first_step_s']:.2f} |"
            )
    return "\n".join(lines)


def _figure(value: float) -> str:
    """Three significant figures or whole numbers: 1.23, 12.3, 1,234."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def quiet_lightning() -> None:
    """No per-Trainer banners ("GPU available ...") or loader-worker advice: one Trainer per round."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for message in (
        ".*does not have many workers.*",
        ".*GPU available but not used.*",
        ".*random weights.*",  # the style quickstart's loss network: no download
        ".*LightningCLI's args parameter.*",
        ".*no `val_dataloader`.*",
        ".*treespec.*",
    ):
        warnings.filterwarnings("ignore", message=message)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=DEFAULT_VARIANTS)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each runs every variant once")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed steps per round (default: per task, a few seconds on a CPU)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed steps at the start of each round (default: 1, CUDA 3)",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--warm-compile-cache",
        action="store_true",
        help="let compile reuse the kernels of earlier runs (default: an empty cache, as a first run has)",
    )
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    warmup = args.warmup or (3 if args.device == "cuda" else 1)
    if args.repeats < 1 or (args.steps is not None and args.steps < 1) or warmup < 1:
        parser.error("--repeats, --steps and --warmup must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch; use --device cpu")
    if "fp16" in args.variants and args.device != "cuda":
        parser.error("--variants fp16 (16-mixed) runs on CUDA only; use bf16 on a CPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    from torch._inductor.utils import fresh_inductor_cache  # torch's own helper, used by its tests

    quiet_lightning()
    started = time.perf_counter()
    results = {}
    for task in args.tasks:
        steps = args.steps or BENCHES[task].steps
        if args.device == "cuda" and args.steps is None:
            steps *= 10  # a GPU step is far shorter
        with contextlib.nullcontext() if args.warm_compile_cache else fresh_inductor_cache():
            results[task] = benchmark_task(task, args.variants, args.repeats, steps, warmup, args.device)
    figures = {
        "machine": machine(args.device),
        "repeats": args.repeats,
        "warmup_steps": warmup,
        "compile_cache": "warm" if args.warm_compile_cache else "empty at the start of each task",
        "seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    print(f"\n{markdown_table(results)}\n")
    print(f"{figures['machine']} - {figures['seconds']} s")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def failures(figures: dict[str, Any]) -> list[str]:
    """`task/variant` of every variant that failed."""
    return [
        f"{task}/{name}"
        for task, rows in figures["results"].items()
        for name, row in rows.items()
        if "error" in row
    ]


if __name__ == "__main__":
    sys.exit(1 if failures(main()) else 0)
