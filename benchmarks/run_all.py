"""Run every benchmark with the shared data: `make bench` or `python benchmarks/run_all.py --data-root DIR`."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["classification.py", "segmentation.py", "superres.py", "features.py", "detection.py"]
# synthetic images or none: no --data-root
WITHOUT_DATA = ["finetuning.py", "acceleration.py", "overhead.py", "startup.py", "memory.py", "fast_data.py"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", default=str(HERE.parents[1] / "shared/data"))
    args = parser.parse_args()
    for script in BENCHMARKS:
        print(f"== {script}", flush=True)
        subprocess.run(
            [sys.executable, str(HERE / script), "--data-root", args.data_root], check=True, cwd=HERE.parent
        )
    for script in WITHOUT_DATA:
        print(f"== {script}", flush=True)
        subprocess.run([sys.executable, str(HERE / script)], check=True, cwd=HERE.parent)
    print("== time_to_accuracy.py", flush=True)
    subprocess.run(time_to_accuracy_command(args.data_root), check=True, cwd=HERE.parent)


def time_to_accuracy_command(data_root: str) -> list[str]:
    """The CIFAR-10 recipe of RESULTS' "time to accuracy", 3 runs and the hand-written loop once,
    reading the data under `data_root` (about 40 minutes on 2 CPU cores)."""
    root = Path(data_root)
    return [
        sys.executable, str(HERE / "time_to_accuracy.py"),
        "--config", str(HERE.parent / "configs/classification/cifar10_fast.yaml"), "--repeats", "3", "--plain", "1",
        "--", "--data.init_args.source.init_args.root", str(root / "cifar10"),
        "--data.init_args.source.init_args.test_root", str(root / "cifar10-small/test"),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
