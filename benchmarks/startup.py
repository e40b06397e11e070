"""CLI start-up against Lightning's own import: `python -m vision_lightning --help` vs
`python -c "import lightning.pytorch"`, run alternately in fresh processes.

Reports CPU time (user + sys of the child) and wall time, median and range, and the ratio of the
medians (issue 12 asks for at most 1.3x).

    python benchmarks/startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "lightning_import": [sys.executable, "-c", "import lightning.pytorch"],
    "cli_help": [sys.executable, "-m", "vision_lightning", "--help"],
}


def timed_run(command: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one run of `command` in a fresh process."""
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, for its resource usage
        if process.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"error: {' '.join(command)} failed:\n{errors.read().decode()[-2000:]}")
    return usage.ru_utime + usage.ru_stime, wall


def spread(values: list[float]) -> dict[str, float]:
    """Median and range of repeated measurements, rounded (also used by overhead.py)."""
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7, help="runs of each command, alternating")
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    for command in COMMANDS.values():  # warm the file cache once; not counted
        timed_run(command)
    cpu: dict[str, list[float]] = {name: [] for name in COMMANDS}
    wall: dict[str, list[float]] = {name: [] for name in COMMANDS}
    ratios_cpu, ratios_wall = [], []
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            seconds_cpu, seconds_wall = timed_run(command)
            cpu[name].append(seconds_cpu)
            wall[name].append(seconds_wall)
        ratios_cpu.append(cpu["cli_help"][-1] / cpu["lightning_import"][-1])
        ratios_wall.append(wall["cli_help"][-1] / wall["lightning_import"][-1])
    figures = {
        "repeats": args.repeats,
        "cpu_s": {name: spread(values) for name, values in cpu.items()},
        "wall_s": {name: spread(values) for name, values in wall.items()},
        "ratio_cpu_of_medians": round(
            statistics.median(cpu["cli_help"]) / statistics.median(cpu["lightning_import"]), 3
        ),
        "ratio_wall_of_medians": round(
            statistics.median(wall["cli_help"]) / statistics.median(wall["lightning_import"]), 3
        ),
        "ratio_cpu_per_pair": spread(ratios_cpu),
        "ratio_wall_per_pair": spread(ratios_wall),
    }
    print(json.dumps(figures, indent=2))
    if args.output:
        args.output.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
