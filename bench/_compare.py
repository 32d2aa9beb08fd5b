"""The previous design's figures measured in the same run: ``--compare REV`` exports git revision ``REV``
(its ``src`` and ``bench``) to a temporary folder and runs *that revision's own* benchmark script there, with
its own code first on ``PYTHONPATH`` (server, migrations and provisioning alike), for one backend at a time,
right before the current code's run of the same backend, so both see the same machine load.

    previous = run_previous("ingest.py", "ac65cbc", "sqlite", ["--samples", "100000"])  # {...} or {"error"}
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def add_compare_argument(ap: Any) -> None:
    ap.add_argument(
        "--compare",
        metavar="REV",
        help="also run git revision REV's own copy of this benchmark per backend, just before this one "
        "(e.g. ac65cbc, the first storage design), and print its figures as 'previous'",
    )


def run_previous(script: str, rev: str, backend: str, argv: list[str]) -> dict[str, Any]:
    """That revision's result for ``backend`` (its JSON line), or ``{"error": ...}``: never raises."""
    with tempfile.TemporaryDirectory(prefix="bench-prev-") as tmp:
        archive = Path(tmp) / "rev.tar"
        try:
            subprocess.run(
                ["git", "-C", str(REPO), "archive", "-o", str(archive), rev, "src", "bench"],
                check=True,
                capture_output=True,
            )
        except subprocess.CalledProcessError as e:
            return {"rev": rev, "error": f"git archive {rev}: {e.stderr.decode().strip()[:200]}"}
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        env = {**os.environ, "PYTHONPATH": str(Path(tmp) / "src")}
        cmd = [sys.executable, str(Path(tmp) / "bench" / script), "--json", "--no-check"]
        cmd += ["--backends", backend]
        r = subprocess.run(cmd + argv, env=env, capture_output=True, text=True)
        for line in r.stdout.splitlines():
            if line.startswith("{"):
                return {"rev": rev, **json.loads(line)}
        return {"rev": rev, "error": (r.stderr.strip().splitlines() or ["no output"])[-1][:300]}
