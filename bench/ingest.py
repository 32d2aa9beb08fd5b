"""Ingest benchmark: 16S samples in batches of 500 over real HTTP to `trackingbms server` (uvicorn, one
process), into SQLite and into PostgreSQL. The load generator runs on the same machine.

    python bench/ingest.py --json                 # both backends (PostgreSQL if reachable)
    python bench/ingest.py --json --samples 100000 --backends sqlite
    python bench/ingest.py --json --compare ac65cbc   # beside the first storage design, same run
    python bench/ingest.py --json --servers 2         # two server processes on one database
    python bench/ingest.py --json --store-only        # CPU µs per sample of the ingest service, no HTTP
    python bench/ingest.py --json --store-only --samples 40000 --compare main   # beside main's, same window

Prints one JSON object per backend:
{"backend", "samples_per_s", "p50_ms", "p99_ms", "bytes_per_sample", ...}. ``bytes_per_sample`` is the
on-disk size of the hot segments table and its indexes (one row per stream and batch, store/segments.py;
SQLite: dbstat pages; PostgreSQL: pg_total_relation_size, with its TOAST table) divided by the samples it
holds; ``rollup_bytes_per_sample`` is the 1-minute and 1-hour
rollup tables on top (samples here are 1 Hz per pack, so 60 per rollup row); ``server_cpu_pct`` is the server
process's CPU use while loaded (the machine is shared: below ~90 % it waited for a core), and
``server_cpu_us_per_sample`` its CPU time per stored sample (the figure a loaded machine bends least).
``--compare REV`` runs revision REV's own copy of this script first, per backend (bench/_compare.py), and
adds its figures as ``previous``.
After the load, every stored sample is compacted into compressed blocks (as the server does past its hot
window, store/cold.py): ``cold_bytes_per_sample`` is the blocks table with its index (PostgreSQL: with its
TOAST table) per sample, measured in the same run as the hot figure; ``compact_samples_per_s`` how fast
the compaction went. The load's samples repeat with a short period (zlib finds the repetition), so
``realistic_cold_bytes_per_sample`` compacts a second database of noisy 16S samples at the Daly wire's
resolution (random-walk current at 0.1 A, cells 1 mV with ±1 mV noise around their own offsets, 4 temps
at 1 °C, 1 s ± 20 ms polls, every field in every sample): the figure the ≤ 40 B target is checked on.
``--servers N`` starts N ``trackingbms server`` processes on one database (the API is stateless), each on its
own port, device d sent to process d mod N (what a load balancer pinning gateways would do); ``server_cpu_*``
sum all. Every process runs the alarm service as a server does by default: the one holding the alarm-feed
lease evaluates every stored sample (docs/alarms.md). Evaluation runs off the request, so after the load the
bench waits until the holder has evaluated every sample: ``alarm_catchup_s`` is how long that took past the
load's end, and ``evaluated_samples_per_s`` = samples / (load time + catch-up), the rate at which samples
were both stored and evaluated (the figure the ingest targets are judged on).
Targets (issue 14): ≥ 40,000 samples/s SQLite, ≥ 60,000 PostgreSQL, p99 under 150 ms per 500-sample batch,
≤ 160 bytes per hot sample (issue 4), ≤ 40 per compacted realistic sample.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from _check import Target, add_check_argument, check_targets
from _compare import add_compare_argument, run_previous

PG_ADMIN_URL = os.environ.get("TRACKINGBMS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux), -1 if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return -1.0


def make_batches(devices: int, batteries_per_device: int, total: int, batch: int) -> list[tuple[int, bytes]]:
    """Pre-serialised batches (device index, JSON body); each device's batteries interleaved at 1 Hz."""
    per_device = total // devices
    per: list[list[tuple[int, bytes]]] = []
    now = datetime.now(UTC)
    for d in range(devices):
        samples: list[dict[str, Any]] = []
        steps = per_device // batteries_per_device
        for step in range(steps):
            ts = now - timedelta(seconds=steps - step)
            tstr = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
            for b in range(batteries_per_device):
                k = step + b
                samples.append(
                    {
                        "battery_id": f"d{d}-b{b}",
                        "seq": step,
                        "ts": tstr,
                        "source": "a5-uart",
                        "via": "wifi",
                        "voltage_v": round(52.0 + (k % 50) * 0.02, 1),
                        "current_a": round(-10 + (k % 200) * 0.1, 1),
                        "soc_pct": round(50 + (k % 500) * 0.1, 1),
                        "remaining_ah": 100.0,
                        "cycles": 42,
                        "state": "discharging",
                        "charge_mos": True,
                        "discharge_mos": True,
                        "charger_connected": False,
                        "load_connected": True,
                        "cells_mv": [3300 + ((k * 7 + c * 13) % 40) for c in range(16)],
                        "temps_c": [24.0 + (k % 5), 25.0, 23.0, 26.0],
                        "balancing": [],
                        "faults": [],
                        "fault_code": 0,
                    }
                )
        per.append(
            [(d, orjson.dumps({"samples": samples[i : i + batch]})) for i in range(0, len(samples), batch)]
        )
    # round-robin over devices so that concurrent requests come from different gateways, each in seq order
    return [b for group in zip(*per, strict=False) for b in group]


async def provision(url: str, devices: int, batteries_per_device: int) -> list[str]:
    from trackingbms.server import provisioning as p

    tokens = []
    async with p.open_store(url) as store:
        await p.create_tenant(store, "bench")
        await p.create_site(store, "bench", "site")
        for d in range(devices):
            tokens.append((await p.provision_device(store, "bench", f"gw-{d}"))["token"])
            for b in range(batteries_per_device):
                await p.create_battery(store, "bench", "site", f"d{d}-b{b}", device=f"gw-{d}")
    return tokens


async def sizes(url: str) -> tuple[int, int, int]:
    """(hot samples, bytes of the hot segments table + indexes, bytes of the 1-minute and 1-hour rollups)"""
    from sqlalchemy import func, select

    from trackingbms.server.db import make_engine, sample_segments
    from trackingbms.server.store import Store

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(func.coalesce(func.sum(sample_segments.c.n), 0)))).scalar_one()
            if engine.dialect.name == "sqlite":
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            else:
                await conn.commit()
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                # only to settle the visibility map
                await conn.exec_driver_sql("VACUUM ANALYZE sample_segments")
        async with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                q = "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE '%rollup_1_%'"
            else:
                q = "SELECT pg_total_relation_size('rollup_1m') + pg_total_relation_size('rollup_1h')"
            rollup = int((await conn.exec_driver_sql(q)).scalar())
        return rows, await Store(engine).samples_bytes(), rollup
    finally:
        await engine.dispose()


async def compact_all(url: str) -> dict[str, Any]:
    """Compact every sample into blocks (no hot window) and measure the blocks' size on disk."""
    from sqlalchemy import func, select

    from trackingbms.server.db import make_engine, sample_blocks
    from trackingbms.server.store import Store

    engine = make_engine(url)
    try:
        store = Store(engine)
        t0 = time.perf_counter()
        res = await store.compact(before_ms=2**62)
        elapsed = time.perf_counter() - t0
        async with engine.connect() as conn:
            n = (await conn.execute(select(func.coalesce(func.sum(sample_blocks.c.n), 0)))).scalar_one()
            if engine.dialect.name == "sqlite":
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            else:
                await conn.commit()
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("VACUUM ANALYZE sample_blocks")
        nbytes = await store.cold_bytes()
        return {
            "cold_bytes_per_sample": round(nbytes / n, 1) if n else None,
            "cold_samples": int(n),
            "cold_blocks": res.blocks,
            "compact_samples_per_s": round(res.samples / elapsed) if elapsed else None,
        }
    finally:
        await engine.dispose()


def realistic_samples(battery_id: str, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` full 16S samples of one pack at 1 Hz ending now, noisy as a BMS reads (see the docstring)."""
    import random

    rng = random.Random(seed)
    offsets = [rng.randint(-15, 15) for _ in range(16)]
    temps = [25.0 + rng.randint(-2, 2) for _ in range(4)]
    current, soc = 0.0, 60.0
    ts_ms = int(time.time() * 1000) - n * 1000 - 60_000
    out = []
    for i in range(n):
        ts_ms += 1000 + rng.randint(-20, 20)
        current = max(-50.0, min(50.0, current + rng.choice((-0.3, -0.1, 0.0, 0.0, 0.1, 0.3))))
        soc = max(0.0, min(100.0, soc + current / 3600 / 1.0))
        base = 3200 + soc * 1.5 + current * 2
        cells = [int(base + off + rng.randint(-1, 1)) for off in offsets]
        if i % 300 == 0:
            temps = [t + rng.choice((-1.0, 0.0, 1.0)) for t in temps]
        out.append(
            {
                "battery_id": battery_id,
                "seq": i,
                "ts": datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds"),
                "source": "a5-uart",
                "via": "wifi",
                "voltage_v": round(sum(cells) / 1000, 1),
                "current_a": round(current, 1),
                "soc_pct": round(soc, 1),
                "remaining_ah": round(soc, 1),
                "cycles": 42,
                "state": "discharging" if current < 0 else "charging" if current > 0 else "idle",
                "charge_mos": True,
                "discharge_mos": True,
                "charger_connected": current > 0,
                "load_connected": current < 0,
                "cells_mv": cells,
                "temps_c": list(temps),
                "balancing": [],
                "faults": [],
                "fault_code": 0,
            }
        )
    return out


async def store_cpu(url: str, args: argparse.Namespace, parts: int = 4) -> dict[str, Any]:
    """``--store-only``: this process's CPU time per sample through IngestService.ingest (validate, pack,
    store, commit; no HTTP, no alarm service), the load's batches in ``parts`` runs, best run first: CPU
    time, so what other processes on the machine do changes it least (they still share its caches)."""
    from trackingbms.server import provisioning as p
    from trackingbms.server.ingest import IngestService

    tokens = await provision(url, args.devices, args.batteries)
    batches = [
        (d, orjson.loads(body)["samples"])
        for d, body in make_batches(args.devices, args.batteries, args.samples, args.batch)
    ]
    async with p.open_store(url) as store:
        devices = [await store.device_for_token(t) for t in tokens]
        svc = IngestService(store, max_future_ms=3_600_000)
        for d, batch in batches[: args.devices]:  # warm-up, not measured
            await svc.ingest(devices[d], batch)  # type: ignore[arg-type]
        rest = batches[args.devices :]
        per_part = max(1, len(rest) // parts)
        figures = []
        for k in range(0, len(rest), per_part):
            cpu0, stored = time.process_time(), 0
            for d, batch in rest[k : k + per_part]:
                stored += (await svc.ingest(devices[d], batch)).accepted  # type: ignore[arg-type]
            figures.append(round(1e6 * (time.process_time() - cpu0) / max(1, stored), 1))
    return {"store_cpu_us_per_sample": min(figures), "store_cpu_us_per_sample_runs": figures}


async def realistic_cold(url: str, packs: int, per_pack: int) -> dict[str, Any]:
    """Store noisy samples through the ingest service (no HTTP: only the layout is measured here), compact
    them all and measure the blocks on disk."""
    from trackingbms.server import provisioning as p
    from trackingbms.server.ingest import IngestService

    async with p.open_store(url) as store:
        await p.create_tenant(store, "real")
        await p.create_site(store, "real", "site")
        token = (await p.provision_device(store, "real", "gw"))["token"]
        for b in range(packs):
            await p.create_battery(store, "real", "site", f"real-{b}", device="gw")
        device = await store.device_for_token(token)
        assert device is not None
        svc = IngestService(store, max_future_ms=3_600_000)
        for b in range(packs):
            batch = realistic_samples(f"real-{b}", per_pack, seed=b)
            for i in range(0, len(batch), 500):
                await svc.ingest(device, batch[i : i + 500])
    out = await compact_all(url)
    return {"realistic_" + k: v for k, v in out.items() if k in ("cold_bytes_per_sample", "cold_samples")}


async def load(
    base_urls: list[str], tokens: list[str], batches: list[tuple[int, bytes]], concurrency: int
) -> Any:
    latencies: list[float] = []
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for b in batches:
        queue.put_nowait(b)
    stored = 0

    async def worker(clients: list[httpx.AsyncClient]) -> None:
        nonlocal stored
        while not queue.empty():
            d, body = queue.get_nowait()
            t0 = time.perf_counter()
            r = await clients[d % len(clients)].post(
                "/api/v1/ingest",
                content=body,
                headers={"Authorization": f"Bearer {tokens[d]}", "Content-Type": "application/json"},
            )
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise RuntimeError(f"ingest answered {r.status_code}: {r.text[:200]}")
            stored += r.json()["accepted"]

    limits = httpx.Limits(max_connections=concurrency)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=u, timeout=120, limits=limits))
            for u in base_urls
        ]
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(clients) for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return stored, elapsed, latencies


async def pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_database(backend: str, tmp: Path, name: str = "bench") -> Iterator[str]:
    """The URL of a new, empty database: a file in ``tmp`` (SQLite) or a database dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp / (name + '.db')}"
        return
    db = f"tbms_{name}_{uuid.uuid4().hex[:8]}"
    asyncio.run(pg_admin(f'CREATE DATABASE "{db}"'))
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db}"
    finally:
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


def run_store_only(backend: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The store path's CPU per sample in this process (``--store-only``), on a fresh database."""
    with fresh_database(backend, tmp) as url:
        out = asyncio.run(store_cpu(url, args))
    return {"backend": "postgresql" if backend == "postgres" else "sqlite", **out, "samples": args.samples}


def evaluated(base: str) -> float:
    """The samples the server at ``base`` has evaluated (its /metrics; the bench is a loopback client)."""
    for line in httpx.get(base + "/metrics", timeout=5).text.splitlines():
        if line.startswith("trackingbms_alarm_samples_evaluated_total "):
            return float(line.split()[1])
    return 0.0


def wait_evaluated(bases: list[str], total: int, t_end: float, limit_s: float = 600.0) -> float | None:
    """Seconds past ``t_end`` until the servers evaluated ``total`` samples (None: not within ``limit_s``)."""
    while True:
        if sum(evaluated(b) for b in bases) >= total:
            return max(0.0, time.monotonic() - t_end)
        if time.monotonic() - t_end > limit_s:
            return None
        time.sleep(0.05)


def run_backend(backend: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    with fresh_database(backend, tmp) as url:
        return _run_backend(backend, args, tmp, url)


def _run_backend(backend: str, args: argparse.Namespace, tmp: Path, url: str) -> dict[str, Any]:
    tokens = asyncio.run(provision(url, args.devices, args.batteries))
    batches = make_batches(args.devices, args.batteries, args.samples, args.batch)
    env = {
        **os.environ,
        "TRACKINGBMS_INGEST_RATE_PER_S": "1000000",
        "TRACKINGBMS_INGEST_BURST": "1000000",
    }
    procs: list[subprocess.Popen[bytes]] = []
    bases: list[str] = []
    try:
        for _ in range(args.servers):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        "from trackingbms.cli import main; main()",
                        "server",
                        "--port",
                        str(port),
                        "--database-url",
                        url,
                        "--data-dir",
                        str(tmp),
                        "--log-level",
                        "warning",
                    ],
                    env=env,
                )
            )
            bases.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        for base, proc in zip(bases, procs, strict=True):
            while True:
                try:
                    if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("server did not start")
                time.sleep(0.1)
        # warm-up: one batch per device, not measured (first partition, caches)
        warm = [b for b in batches[: args.devices]]
        warm_stored = asyncio.run(load(bases, tokens, warm, args.concurrency))[0]
        cpu0 = sum(proc_cpu_s(proc.pid) for proc in procs)
        stored, elapsed, lat = asyncio.run(load(bases, tokens, batches[args.devices :], args.concurrency))
        t_end = time.monotonic()
        load_cpu_s = sum(proc_cpu_s(proc.pid) for proc in procs) - cpu0
        catchup_s = wait_evaluated(bases, stored + warm_stored, t_end)
        server_cpu_s = sum(proc_cpu_s(proc.pid) for proc in procs) - cpu0  # the evaluation's CPU included
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    rows, nbytes, rollup_bytes = asyncio.run(sizes(url))
    cold = asyncio.run(compact_all(url))
    with fresh_database(backend, tmp, "real") as real_url:
        cold |= asyncio.run(realistic_cold(real_url, 4, args.samples // 8))
    lat_ms = sorted(x * 1000 for x in lat)
    return {
        "backend": "postgresql" if backend == "postgres" else "sqlite",
        "samples_per_s": round(stored / elapsed),
        "alarm_catchup_s": None if catchup_s is None else round(catchup_s, 2),
        "evaluated_samples_per_s": None if catchup_s is None else round(stored / (elapsed + catchup_s)),
        "p50_ms": round(statistics.median(lat_ms), 1),
        "p99_ms": round(lat_ms[min(len(lat_ms) - 1, int(len(lat_ms) * 0.99))], 1),
        "bytes_per_sample": round(nbytes / rows, 1) if rows else None,
        "rollup_bytes_per_sample": round(rollup_bytes / rows, 1) if rows else None,
        **cold,
        "samples": stored,
        "server_cpu_pct": round(100 * load_cpu_s / elapsed) if load_cpu_s >= 0 else None,
        # server CPU per stored sample, its evaluation included: what a loaded machine changes least
        "server_cpu_us_per_sample": (
            round(1e6 * server_cpu_s / max(1, stored), 1) if server_cpu_s >= 0 else None
        ),
        "rows": rows,
        "batch": args.batch,
        "concurrency": args.concurrency,
        "servers": args.servers,
        "cells": 16,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print JSON lines only")
    ap.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    ap.add_argument("--samples", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--batteries", type=int, default=4, help="per device")
    ap.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    ap.add_argument("--servers", type=int, default=1, help="server processes on the one database")
    ap.add_argument(
        "--store-only",
        action="store_true",
        help="no HTTP server: this process's CPU time per sample through the ingest service (no targets)",
    )
    add_check_argument(ap)
    add_compare_argument(ap)
    args = ap.parse_args()
    targets: list[Target] = []
    same = ["--samples", str(args.samples), "--batch", str(args.batch), "--devices", str(args.devices)]
    same += ["--batteries", str(args.batteries), "--concurrency", str(args.concurrency)]
    for backend in args.backends.split(","):
        backend = backend.strip()
        if backend == "postgres":
            try:
                socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
            except OSError:
                print(json.dumps({"backend": "postgresql", "skipped": "not reachable on 127.0.0.1:5432"}))
                continue
        argv = [*same, "--store-only"] if args.store_only else same
        previous = run_previous("ingest.py", args.compare, backend, argv) if args.compare else None
        with tempfile.TemporaryDirectory() as tmp:
            if args.store_only:
                only = run_store_only(backend, args, Path(tmp))
                print(json.dumps({**only, "previous": previous} if previous is not None else only))
                continue
            result = run_backend(backend, args, Path(tmp))
        if previous is not None:
            result["previous"] = previous
        print(
            json.dumps(result)
            if args.json
            else f"{result['backend']:>10}: {result['samples_per_s']:>8} samples/s  "
            f"(evaluated {result['evaluated_samples_per_s']}/s)  "
            f"p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms  {result['bytes_per_sample']} B/sample"
            f" (compacted: {result['cold_bytes_per_sample']},"
            f" realistic {result['realistic_cold_bytes_per_sample']})"
            + (f"  (previous {previous.get('samples_per_s', previous.get('error'))})" if previous else "")
        )
        sys.stdout.flush()
        floor = {"sqlite": 40_000, "postgresql": 60_000}[result["backend"]]  # issue 14
        targets += [
            Target(f"{result['backend']}: samples/s", result["samples_per_s"], ">=", floor),
            # stored and evaluated by the alarm service: evaluation keeps up at that rate
            Target(f"{result['backend']}: evaluated /s", result["evaluated_samples_per_s"] or 0, ">=", floor),
            Target(f"{result['backend']}: p99 ms per batch", result["p99_ms"], "<", 150),
            Target(f"{result['backend']}: bytes/sample", result["bytes_per_sample"], "<=", 160),
            # issue 14: compacted history at most 40 B per 16S sample, indexes included
            Target(
                f"{result['backend']}: compacted bytes/sample (realistic)",
                result["realistic_cold_bytes_per_sample"],
                "<=",
                40,
            ),
        ]
    check_targets(targets, check=not args.no_check)


if __name__ == "__main__":
    main()
