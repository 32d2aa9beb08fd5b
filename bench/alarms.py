"""Alarm evaluation cost: what the server's alarm service spends per ingested sample (the analytics
estimator + the sample rules), in CPU time on one core (best of ``--repeat`` runs).

    python bench/alarms.py --json [--compare main]

Prints {"feed_samples_per_s", "feed_us_per_sample", ...}: ``feed_*`` is the service's per-battery feed
(estimator, sample metrics, rules) given samples with their time parsed; ``full_pass_samples_per_s`` with
every rule evaluated on every sample (``AlarmEvaluator(fast=False)``, the path before the quiet-sample
fast path); ``active_alarm_samples_per_s`` with an alarm raised the whole time (a busy rule on every
sample); ``rules_only_*`` without the estimator; ``service_us_per_sample`` the whole service on a real
SQLite store, given packed samples as the ingest path hands them over, and ``service_wire_us_per_sample``
given wire dicts (see :func:`bench_service`). The ingest benchmark's server does this work too (off the
request path, same process): compare `TRACKINGBMS_ALARMS_ENABLED=false python bench/ingest.py --json`
with `python bench/ingest.py --json` for the effect on ingest."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from trackingbms.analytics.alarms import BUILTIN_RULES, AlarmEvaluator
from trackingbms.analytics.estimator import BatteryEstimator
from trackingbms.model import format_ts
from trackingbms.server.alarms import AlarmService, _Battery, _split
from trackingbms.server.store import PackedSample
from trackingbms.server.store.packing import parse_ts_ms, validate_and_pack


class _NoEstimator:
    t_last = None

    def update(self, sample: dict[str, Any], t: float | None = None) -> None:
        pass

    def update_run(self, samples: list[tuple[float, dict[str, Any]]]) -> None:
        pass


def _packed(batch: list[dict[str, Any]], now_ms: int) -> list[PackedSample]:
    out = []
    for i, d in enumerate(batch):
        bid, seq, ts_ms, data, stats = validate_and_pack(d, now_ms)
        out.append(PackedSample(i, bid, seq, ts_ms, data, d, stats))
    return out


async def bench_service(n: int, repeat: int, forms: tuple[str, ...] = ("packed", "wire")) -> dict[str, float]:
    """The whole service (grouping per battery, the battery lookup, every feed) over a real SQLite store,
    given bench/ingest.py's batches (16 batteries, 500 a batch) packed as the ingest path hands them over
    (``service_us_per_sample``), and as wire dicts (``service_wire_us_per_sample``): CPU µs per sample,
    best of ``repeat`` (a fresh service each time)."""
    from ingest import make_batches, provision
    from trackingbms.server import provisioning as p

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        await provision(url, 4, 4)
        wire = [orjson.loads(body)["samples"] for _, body in make_batches(4, 4, n, 500)]
        now_ms = int(time.time() * 1000)
        given = {"packed": lambda: [_packed(b, now_ms) for b in wire], "wire": lambda: wire}
        async with p.open_store(url) as store:
            tenant_id = next(iter(await store.battery_keys({(1, "d0-b0")})))[0]  # the only tenant
            for form in forms:
                batches: list[Any] = given[form]()
                best = math.inf
                for _ in range(repeat):
                    service = AlarmService(store)
                    for b in batches:
                        service.submit(tenant_id, b)
                    t = time.process_time()
                    await service._drain()
                    best = min(best, time.process_time() - t)
                    assert len(service.batteries) == 16 and not service.skipped
                name = "service_us_per_sample" if form == "packed" else "service_wire_us_per_sample"
                out[name] = round(1e6 * best / sum(map(len, batches)), 2)
    return out


def run_previous(rev: str, argv: list[str]) -> dict[str, Any]:
    """Git revision ``rev``'s own copy of this benchmark (its ``src`` and ``bench``, its code first on
    ``PYTHONPATH``) with the same arguments: its JSON line, or ``{"error": ...}``; never raises."""
    with tempfile.TemporaryDirectory(prefix="bench-prev-") as tmp:
        archive = Path(tmp) / "rev.tar"
        r = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent.parent), "archive", "-o", str(archive), rev,
             "src", "bench"],
            capture_output=True, text=True,
        )  # fmt: skip
        if r.returncode:
            return {"rev": rev, "error": f"git archive {rev}: {r.stderr.strip()[:200]}"}
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        env = {**os.environ, "PYTHONPATH": str(Path(tmp) / "src")}
        r = subprocess.run(
            [sys.executable, str(Path(tmp) / "bench" / "alarms.py"), "--json", *argv],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        for line in r.stdout.splitlines():
            if line.startswith("{"):
                return {"rev": rev, **json.loads(line)}
        return {"rev": rev, "error": (r.stderr.strip().splitlines() or ["no output"])[-1][:300]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--samples", type=int, default=50_000)
    ap.add_argument(
        "--no-service", dest="service", action="store_false", help="skip the whole-service figure"
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure, the best kept")
    ap.add_argument(
        "--compare",
        metavar="REV",
        help="also run git revision REV's own copy of this benchmark (e.g. main) just before this one, in "
        "the same window, and print its figures as 'previous'",
    )
    args = ap.parse_args()
    previous = None
    if args.compare:
        argv = ["--samples", str(args.samples), "--repeat", str(args.repeat)] + (
            [] if args.service else ["--no-service"]
        )
        previous = run_previous(args.compare, argv)
    gc.freeze()  # the server's collector settings (cli/server.py)
    gc.set_threshold(100_000, 50, 100)
    t0 = datetime.now(UTC)
    samples = [
        {
            "battery_id": "p",
            "seq": i,
            "ts": format_ts(t0 + timedelta(seconds=i)),
            "voltage_v": 53.2,
            "current_a": -4.5 + (i % 7),
            "soc_pct": 80.0,
            "remaining_ah": 80.0,
            "cells_mv": [3320 + (i + k) % 5 for k in range(16)],
            "temps_c": [24.0, 25.0],
            "faults": [],
        }
        for i in range(args.samples)
    ]
    # as the ingest path hands them over: (ts_ms parsed once there, wire sample, no cell range: the
    # feed finds the extreme cells itself here)
    rows = [(parse_ts_ms(s["ts"]), s, None) for s in samples]
    # the same with every pack below 0 °C: temperature_low stays raised (a busy rule on every sample)
    cold = [(ts_ms, {**s, "temps_c": [-2.0, -1.0]}, None) for ts_ms, s, _ in rows]
    sample_rules, presence_rules = _split(list(BUILTIN_RULES))
    service = AlarmService.__new__(AlarmService)  # _feed needs no store

    def run(est: Callable[[], Any], feed: Callable[[], list[Any]], fast: bool) -> float:
        best = 0.0
        for _ in range(args.repeat):
            b = _Battery(
                1, 1, 1, "p", "p", est(), AlarmEvaluator(sample_rules, fast=fast),
                AlarmEvaluator(presence_rules), set(),
            )  # fmt: skip
            work = feed()  # built outside the timing
            t = time.process_time()
            service._feed(b, work)
            best = max(best, args.samples / (time.process_time() - t))
        return best

    def estimator() -> BatteryEstimator:
        return BatteryEstimator(battery_id="p")

    out: dict[str, Any] = {"samples": args.samples}
    feed = run(estimator, lambda: list(rows), True)
    out["feed_samples_per_s"] = round(feed)
    out["feed_us_per_sample"] = round(1e6 / feed, 2)
    out["full_pass_samples_per_s"] = round(run(estimator, lambda: list(rows), False))
    out["active_alarm_samples_per_s"] = round(run(estimator, lambda: list(cold), True))
    out["rules_only_samples_per_s"] = round(run(_NoEstimator, lambda: list(rows), True))
    out["rules_only_full_pass_samples_per_s"] = round(run(_NoEstimator, lambda: list(rows), False))
    if args.service:
        out.update(asyncio.run(bench_service(args.samples, args.repeat)))
    if previous is not None:
        out["previous"] = previous
    print(json.dumps(out) if args.json else out)


if __name__ == "__main__":
    main()
