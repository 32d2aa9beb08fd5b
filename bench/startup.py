"""CLI start-up time: wall time of ``trackingbms decode …``, ``read --help`` and ``--help``.

    python bench/startup.py --json            # measure and check (exit 1 when a target is missed)
    python bench/startup.py --json --no-check # only measure

Each command runs ``--runs`` times in a fresh interpreter (hyperfine-style: min / median); the
interpreter's own start-up (``python -c pass``) is measured in the same run, and the target
(< 0.15 s) applies to the CLI's cost above it, so a loaded machine shows as a slow baseline rather
than as a regression. ``load_avg_1m`` is printed so a noisy run is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _check import Target, add_check_argument, check_targets

CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]
COMMANDS: dict[str, list[str]] = {
    "python_baseline": [sys.executable, "-c", "pass"],
    "decode": [*CLI, "decode", "a5", "01 90 08 02 3a 00 00 75 30 01 ed 0d"],
    "read_help": [*CLI, "read", "--help"],
    "help": [*CLI, "--help"],
}
TARGET_S = 0.15


def timed(cmd: list[str], runs: int) -> dict[str, float]:
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t0)
    return {"min_s": round(min(walls), 3), "median_s": round(statistics.median(walls), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--runs", type=int, default=10)
    add_check_argument(parser)
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    for name, cmd in COMMANDS.items():
        timed(cmd, 1)  # warm the page cache / .pyc
        results[name] = timed(cmd, args.runs)
    base = results["python_baseline"]["min_s"]
    for name in COMMANDS:
        if name != "python_baseline":
            results[name]["above_python_s"] = round(results[name]["min_s"] - base, 3)
    targets = [
        Target(f"{name}: s above python start-up", results[name]["above_python_s"], "<", TARGET_S)
        for name in ("decode", "read_help", "help")
    ]
    out = {
        "results": results,
        "target_above_python_s": TARGET_S,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(out, indent=None if args.json else 2))
    check_targets(targets, check=not args.no_check)


if __name__ == "__main__":
    main()
