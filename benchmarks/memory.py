"""Does memory hold flat? Resident memory of `predict` over tens of thousands of images and of a long
`fit`, each a real `python -m vision_lightning` process with a probe callback.

- `predict` (classification: one CSV; segmentation: one mask PNG per image) over `--images` generated
  32x32 PNGs: resident memory (VmRSS) and its peak so far (VmHWM) when 10%, 50% and 100% of the
  batches are done. A writer that kept its rows or names would grow between 10% and 100%.
- `fit` of the classification quickstart (synthetic shapes, TensorBoard logger, checkpoints,
  validation every epoch) for `--epochs` epochs: resident memory at the end of each epoch.

Prints tables; no assertion: read the growth. Memory is read from /proc/self/status (Linux); elsewhere
only the peak (`resource.getrusage`) is known.

    python benchmarks/memory.py [--images 20000] [--epochs 30] [--fit-samples 2000] [--output figures.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MARKS = (0.1, 0.5, 1.0)
PROBE = "benchmarks.memory.RssProbe"


def memory_mib() -> dict[str, float]:
    """This process's resident memory now (`rss`) and its peak so far (`peak`), in MiB."""
    status = Path("/proc/self/status")
    if status.is_file():
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        kib = {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}
        return {"rss": kib["VmRSS"] / 1024, "peak": kib["VmHWM"] / 1024}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mib = peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere
    return {"rss": float("nan"), "peak": peak_mib}


class RssProbe(pl.Callback):
    """Records memory at 10%, 50% and 100% of the predict batches, and at each training epoch's
    end, into the JSON file `output` (rewritten at every record, so a killed run keeps its figures)."""

    def __init__(self, output: str) -> None:
        self.output = Path(output)
        self.records: list[dict] = []
        self._done = 0

    def _record(self, **where) -> None:
        self.records.append({**where, **memory_mib(), "time": time.perf_counter()})
        self.output.write_text(json.dumps(self.records))

    def on_predict_start(self, trainer, pl_module) -> None:
        self._done = 0
        self._record(stage="predict", done=0.0, items=0)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        counts = trainer.num_predict_batches
        total = sum(counts) if isinstance(counts, list) else counts
        before, self._done = self._done / total, self._done + 1
        done = self._done / total
        if any(before < mark <= done for mark in MARKS):
            self._record(stage="predict", done=round(done, 3), items=self._done * len(batch["image"]))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._record(stage="fit", epoch=trainer.current_epoch + 1, step=trainer.global_step)


def generate_images(folder: Path, count: int, size: int = 32, seed: int = 0) -> None:
    """`count` small PNGs of noise with a bright square somewhere (different bytes each)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        image = rng.integers(0, 96, (size, size, 3), dtype=np.uint8)
        top, left = rng.integers(0, size // 2, 2)
        image[top : top + size // 3, left : left + size // 3] = 230
        Image.fromarray(image).save(folder / f"img{index:06d}.png", compress_level=1)


def run_cli(args: list[str], probe_file: Path) -> list[dict]:
    """`python -m vision_lightning ARGS` with the probe; its records."""
    probe = json.dumps({"class_path": PROBE, "init_args": {"output": str(probe_file)}})
    command = [sys.executable, "-m", "vision_lightning", *args, "--trainer.callbacks+", probe]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed:\n{done.stderr[-3000:]}")
    return json.loads(probe_file.read_text())


def predict_args(task: str, images: Path, out: Path, batch_size: int) -> list[str]:
    common = [
        "--data.init_args.predict_root", str(images), "--data.init_args.batch_size", str(batch_size),
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
        "--prediction_writer.output_dir", str(out),
    ]  # fmt: skip
    if task == "classification":
        return ["predict", "--config", str(ROOT / "configs/quickstart/classification.yaml"), *common]
    return [
        "predict", "--config", str(ROOT / "configs/quickstart/segmentation.yaml"), *common,
        "--data.init_args.image_size", "32",
        "--model.init_args.arch", "classic_unet", "--model.init_args.encoder", "null",
        "--model.init_args.arch_args", "{base_channels: 8}",
    ]  # fmt: skip


def fit_args(run: Path, epochs: int, samples: int) -> list[str]:
    return [
        "fit", "--config", str(ROOT / "configs/quickstart/classification.yaml"),
        "--data.init_args.source.init_args.samples", str(samples),
        "--trainer.max_epochs", str(epochs), "--trainer.default_root_dir", str(run),
        "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
    ]  # fmt: skip


def predict_table(name: str, records: list[dict], images: int) -> list[str]:
    rows = [r for r in records if r["stage"] == "predict"]
    start, end = rows[0], rows[-1]
    lines = [f"| {name} | {images:,} | start | {start['rss']:.0f} | {start['peak']:.0f} |"]
    for row in rows[1:]:
        lines.append(f"| {name} | {images:,} | {row['done']:.0%} | {row['rss']:.0f} | {row['peak']:.0f} |")
    first = rows[1] if len(rows) > 1 else start
    seconds = end["time"] - start["time"]
    lines += [
        f"| {name} | {images:,} | growth {first['done']:.0%} -> 100% | {end['rss'] - first['rss']:+.1f} | "
        f"{end['peak'] - first['peak']:+.1f} |",
        f"| {name} | {images:,} | predict time | {seconds:.0f} s | |",
    ]
    return lines


def fit_table(records: list[dict]) -> list[str]:
    rows = [r for r in records if r["stage"] == "fit"]
    lines = [f"| {r['epoch']} | {r['step']} | {r['rss']:.0f} | {r['peak']:.0f} |" for r in rows]
    if len(rows) > 2:
        second, last = rows[1], rows[-1]
        lines.append(
            f"| growth epoch {second['epoch']} -> {last['epoch']} | | {last['rss'] - second['rss']:+.1f} | "
            f"{last['peak'] - second['peak']:+.1f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=20000, help="generated 32x32 PNGs to predict")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30, help="epochs of the long fit")
    parser.add_argument(
        "--fit-samples", type=int, default=2000, help="synthetic training + validation images"
    )
    parser.add_argument("--tasks", nargs="+", default=["classification", "segmentation", "fit"])
    parser.add_argument("--output", help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    figures: dict = {"images": args.images, "epochs": args.epochs, "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if {"classification", "segmentation"} & set(args.tasks):
            generate_images(work / "images", args.images)
        for task in [t for t in args.tasks if t != "fit"]:
            probe = work / f"{task}.json"
            out = work / f"out-{task}"
            records = run_cli(predict_args(task, work / "images", out, args.batch_size), probe)
            record = json.loads((out / "prediction_run.json").read_text())
            figures["results"][f"predict {task}"] = {"records": records, "items": record["items_predicted"]}
        if "fit" in args.tasks:
            records = run_cli(fit_args(work / "fit", args.epochs, args.fit_samples), work / "fit.json")
            figures["results"]["fit"] = {"records": records}
    print("| run | images | at | RSS MiB | peak MiB |\n|---|---|---|---|---|")
    for name, result in figures["results"].items():
        if name.startswith("predict"):
            print("\n".join(predict_table(name, result["records"], result["items"])))
    if "fit" in figures["results"]:
        print("\n| epoch | step | RSS MiB | peak MiB |\n|---|---|---|---|")
        print("\n".join(fit_table(figures["results"]["fit"]["records"])))
    if args.output:
        Path(args.output).write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
