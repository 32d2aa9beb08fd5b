"""Validation and packing alone: CPU µs per sample of ``packing.validate_batch`` on 500-sample 16S batches
(bench/ingest.py's samples), beside a previous revision's ``packing.py`` loaded in the same process and run
interleaved with it, so both see the same machine load and caches.

    python bench/validate.py --json                    # against main's packing.py
    python bench/validate.py --json --compare 9663d1e  # against any revision

Prints one JSON object per case: ``shared-ts`` is bench/ingest.py's load (4 packs per gateway read at the
same instant: 125 distinct ``ts`` per batch), ``own-ts`` one pack per gateway (500 distinct ``ts``, the
worst case for time parsing), ``offset-ts`` the same with ``+02:00`` offsets instead of ``Z`` (a gateway
that sends local time). ``us_per_sample`` is the best of ``--repeats`` runs (``time.process_time``), and
``previous_us_per_sample`` the previous code's; ``json_us_per_sample`` is orjson.loads of the body (what
the HTTP route does before validation), for scale. Both codes' results are checked equal first.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from ingest import make_batches

REPO = Path(__file__).resolve().parent.parent
PACKING = "src/trackingbms/server/store/packing.py"


def load_previous(rev: str) -> ModuleType:
    """``packing.py`` of git revision ``rev`` as a module of its own (it imports only the model and the
    analytics helpers, which it takes from the current code)."""
    text = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{rev}:{PACKING}"], check=True, capture_output=True, text=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="bench-validate-")) / "packing_previous.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("packing_previous", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_offset(body: bytes, hours: int) -> bytes:
    """The batch with each ``...Z`` time written as the same instant in local time at UTC+``hours``."""
    obj = orjson.loads(body)
    for s in obj["samples"]:
        t = datetime.fromisoformat(s["ts"]).astimezone(UTC) + timedelta(hours=hours)
        s["ts"] = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}+{hours:02d}:00"
    return orjson.dumps(obj)


def cpu_per_sample(fn: Any, raw: Any, now_ms: int, loops: int, samples: int = 500) -> float:
    t0 = time.process_time()
    for _ in range(loops):
        fn(raw, now_ms)
    return 1e6 * (time.process_time() - t0) / loops / samples


def measure(case: str, body: bytes, current: ModuleType, previous: ModuleType, args: Any) -> dict[str, Any]:
    raw = orjson.loads(body)["samples"]
    now_ms = int(time.time() * 1000) + 3_600_000 * 3  # the +02:00 case is the same instant: within skew
    got, want = current.validate_batch(raw, now_ms), previous.validate_batch(raw, now_ms)
    same = [tuple(p) for p in got[0]] == [tuple(p) for p in want[0]] and got[1] == want[1]
    if not same or got[1]:
        raise SystemExit(f"{case}: the current and previous validate_batch disagree, or rejected samples")
    for _ in range(args.loops):  # warm-up, not measured (first calls, caches, the CPU's clock)
        previous.validate_batch(raw, now_ms)
        current.validate_batch(raw, now_ms)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(args.repeats):  # interleaved: a burst of load on the machine hits both
        theirs.append(cpu_per_sample(previous.validate_batch, raw, now_ms, args.loops))
        ours.append(cpu_per_sample(current.validate_batch, raw, now_ms, args.loops))
    json_us = min(cpu_per_sample(lambda b, _: orjson.loads(b), body, 0, args.loops) for _ in range(3))
    return {
        "case": case,
        "samples": len(raw),
        "distinct_ts": len({s["ts"] for s in raw}),
        "us_per_sample": round(min(ours), 2),
        "previous_us_per_sample": round(min(theirs), 2),
        "speedup": round(min(theirs) / min(ours), 2),
        "json_us_per_sample": round(json_us, 2),
        "previous_rev": args.compare,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print JSON lines only")
    ap.add_argument("--compare", default="main", metavar="REV", help="the revision to compare with (main)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--loops", type=int, default=40, help="batches per timed run")
    args = ap.parse_args()
    from trackingbms.server.store import packing

    previous = load_previous(args.compare)
    shared = make_batches(1, 4, 500, 500)[0][1]
    own = make_batches(1, 1, 500, 500)[0][1]
    for case, body in (("shared-ts", shared), ("own-ts", own), ("offset-ts", with_offset(own, 2))):
        out = measure(case, body, packing, previous, args)
        print(
            json.dumps(out)
            if args.json
            else f"{case:>10}: {out['us_per_sample']} µs/sample (previous {out['previous_us_per_sample']}, "
            f"×{out['speedup']}); orjson.loads {out['json_us_per_sample']} µs/sample"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
