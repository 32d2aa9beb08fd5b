"""History read benchmark: one pack's history at 10 s, read back as 1,000 points over real HTTP.

    python bench/history.py --json                      # both backends (PostgreSQL if reachable)
    python bench/history.py --json --backends sqlite --days 30 --no-check
    python bench/history.py --json --compare ac65cbc  # beside the first storage design, same run

``--days`` (default 30) of one 16S pack at 10 s go in through ``POST /api/v1/ingest`` (batches of
500, as a gateway sends them: samples and 1-minute / 1-hour rollups written by the real ingest path), are
compacted into blocks past the hot hour (as the server's task would), then
``GET /api/v1/batteries/{id}/history?points=1000`` is timed ``--reps`` times per span (6 h, 12 h, 24 h,
7 d, 30 d, 1 y, each ending at the newest sample; the 1 y span holds only the ``--days`` filled) with a
personal API token. 6 h and 12 h have buckets under a minute, read from the raw samples (blocks and the
hot hour); the longer spans from the rollups. Prints one JSON object per backend with p50 / p95 (nearest
rank) and the server's CPU per read (``server_cpu_ms``: what a shared machine bends least) per span, the
bucket size the server chose and ``server_cpu_pct`` (server process CPU while reading; the machine is
shared, so a low figure means it waited for a core). Target: p95 < 100 ms per span; exit 1 when missed
(``--no-check`` to only measure). ``--compare REV``: revision REV's own copy of this script runs first per
backend (bench/_compare.py); its figures come out as ``previous``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _check import Target, add_check_argument, check_targets
from _compare import add_compare_argument, run_previous
from ingest import PG_ADMIN_URL, free_port, load, proc_cpu_s, provision

SPANS_H = {"6h": 6, "12h": 12, "24h": 24, "7d": 24 * 7, "30d": 24 * 30, "1y": 24 * 365}
TARGET_P95_MS = 100.0
STEP_S = 10
BATTERY = "d0-b0"  # bench/ingest.py's provision() naming


def ts_text(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def make_batches(end: datetime, days: int, batch: int) -> list[tuple[int, bytes]]:
    n = days * 86_400 // STEP_S
    out: list[tuple[int, bytes]] = []
    chunk: list[dict[str, Any]] = []
    for i in range(n):
        k = i % 8640  # a daily cycle, so that min / max / mean vary per bucket
        chunk.append(
            {
                "battery_id": BATTERY,
                "seq": i,
                "ts": ts_text(end - timedelta(seconds=(n - i) * STEP_S)),
                "source": "a5-uart",
                "via": "wifi",
                "voltage_v": round(50.0 + (k % 700) * 0.01, 1),
                "current_a": round(-20 + (k % 400) * 0.1, 1),
                "soc_pct": round(20 + (k % 800) * 0.1, 1),
                "remaining_ah": 100.0,
                "cycles": 42,
                "state": "discharging",
                "charge_mos": True,
                "discharge_mos": True,
                "cells_mv": [3200 + ((i * 7 + c * 13) % 160) for c in range(16)],
                "temps_c": [20.0 + (k % 15), 25.0, 23.0, 26.0],
                "balancing": [],
                "faults": [],
                "fault_code": 0,
            }
        )
        if len(chunk) == batch:
            out.append((0, orjson.dumps({"samples": chunk})))
            chunk = []
    if chunk:
        out.append((0, orjson.dumps({"samples": chunk})))
    return out


async def compact(url: str) -> int:
    """Move the samples past the hot window into blocks, as the server's compaction task would 10 minutes
    after start: without it every read would be of hot rows, which a real server serves only for the last
    hour."""
    from trackingbms.server import provisioning as p

    async with p.open_store(url) as store:
        return (await store.compact()).samples


async def read_token(url: str) -> str:
    from trackingbms.server import provisioning as p

    await p.create_user(url, "bench", "bench@example.com", "bench-password", "viewer")
    async with p.open_store(url) as store:
        ts = store.tenant(await store.tenant_by_name("bench"))
        return (await ts.create_api_token("bench@example.com", "bench", "read", 1))["token"]


def time_reads(base: str, token: str, end: datetime, reps: int, pid: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {token}"}) as c:
        for name, hours in SPANS_H.items():
            params = {"from": ts_text(end - timedelta(hours=hours)), "to": ts_text(end), "points": 1000}
            url = f"/api/v1/batteries/{BATTERY}/history"
            first = c.get(url, params=params)  # warm-up (and the shape of the reply)
            if first.status_code != 200:
                raise RuntimeError(f"history answered {first.status_code}: {first.text[:200]}")
            body = first.json()
            lat = []
            cpu0 = proc_cpu_s(pid)
            for _ in range(reps):
                t0 = time.perf_counter()
                r = c.get(url, params=params)
                lat.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
            cpu_s = proc_cpu_s(pid) - cpu0
            lat.sort()
            out[name] = {
                # server CPU per read (SQLite: the query too; PostgreSQL's own work is not in it):
                # what a loaded machine bends least
                "server_cpu_ms": round(1000 * cpu_s / reps, 1) if cpu0 >= 0 else None,
                "p50_ms": round(statistics.median(lat), 1),
                # nearest rank: of 40 reads the 38th (int(n * 0.95) was the 20th of 20, the slowest)
                "p95_ms": round(lat[math.ceil(len(lat) * 0.95) - 1], 1),
                "points": len(body["t"]),
                "bucket_s": body["bucket_s"],
            }
    return out


def run_backend(backend: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    admin_db = None
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp / 'history.db'}"
    else:
        import asyncpg

        admin_db = "tbms_bhist_" + uuid.uuid4().hex[:8]

        async def admin(sql: str) -> None:
            conn = await asyncpg.connect(PG_ADMIN_URL)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(admin(f'CREATE DATABASE "{admin_db}"'))
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{admin_db}"
    try:
        tokens = asyncio.run(provision(url, 1, 1))
        token = asyncio.run(read_token(url))
        end = datetime.now(UTC).replace(microsecond=0)
        batches = make_batches(end, args.days, 500)
        port = free_port()
        env = {**os.environ, "TRACKINGBMS_INGEST_RATE_PER_S": "1000000"}
        env["TRACKINGBMS_INGEST_BURST"] = "1000000"
        cmd = [sys.executable, "-c", "from trackingbms.cli import main; main()", "server"]
        cmd += ["--port", str(port), "--database-url", url, "--data-dir", str(tmp), "--log-level", "warning"]
        proc = subprocess.Popen(cmd, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("server did not start")
                time.sleep(0.1)
            stored, fill_s, _ = asyncio.run(load([base], tokens, batches, 4))
            compacted = asyncio.run(compact(url))
            cpu0, t0 = proc_cpu_s(proc.pid), time.perf_counter()
            spans = time_reads(base, token, end, args.reps, proc.pid)
            server_cpu_s, elapsed = proc_cpu_s(proc.pid) - cpu0, time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(30)
        return {
            "backend": "postgresql" if backend == "postgres" else "sqlite",
            "spans": spans,
            "server_cpu_pct": round(100 * server_cpu_s / elapsed) if server_cpu_s >= 0 else None,
            "data_days": args.days,
            "step_s": STEP_S,
            "samples": stored,
            "compacted_samples": compacted,
            "fill_samples_per_s": round(stored / fill_s),
            "reps": args.reps,
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "target_p95_ms": TARGET_P95_MS,
        }
    finally:
        if admin_db:
            asyncio.run(admin(f'DROP DATABASE IF EXISTS "{admin_db}" WITH (FORCE)'))


def pg_reachable() -> bool:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
        await conn.close()

    try:
        asyncio.run(go())
        return True
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print JSON lines only")
    ap.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    ap.add_argument("--days", type=int, default=30, help="days of history at 10 s to fill")
    ap.add_argument("--reps", type=int, default=40, help="timed reads per span (p95: the 38th of 40)")
    add_check_argument(ap)
    add_compare_argument(ap)
    args = ap.parse_args()
    targets: list[Target] = []
    same = ["--days", str(args.days), "--reps", str(args.reps)]
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if backend == "postgres" and not pg_reachable():
            print(json.dumps({"backend": "postgresql", "skipped": f"not reachable at {PG_ADMIN_URL}"}))
            continue
        previous = run_previous("history.py", args.compare, backend, same) if args.compare else None
        with tempfile.TemporaryDirectory() as tmp:
            result = run_backend(backend, args, Path(tmp))
        if previous is not None:
            result["previous"] = previous
        for span, r in result["spans"].items():
            targets.append(Target(f"{result['backend']} {span} p95 ms", r["p95_ms"], "<", TARGET_P95_MS))
        print(json.dumps(result, indent=None if args.json else 2), flush=True)
    check_targets(targets, check=not args.no_check)


if __name__ == "__main__":
    main()
