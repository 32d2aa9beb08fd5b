"""CLI start-up time of short commands: ``trackingbms decode …``, ``read`` (to a closed port), ``--help``.

    python bench/startup.py --json            # measure and check (exit 1 when a target is missed)
    python bench/startup.py --json --no-check # only measure

Each command runs ``--runs`` times in a fresh interpreter (hyperfine-style: min / median of the wall time, and
min of the CPU time the process used, user + system, from ``wait4``); the interpreter's own start-up
(``python -c pass``) is measured in the same run, and the target (< 0.15 s) applies to the CLI's cost above
it. The check uses the CPU time: on a shared machine the wall time measures the queue for a core, the CPU time
what the command costs. ``read`` goes to a closed local port, so it runs everything a real read runs up to the
first byte and then fails fast (exit 1). ``--help`` and ``read --help`` are printed without a target: the
coloured help is rich's Markdown renderer (about 75 ms of imports), paid only when help is asked for.
``load_avg_1m`` is printed so a noisy run is visible.

The commands run with bytecode caching on, as an installed CLI does (pip compiles on install): the warm-up run
writes the ``.pyc`` files into a temporary ``PYTHONPYCACHEPREFIX`` (never into the tree), even when the caller
has ``PYTHONDONTWRITEBYTECODE`` set, which would otherwise make every run compile the project's modules again
(about 30 ms of a ``read``). ``--no-pyc`` measures that way instead (``"bytecode": "compiled each run"``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _check import Target, add_check_argument, check_targets

CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]


def closed_port() -> int:
    """A local TCP port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


COMMANDS: dict[str, list[str]] = {
    "python_baseline": [sys.executable, "-c", "pass"],
    "decode": [*CLI, "decode", "a5", "01 90 08 02 3a 00 00 75 30 01 ed 0d"],
    "read": [*CLI, "read", f"tcp://127.0.0.1:{closed_port()}"],
    "read_help": [*CLI, "read", "--help"],
    "help": [*CLI, "--help"],
}
#: the commands the target applies to (short commands a user runs), the rest are informational
CHECKED = ("decode", "read")
#: the exit status each command is expected to end with (read: "cannot connect", 1)
EXPECTED_RC = {"read": 1}
TARGET_S = 0.15


def timed(name: str, cmd: list[str], runs: int, env: dict[str, str]) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - t0)
        cpus.append(usage.ru_utime + usage.ru_stime)
        rc = os.waitstatus_to_exitcode(status)
        if rc != EXPECTED_RC.get(name, 0):
            raise SystemExit(f"{name}: {' '.join(cmd)} exited {rc}")
    return {
        "min_s": round(min(walls), 3),
        "median_s": round(statistics.median(walls), 3),
        "cpu_min_s": round(min(cpus), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--no-pyc",
        action="store_true",
        help="keep the caller's PYTHONDONTWRITEBYTECODE (compile in every run)",
    )
    add_check_argument(parser)
    args = parser.parse_args()

    env = dict(os.environ)
    pyc_dir = None
    if not args.no_pyc:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        pyc_dir = tempfile.mkdtemp(prefix="tbms-startup-pyc-")
        env["PYTHONPYCACHEPREFIX"] = pyc_dir
    results: dict[str, dict[str, float]] = {}
    try:
        for name, cmd in COMMANDS.items():
            timed(name, cmd, 1, env)  # warm the page cache / .pyc
            results[name] = timed(name, cmd, args.runs, env)
    finally:
        if pyc_dir is not None:
            shutil.rmtree(pyc_dir, ignore_errors=True)
    base, base_cpu = results["python_baseline"]["min_s"], results["python_baseline"]["cpu_min_s"]
    for name in COMMANDS:
        if name != "python_baseline":
            results[name]["above_python_s"] = round(results[name]["min_s"] - base, 3)
            results[name]["cpu_above_python_s"] = round(results[name]["cpu_min_s"] - base_cpu, 3)
    targets = [
        Target(f"{name}: CPU s above python start-up", results[name]["cpu_above_python_s"], "<", TARGET_S)
        for name in CHECKED
    ]
    out = {
        "results": results,
        "target_above_python_s": TARGET_S,
        "bytecode": "compiled each run"
        if pyc_dir is None and os.environ.get("PYTHONDONTWRITEBYTECODE")
        else "cached",
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(out, indent=None if args.json else 2))
    check_targets(targets, check=not args.no_check)


if __name__ == "__main__":
    main()
