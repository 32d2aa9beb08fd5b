"""The 1-hour rollups over real HTTP, on both backends: history with hour buckets equals what the raw
samples give (partial samples, a late sample into a closed hour, re-sends), and migration 0007 rebuilds
them exactly from the minute rollups of a database that had none."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from trackingbms.analytics.cells import SERIES, series_of
from trackingbms.model import format_ts
from trackingbms.server import provisioning as p
from trackingbms.server.db import make_engine

from .conftest import ServerThread, World, client, migrate, provision, sample

HOUR_S = 3600


def _expected(samples: list[dict[str, Any]], base_s: int) -> dict[int, dict[str, tuple[Any, Any, float]]]:
    """Per hour start (epoch s) and series: (min, max, mean) computed from the wire samples."""
    vals: dict[int, dict[str, list[float]]] = {}
    for s in samples:
        t = datetime.fromisoformat(s["ts"].replace("Z", "+00:00")).timestamp()
        hour = base_s + int(t - base_s) // HOUR_S * HOUR_S
        per = vals.setdefault(hour, {name: [] for name in SERIES})
        for name, v in zip(SERIES, series_of(s), strict=True):
            if v is not None:
                per[name].append(v)
    return {
        hour: {
            name: (min(v), max(v), sum(v) / len(v)) if v else (None, None, math.nan)
            for name, v in per.items()
        }
        for hour, per in vals.items()
    }


def _assert_matches(h: dict[str, Any], expected: dict[int, dict[str, tuple[Any, Any, float]]]) -> None:
    assert h["bucket_s"] == HOUR_S
    assert h["t"] == sorted(expected)
    for k, hour in enumerate(h["t"]):
        for name in SERIES:
            lo, hi, mean = expected[hour][name]
            got = h["series"][name]
            if lo is None:  # the hour had samples, none carrying this series
                assert (got["min"][k], got["max"][k], got["mean"][k]) == (None, None, None), (hour, name)
                continue
            assert got["min"][k] == pytest.approx(lo, abs=1e-6), (hour, name)
            assert got["max"][k] == pytest.approx(hi, abs=1e-6), (hour, name)
            assert got["mean"][k] == pytest.approx(mean, abs=1e-4), (hour, name)


def _fleet_samples(bid: str, base_s: int, hours: int) -> list[dict[str, Any]]:
    """Every 10 min (+7 s) over ``hours``, values varying per sample; partial ones in between."""
    out = []
    for i in range(hours * 6):
        t = datetime.fromtimestamp(base_s + i * 600 + 7, UTC)
        s = sample(
            bid,
            i,
            ts=format_ts(t),
            voltage_v=round(50.0 + (i * 37 % 100) * 0.05, 2),
            current_a=round(-20 + (i * 13 % 50) * 0.9, 1),
            soc_pct=round(10 + (i * 7 % 90), 1),
            cells_mv=[3200 + (i * 11 + c * 5) % 150 for c in range(16)],
            temps_c=[round(15 + (i % 17) * 0.5, 1), 22.0],
        )
        if i % 5 == 1:  # a partial sample: the gateway polled only cells this time
            for key in ("voltage_v", "current_a", "soc_pct", "temps_c", "remaining_ah"):
                s.pop(key, None)
        if i % 23 == 4:  # no temperatures either way
            s.pop("temps_c", None)
        out.append(s)
    # an hour where no sample carries current (so neither current nor power)
    for s in out[6 * 10 : 6 * 11]:
        s.pop("current_a", None)
    return out


async def _history(w: World, bid: str, from_s: int, to_s: int, points: int) -> dict[str, Any]:
    def fmt(s: int) -> str:
        return format_ts(datetime.fromtimestamp(s, UTC))

    async with client(w.base_url, w.a.viewer) as c:
        r = await c.get(
            f"/api/v1/batteries/{bid}/history",
            params={"from": fmt(from_s), "to": fmt(to_s), "points": points},
        )
    assert r.status_code == 200, r.text
    return r.json()


async def _ingest(w: World, samples: list[dict[str, Any]]) -> dict[str, Any]:
    async with client(w.base_url, w.a.device) as c:
        r = await c.post("/api/v1/ingest", json={"samples": samples})
    assert r.status_code == 200, r.text
    return r.json()


async def test_hour_buckets_equal_the_raw_samples_late_samples_and_resends_included(world: World) -> None:
    bid = world.a.batteries[0]
    hours = 48
    now_s = int(datetime.now(UTC).timestamp())
    base_s = now_s - now_s % HOUR_S - hours * HOUR_S
    samples = _fleet_samples(bid, base_s, hours)
    for start in range(0, len(samples), 100):  # batches straddle hours: one hour gets folded twice
        assert (await _ingest(world, samples[start : start + 100]))["accepted"] == len(
            samples[start : start + 100]
        )
    h = await _history(world, bid, base_s, base_s + hours * HOUR_S, hours)
    _assert_matches(h, _expected(samples, base_s))
    assert h["series"]["current_a"]["min"][10] is None and h["series"]["power_w"]["mean"][10] is None

    # a backfill into an hour closed long ago: a spike and a partial sample, after the fact
    late = [
        sample(
            bid, 10_000, ts=format_ts(datetime.fromtimestamp(base_s + 5 * HOUR_S + 301, UTC)), voltage_v=58.75
        ),
        {
            "battery_id": bid,
            "seq": 10_001,
            "ts": format_ts(datetime.fromtimestamp(base_s + 5 * HOUR_S + 1801, UTC)),
            "temps_c": [-8.5],
        },
    ]
    assert (await _ingest(world, late))["accepted"] == 2
    samples += late
    h = await _history(world, bid, base_s, base_s + hours * HOUR_S, hours)
    _assert_matches(h, _expected(samples, base_s))
    assert h["series"]["voltage_v"]["max"][5] == 58.75 and h["series"]["temp_min_c"]["min"][5] == -8.5

    # the gateway re-sends a day of it: every sample is a duplicate, no hour counts one twice
    reply = await _ingest(world, samples[:144] + late)
    assert reply["accepted"] == 0 and reply["duplicates"] == 146
    assert await _history(world, bid, base_s, base_s + hours * HOUR_S, hours) == h

    # hour buckets of several hours and a range not on whole hours fold the same rows
    h6 = await _history(world, bid, base_s + 1000, base_s + hours * HOUR_S - 1000, hours // 6)
    assert h6["bucket_s"] == 6 * HOUR_S and len(h6["t"]) == hours // 6
    assert max(h6["series"]["voltage_v"]["max"]) == 58.75
    assert min(h6["series"]["temp_min_c"]["min"]) == -8.5


async def test_migration_0008_builds_the_hour_rollups_from_the_minute_rollups(world: World) -> None:
    """A database from before the hour rollups (0006, minute rollups only) answers the same history
    after the upgrade: the hour rows are rebuilt from the minute rows, exactly."""
    bid = world.a.batteries[1]
    hours = 12
    now_s = int(datetime.now(UTC).timestamp())
    base_s = now_s - now_s % HOUR_S - hours * HOUR_S
    samples = _fleet_samples(bid, base_s, hours)
    await _ingest(world, samples)
    before = await _history(world, bid, base_s, base_s + hours * HOUR_S, hours)
    _assert_matches(before, _expected(samples, base_s))

    await asyncio.to_thread(migrate, world.database_url, "0006", True)
    engine = make_engine(world.database_url)
    try:
        async with engine.connect() as conn:
            tables = (
                "SELECT name FROM sqlite_master"
                if engine.dialect.name == "sqlite"
                else ("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            )
            assert "rollup_1h" not in {r[0] for r in (await conn.execute(text(tables))).all()}
    finally:
        await engine.dispose()
    await asyncio.to_thread(migrate, world.database_url, "head")
    assert await _history(world, bid, base_s, base_s + hours * HOUR_S, hours) == before


async def test_minute_rollups_past_their_retention_are_deleted_and_history_answers_in_hours(
    start_server: Callable[..., ServerThread], database_url: str
) -> None:
    """With ROLLUP_1M_RETENTION_DAYS=1 the retention pass deletes minute rows older than a day; a 6-hour
    window two days back (1-minute buckets asked) answers in whole hours, with the values of the raw samples;
    the last day keeps its minute buckets."""
    server = await asyncio.to_thread(start_server, rollup_1m_retention_days=1.0, retention_interval_s=0.2)
    async with p.open_store(database_url) as store:
        t = await provision(store, server.base_url, "acme")
    w = World(server.base_url, database_url, t, t, server)
    bid = t.batteries[0]
    hours = 72
    now_s = int(datetime.now(UTC).timestamp())
    base_s = now_s - now_s % HOUR_S - hours * HOUR_S
    samples = _fleet_samples(bid, base_s, hours)
    await _ingest(w, samples)
    old_from, old_to = base_s + 12 * HOUR_S, base_s + 18 * HOUR_S  # 54 to 60 hours ago
    old = [s for s in samples if old_from <= datetime.fromisoformat(s["ts"]).timestamp() < old_to]
    engine = make_engine(database_url)
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while True:  # the retention pass runs every 0.2 s: wait until it has deleted the old minute rows
            async with engine.connect() as conn:
                oldest_minute = (await conn.execute(text("SELECT min(bucket_ms) FROM rollup_1m"))).scalar()
                oldest_hour = (await conn.execute(text("SELECT min(bucket_ms) FROM rollup_1h"))).scalar()
            if oldest_minute >= (now_s - 86_400 - 60) * 1000 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await engine.dispose()
    assert oldest_minute >= (now_s - 86_400 - 60) * 1000 and oldest_hour == base_s * 1000
    h = await _history(w, bid, old_from, old_to, 360)
    _assert_matches(h, _expected(old, base_s))
    to_s = now_s - now_s % 60
    recent = await _history(w, bid, to_s - 6 * HOUR_S, to_s, 360)  # exactly 1-minute buckets
    in_window = [
        s for s in samples if to_s - 6 * HOUR_S <= datetime.fromisoformat(s["ts"]).timestamp() < to_s
    ]
    assert recent["bucket_s"] == 60 and len(recent["t"]) == len(in_window)  # one minute bucket per sample
