"""Run every benchmark with the shared data: `make bench` or `python benchmarks/run_all.py --data-root DIR`."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["classification.py", "segmentation.py", "superres.py", "features.py"]
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


if __name__ == "__main__":
    main()
