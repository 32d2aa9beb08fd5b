"""History of short spans (buckets under a minute) from the raw samples, on both backends over HTTP: with
most samples compacted into blocks and the last hour still hot, partial samples and a change of cell count
included, the buckets equal the sent samples folded in Python (SeriesAcc, one sample at a time, and
``round(mean, 4)``) value for value and type for type."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from trackingbms.analytics.cells import SERIES, series_of
from trackingbms.model import format_ts
from trackingbms.server import provisioning as p
from trackingbms.server.store.series import SeriesAcc

from .conftest import World, client, sample
from .test_cold import _history

HOUR_S = 3600
STEP_S = 7
SPAN_S = 3 * HOUR_S


def _samples(bid: str, base_s: int) -> list[dict[str, Any]]:
    out = []
    for i in range(SPAN_S // STEP_S):
        n_cells = 16 if i < 900 else 15  # the count changes inside a block: its ragged cell layout
        s = sample(
            bid,
            i,
            ts=format_ts(datetime.fromtimestamp(base_s + i * STEP_S, UTC)),
            voltage_v=round(48.0 + (i * 37 % 101) * 0.013, 3),
            current_a=round(-20 + (i * 13 % 53) * 0.917, 3),
            soc_pct=round(10 + (i * 7 % 89) * 0.71, 2),
            # a spread over 255 mV now and then: the packed row's wide cell mode
            cells_mv=[3100 + (i * 11 + c * 5) % (300 if i % 50 == 0 else 151) for c in range(n_cells)],
            temps_c=[round(15 + (i % 17) * 0.5, 1), -3.5, 22.0],
        )
        if i % 7 == 1:  # a partial sample: only cells this time
            for key in ("voltage_v", "current_a", "soc_pct", "temps_c", "remaining_ah"):
                s.pop(key, None)
        if i % 11 == 3:  # no cells, no temperatures
            s.pop("cells_mv", None)
            s["temps_c"] = []
        out.append(s)
    return out


def _expected(samples: list[dict[str, Any]], base_ms: int, bucket_ms: int) -> dict[int, list[Any]]:
    """Per bucket start (s): (min, max, mean rounded to 4 places) per series, as the pre-numpy code folded."""
    accs: dict[int, SeriesAcc] = {}
    for s in samples:
        ts_ms = int(datetime.fromisoformat(s["ts"].replace("Z", "+00:00")).timestamp() * 1000)
        k = (ts_ms - base_ms) // bucket_ms
        accs.setdefault(k, SeriesAcc()).add(series_of(s))
    out = {}
    for k, acc in accs.items():
        f = acc.flat
        out[(base_ms + k * bucket_ms) // 1000] = [
            (f[o + 1], f[o + 2], round(f[o + 3] / f[o], 4) if f[o] else None) for o in range(0, len(f), 4)
        ]
    return out


async def test_raw_history_over_blocks_and_hot_rows_equals_the_samples_folded(world: World) -> None:
    bid = world.a.batteries[0]
    now_s = int(datetime.now(UTC).timestamp())
    # the last ~hour stays hot; on a multiple of 7 x 11 s, so that the samples fall the same way into the
    # 11 s buckets in every run
    base_s = (now_s - SPAN_S + 60) // 77 * 77
    samples = _samples(bid, base_s)
    async with client(world.base_url, world.a.device) as c:
        for k in range(0, len(samples), 500):
            r = await c.post("/api/v1/ingest", json={"samples": samples[k : k + 500]})
            assert r.status_code == 200 and r.json()["accepted"] == len(samples[k : k + 500]), r.text
    moved = (await p.compact(world.database_url, HOUR_S * 1000))["samples"]
    assert len(samples) // 2 < moved < len(samples)  # blocks and hot rows both in the range
    from_s, to_s = base_s + 5, base_s + SPAN_S  # not on the bucket grid: a partial first bucket
    iso = [format_ts(datetime.fromtimestamp(t, UTC)) for t in (from_s, to_s)]
    h = await _history(world, bid, *iso)  # 1,000 points
    assert h["bucket_s"] == 11  # raw samples, several per bucket
    in_range = [s for s in samples if from_s <= datetime.fromisoformat(s["ts"]).timestamp() < to_s]
    expected = _expected(in_range, h["t"][0] * 1000, h["bucket_s"] * 1000)
    assert h["t"] == sorted(expected)
    for j, name in enumerate(SERIES):
        got = h["series"][name]
        want = [expected[t][j] for t in h["t"]]
        assert list(zip(got["min"], got["max"], got["mean"], strict=True)) == want, name
        # whole millivolts stay ints (3100, not 3100.0, in the JSON)
        assert all(type(v) is type(w[0]) for v, w in zip(got["min"], want, strict=True)), name
    assert None in h["series"]["voltage_v"]["mean"]  # a bucket holding only a partial sample
