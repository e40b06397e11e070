"""The checks to run whenever a CUDA machine is available (issue 12, point 8); without one it says
so in one sentence and exits 0, so it is safe anywhere.

1. Config smoke subset on the GPU (`fast_dev_run`, as tests/test_configs.py does on the CPU): the
   quickstart config of every task and a feature extraction, under `16-mixed` and `bf16-mixed`
   (the segmentation quickstart with every loss, multiclass for ce and Lovasz), then each task
   with `channels_last` and with `compile`.
2. A 2-GPU DDP fit of the classification quickstart (`--trainer.strategy ddp --trainer.devices 2`)
   when the machine has two GPUs or more.
3. `benchmarks/acceleration.py --device cuda`: the benchmark networks' throughput, eager / channels_last /
   compile / bf16 / fp16.

Writes `summary.json` and `summary.md` (naming the GPU) under `--output-dir`, prints the markdown,
and exits 1 if any check failed. Record the figures in benchmarks/RESULTS.md with the machine named.

    python benchmarks/gpu_check.py [--output-dir runs/gpu_check] [--skip-ddp] [--skip-benchmark]
        [--benchmark-args "--repeats 3 --tasks classification segmentation"]
    python benchmarks/gpu_check.py --rehearse-on-cpu   # the same steps on the CPU, to check this script
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs/quickstart"
TASKS = ("classification", "segmentation", "superres", "style", "features")
#: segmentation losses (vision_lightning.losses.segmentation.LOSS_NAMES) and the mode each needs
SEGMENTATION_LOSSES = ("bce", "ce", "dice", "jaccard", "focal", "tversky", "lovasz")
MULTICLASS = ["--data.init_args.mode", "multiclass"]  # the data's classes are linked into the model
#: a feature extraction: resnet18 (no download) on synthetic shapes, through `predict`
FEATURES = ["--model", "vision_lightning.FeatureExtractModule", "--model.backbone", "resnet18",
            "--data", "vision_lightning.ImageClassificationDataModule",
            "--data.source", "vision_lightning.data.classification_sources.SyntheticShapes",
            "--data.source.samples", "16", "--data.image_size", "64"]  # fmt: skip

NO_GPU = (
    "No CUDA GPU is visible to torch, so nothing was checked: on a CUDA machine this script runs the "
    "quickstart config of every task with fast_dev_run under 16-mixed and bf16-mixed and with channels_last "
    "and compile, a 2-GPU DDP fit of the classification quickstart when there are two GPUs, and "
    "benchmarks/acceleration.py --device cuda, and writes a summary naming the GPU."
)


def smoke_cases(half: str = "16-mixed") -> list[tuple[str, str, list[str]]]:
    """(name, precision, extra CLI arguments) of the smoke subset; `half` is the float16 precision
    (`bf16-mixed` in a CPU rehearsal, where float16 autocast is not what anyone trains with)."""
    cases = []
    for precision in dict.fromkeys((half, "bf16-mixed")):
        cases += [(task, precision, []) for task in TASKS]
        cases += [
            (f"segmentation-{loss}", precision, ["--model.init_args.loss", loss] + (MULTICLASS if loss in ("ce", "lovasz") else []))
            for loss in SEGMENTATION_LOSSES
            if loss != "bce"  # the quickstart's own loss (bce + dice) ran above
        ]  # fmt: skip
    cases += [(task, half, ["--model.init_args.channels_last", "true"]) for task in TASKS]
    cases += [(task, "32-true", ["--model.init_args.compile", "true"]) for task in TASKS]
    return cases


def smoke_args(task: str, precision: str, accelerator: str, run: Path) -> list[str]:
    """`fit` (features: `predict`) of the task's quickstart config for one step, on `accelerator`."""
    common = ["--trainer.fast_dev_run", "true", "--trainer.accelerator", accelerator, "--trainer.devices", "1",
              "--trainer.precision", precision, "--trainer.enable_progress_bar", "false",
              "--trainer.default_root_dir", str(run)]  # fmt: skip
    if task == "features":
        return ["predict", *FEATURES, *common, "--prediction_writer.output_dir", str(run / "predictions")]
    config = QUICKSTART / f"{task.split('-')[0]}.yaml"
    return ["fit", "--config", str(config), *common, "--checkpoint.dirpath", str(run / "checkpoints")]


def run_smoke(accelerator: str, half: str) -> list[dict[str, Any]]:
    """Every smoke case in this process, one after another; a failure is recorded, not raised."""
    from vision_lightning.cli import main as cli

    results = []
    for name, precision, extra in smoke_cases(half):
        switches = describe(extra)
        torch._dynamo.reset()
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as run:
            try:
                cli([*smoke_args(name, precision, accelerator, Path(run)), *extra])
                error = None
            except BaseException as caught:  # noqa: BLE001  (SystemExit from a CLI error too)
                error = _one_line(caught)
                traceback.print_exc()
        row = {"case": name, "precision": precision, "switches": switches, "ok": error is None,
               "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        if error:
            row["error"] = error
        print(
            f"smoke {name:<22}{precision:<11}{switches:<40} {'ok' if error is None else 'FAILED: ' + error}",
            flush=True,
        )
        results.append(row)
    return results


def describe(extra: list[str]) -> str:
    """`--model.init_args.loss lovasz --data.init_args.mode multiclass` as `loss=lovasz mode=multiclass`."""
    return " ".join(f"{flag.rsplit('.', 1)[-1]}={value}" for flag, value in zip(extra[::2], extra[1::2]))


#: the DDP run: the classification quickstart on 400 synthetic images (100 test images to predict)
DDP_DATA = ["--config", str(QUICKSTART / "classification.yaml"), "--data.init_args.source.init_args.samples", "400",
            "--trainer.accelerator", "gpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
            "--trainer.enable_progress_bar", "false"]  # fmt: skip
DDP_TEST_IMAGES = 100


def run_ddp(output_dir: Path) -> dict[str, Any]:
    """A 2-GPU DDP fit of the classification quickstart, then a DDP predict of its test split, each
    in its own process (Lightning starts the second rank itself): both succeed, and the merged
    predictions.csv has every test image once."""
    run = output_dir / "ddp"
    fit = ["fit", *DDP_DATA, "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(run),
           "--checkpoint.dirpath", str(run / "checkpoints")]  # fmt: skip
    predict = ["predict", *DDP_DATA, "--trainer.logger", "false", "--ckpt_path", str(run / "checkpoints/last.ckpt"),
               "--prediction_writer.output_dir", str(run / "predictions")]  # fmt: skip
    start = time.perf_counter()
    result: dict[str, Any] = {"commands": [], "ok": True}
    for args in (fit, predict):
        command = [sys.executable, "-m", "vision_lightning", *args]
        result["commands"].append(shlex.join(["python", *command[1:]]))
        try:
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
            returncode, tail = done.returncode, (done.stdout + done.stderr)[-2000:]
        except subprocess.TimeoutExpired:
            returncode, tail = None, "timed out after 600 s"
        if returncode != 0:
            result.update(ok=False, failed=args[0], returncode=returncode, output_tail=tail)
            break
    if result["ok"]:
        state = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
        result["global_step"] = state.get("global_step")
        result["callbacks"] = {name: _plain(value) for name, value in state.get("callbacks", {}).items()}
        with (run / "predictions/predictions.csv").open(newline="") as handle:
            paths = [row[0] for row in list(csv.reader(handle))[1:]]
        result["predicted_rows"], result["distinct_rows"] = len(paths), len(set(paths))
        result["ok"] = len(paths) == len(set(paths)) == DDP_TEST_IMAGES
    result["seconds"] = round(time.perf_counter() - start, 1)
    print(f"ddp {'ok' if result['ok'] else 'FAILED'} in {result['seconds']} s", flush=True)
    return result


def run_benchmark(output_dir: Path, device: str, extra: list[str]) -> dict[str, Any]:
    """benchmarks/acceleration.py in its own process (its output streams through)."""
    output = output_dir / f"acceleration-{device}.json"
    variants = ["--variants", "eager", "channels_last", "compile", "compile+channels_last", "bf16",
                "bf16+channels_last", *(["fp16"] if device == "cuda" else [])]  # fmt: skip
    args = [sys.executable, str(ROOT / "benchmarks/acceleration.py"), "--device", device, *variants,
            "--output", str(output), *extra]  # fmt: skip
    start = time.perf_counter()
    returncode = subprocess.run(args, cwd=ROOT).returncode
    result: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/acceleration.py", *args[2:]]),
        "ok": returncode == 0 and output.exists(),
        "seconds": round(time.perf_counter() - start, 1),
        "returncode": returncode,
    }
    if output.exists():
        result["figures"] = json.loads(output.read_text())
    return result


def markdown(summary: dict[str, Any]) -> str:
    from benchmarks.acceleration import markdown_table

    lines = [f"# GPU check: {summary['gpu']}", "", f"torch {summary['torch']}, CUDA {summary['cuda']}, "
             f"{summary['gpu_count']} GPU(s), {summary['seconds']} s", "", "## Config smoke subset (fast_dev_run)", "",
             "| case | precision | switches | result | s |", "|---|---|---|---|---:|"]  # fmt: skip
    for row in summary["smoke"]:
        result = "ok" if row["ok"] else f"FAILED: {row['error'][:150]}"
        lines.append(
            f"| {row['case']} | {row['precision']} | {row['switches']} | {result} | {row['seconds']} |"
        )
    ddp = summary["ddp"]
    lines += ["", "## DDP", ""]
    if "skipped" in ddp:
        lines.append(ddp["skipped"])
    else:
        lines += [f"    {command}" for command in ddp["commands"]]
        lines.append(f"\n{'ok' if ddp['ok'] else 'FAILED'} in {ddp['seconds']} s; predicted rows: "
                     f"{ddp.get('predicted_rows')} ({ddp.get('distinct_rows')} distinct, {DDP_TEST_IMAGES} expected)")  # fmt: skip
    bench = summary["benchmark"]
    lines += ["", "## Throughput (benchmarks/acceleration.py)", ""]
    if "skipped" in bench:
        lines.append(bench["skipped"])
    else:
        lines.append(f"`{bench['command']}`: {'ok' if bench['ok'] else 'FAILED'} in {bench['seconds']} s")
        if "figures" in bench:
            lines += ["", markdown_table(bench["figures"]["results"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", type=Path, default=ROOT / "runs/gpu_check")
    parser.add_argument("--skip-smoke", action="store_true")
    parser.add_argument("--skip-ddp", action="store_true")
    parser.add_argument("--skip-benchmark", action="store_true")
    parser.add_argument("--benchmark-args", default="", help="more arguments for acceleration.py, one string")
    parser.add_argument(
        "--rehearse-on-cpu",
        action="store_true",
        help="run the smoke subset (bf16-mixed for 16-mixed) and a one-step classification benchmark on the CPU",
    )
    args = parser.parse_args(argv)
    if not args.rehearse_on_cpu and not torch.cuda.is_available():
        print(NO_GPU)
        return 0
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    cuda = not args.rehearse_on_cpu
    args.output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summary: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0) if cuda else "none (CPU rehearsal)",
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    summary["smoke"] = (
        [] if args.skip_smoke else run_smoke("gpu" if cuda else "cpu", "16-mixed" if cuda else "bf16-mixed")
    )
    if args.skip_ddp or not cuda or torch.cuda.device_count() < 2:
        summary["ddp"] = {
            "skipped": f"DDP skipped: {summary['gpu_count']} GPU(s) here, it needs 2.",
            "ok": True,
        }
    else:
        summary["ddp"] = run_ddp(args.output_dir)
    if args.skip_benchmark:
        summary["benchmark"] = {"skipped": "benchmark skipped (--skip-benchmark).", "ok": True}
    else:
        extra = shlex.split(args.benchmark_args)
        if not cuda:
            extra = ["--tasks", "classification", "--steps", "1", "--repeats", "1", *extra]
        summary["benchmark"] = run_benchmark(args.output_dir, "cuda" if cuda else "cpu", extra)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    failed = [row["case"] for row in summary["smoke"] if not row["ok"]]
    failed += [part for part in ("ddp", "benchmark") if not summary[part]["ok"]]
    summary["failed"] = failed
    (args.output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = markdown(summary)
    (args.output_dir / "summary.md").write_text(text)
    print(
        f"\n{text}\nsummary: {args.output_dir / 'summary.md'}"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def _plain(value: Any) -> Any:
    """A checkpoint's callback state made JSON-friendly (tensors as numbers, the rest as text)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if torch.is_tensor(value):
        return value.item() if value.numel() == 1 else value.tolist()
    return value if isinstance(value, int | float | str | bool | type(None)) else str(value)


if __name__ == "__main__":
    sys.exit(main())
