"""History from the minute rollups in buckets of any width, on both backends: over HTTP the buckets equal
the raw samples folded in Python (partial samples, an hour without current), and the SQL shapes
store/history.py picks between (rows as they are, the tally join on SQLite, GROUP BY) answer the same rows;
and the column-wise rounding of the means equals Python's ``round``."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from trackingbms.analytics.cells import SERIES, series_of
from trackingbms.model import format_ts
from trackingbms.server.db import batteries, make_engine, rollup_1m, streams
from trackingbms.server.store.history import MINUTE_MS, _Grid, _rollup_buckets, round4

from .conftest import World, client, sample

HOURS = 8
STEP_S = 20


def _samples(bid: str, base_s: int) -> list[dict[str, Any]]:
    """Every 20 s over HOURS, values varying per sample; partial ones, and an hour without current."""
    out = []
    for i in range(HOURS * 3600 // STEP_S):
        s = sample(
            bid,
            i,
            ts=format_ts(datetime.fromtimestamp(base_s + i * STEP_S + 3, UTC)),
            voltage_v=round(50.0 + (i * 37 % 101) * 0.05, 2),
            current_a=round(-20 + (i * 13 % 53) * 0.9, 1),
            soc_pct=round(10 + (i * 7 % 89) * 0.7, 1),
            cells_mv=[3200 + (i * 11 + c * 5) % 151 for c in range(16)],
            temps_c=[round(15 + (i % 17) * 0.5, 1), 22.0],
        )
        if i % 7 == 1:  # a partial sample: only cells this time
            for key in ("voltage_v", "current_a", "soc_pct", "temps_c", "remaining_ah"):
                s.pop(key, None)
        if 3 * 180 <= i < 4 * 180:  # the 4th hour: no current (so no power either)
            s.pop("current_a", None)
        out.append(s)
    return out


def _fold(samples: list[dict[str, Any]], from_s: int, to_s: int, t0: int, bucket_s: int) -> dict[int, Any]:
    """Per bucket start (buckets of ``bucket_s`` on ``t0``) and series: (min, max, mean) of the samples in
    [from_s, to_s), from the wire values."""
    vals: dict[int, dict[str, list[float]]] = {}
    for s in samples:
        t = datetime.fromisoformat(s["ts"].replace("Z", "+00:00")).timestamp()
        if not from_s <= t < to_s:
            continue
        start = t0 + int(t - t0) // bucket_s * bucket_s
        per = vals.setdefault(start, {name: [] for name in SERIES})
        for name, v in zip(SERIES, series_of(s), strict=True):
            if v is not None:
                per[name].append(v)
    return {
        start: {name: (min(v), max(v), sum(v) / len(v)) if v else None for name, v in per.items()}
        for start, per in vals.items()
    }


async def _fill(w: World, bid: str, base_s: int) -> list[dict[str, Any]]:
    samples = _samples(bid, base_s)
    async with client(w.base_url, w.a.device) as c:
        for k in range(0, len(samples), 500):
            r = await c.post("/api/v1/ingest", json={"samples": samples[k : k + 500]})
            assert r.status_code == 200 and r.json()["accepted"] == len(samples[k : k + 500]), r.text
    return samples


@pytest.mark.parametrize("points", [450, 200, 41])  # 1-minute, 3-minute and 11-minute buckets
async def test_minute_buckets_of_any_width_equal_the_raw_samples(world: World, points: int) -> None:
    bid = world.a.batteries[0]
    now_s = int(datetime.now(UTC).timestamp())
    base_s = now_s - now_s % 3600 - HOURS * 3600
    samples = await _fill(world, bid, base_s)
    # on whole minutes (rollup rows are whole minutes), neither on the hour nor on the bucket grid
    from_s, to_s = base_s + 17 * 60, base_s + HOURS * 3600 - 13 * 60
    async with client(world.base_url, world.a.viewer) as c:
        r = await c.get(
            f"/api/v1/batteries/{bid}/history",
            params={
                "from": format_ts(datetime.fromtimestamp(from_s, UTC)),
                "to": format_ts(datetime.fromtimestamp(to_s, UTC)),
                "points": points,
            },
        )
    assert r.status_code == 200, r.text
    h = r.json()
    bucket_s = h["bucket_s"]
    assert bucket_s == {450: 60, 200: 180, 41: 660}[points]
    expected = _fold(samples, from_s, to_s, h["t"][0], bucket_s)
    assert h["t"] == sorted(expected) and len(h["t"]) <= points
    for k, start in enumerate(h["t"]):
        for name in SERIES:
            got = h["series"][name]
            if expected[start][name] is None:  # samples in the bucket, none carrying this series
                assert (got["min"][k], got["max"][k], got["mean"][k]) == (None, None, None), (start, name)
                continue
            lo, hi, mean = expected[start][name]
            assert got["min"][k] == pytest.approx(lo, abs=1e-6), (start, name)
            assert got["max"][k] == pytest.approx(hi, abs=1e-6), (start, name)
            assert got["mean"][k] == pytest.approx(mean, abs=1e-4), (start, name)
    assert any(v is None for v in h["series"]["power_w"]["mean"])  # the hour without current


async def test_the_sql_shapes_answer_the_same_rows(world: World) -> None:
    """Rows as they are (one stream, one rollup row per bucket), the tally join (SQLite) and GROUP BY (also
    SQLite's answer past the tally's end) give the same rows, value for value, for one and two streams."""
    now_s = int(datetime.now(UTC).timestamp())
    base_s = now_s - now_s % 3600 - HOURS * 3600
    for bid in world.a.batteries[:2]:
        await _fill(world, bid, base_s)
    engine = make_engine(world.database_url)
    sqlite = engine.dialect.name == "sqlite"
    try:
        async with engine.connect() as conn:
            q = select(streams.c.id).join(batteries, batteries.c.id == streams.c.battery_id)
            q = q.where(batteries.c.battery_id.in_(world.a.batteries[:2])).order_by(streams.c.id)
            sids = list((await conn.execute(q)).scalars())
            assert len(sids) == 2
            no_current = 1 + 3 * SERIES.index("current_a")  # its min, in the hour without current
            lo_ms, to_ms = (base_s + 17 * 60) * 1000, (base_s + HOURS * 3600 - 13 * 60) * 1000
            for bucket_ms in (MINUTE_MS, 3 * MINUTE_MS, 11 * MINUTE_MS):
                for base_ms in (lo_ms - lo_ms % bucket_ms, lo_ms - 2 * MINUTE_MS):
                    g = _Grid(lo_ms, to_ms, base_ms, bucket_ms, MINUTE_MS)
                    for ids in ([sids[0]], sids):
                        grouped = await _rollup_buckets(conn, rollup_1m, ids, g, sqlite=False)
                        assert len(grouped) >= 40
                        assert any(row[no_current] is None for row in grouped)
                        if len(ids) == 1:  # a stream that has no rows makes it a fold (1-minute: not as-is)
                            folded = await _rollup_buckets(conn, rollup_1m, [*ids, -1], g, sqlite=False)
                            assert folded == grouped
                        if sqlite:  # the tally join, and GROUP BY past the tally's last number
                            for more in ([], [-1]):
                                tally = await _rollup_buckets(conn, rollup_1m, [*ids, *more], g, sqlite=True)
                                assert tally == grouped
                            far = g._replace(base_ms=base_ms - 6000 * bucket_ms)  # bucket k is now k + 6000
                            shifted = [(row[0] + 6000, *row[1:]) for row in grouped]
                            assert await _rollup_buckets(conn, rollup_1m, ids, far, sqlite=True) == shifted
    finally:
        await engine.dispose()


def test_round4_equals_pythons_round_value_for_value() -> None:
    rng = random.Random(14)
    values: list[float | None] = [rng.randint(-(10**9), 10**9) / 10**5 for _ in range(50_000)]
    values += [k / 20_000 for k in range(-40_000, 40_000)]  # every half-way point at 4 places, and beside
    values += [rng.uniform(-1e13, 1e13) for _ in range(5_000)]  # past the fast path's exact range
    values += [None, 0.0, -0.0, 1e-9, 2.5e-5, -0.00015, 3.14159265, math.inf]
    values += [None] * (1000 - len(values) % 1000)
    rng.shuffle(values)
    columns = [values[i : i + 1000] for i in range(0, len(values), 1000)]
    got = round4(columns)
    expected = [[None if v is None else round(v, 4) for v in c] for c in columns]
    assert got == expected
    assert [[math.copysign(1, v) for v in c if v == 0] for c in got] == [
        [math.copysign(1, v) for v in c if v == 0] for c in expected
    ]
    assert round4([[], []]) == [[], []] and round4([]) == []
