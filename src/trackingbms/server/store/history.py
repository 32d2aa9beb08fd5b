"""History: min / max / mean per time bucket, from raw samples for short buckets, else from the 1-minute or
1-hour rollups (the coarsest whose step fits the bucket: rows read stay a small multiple of the points)."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Table, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection

from trackingbms.analytics.cells import SERIES
from trackingbms.server.db import rollup_1h, rollup_1m
from trackingbms.server.store import cold, packing
from trackingbms.server.store.base import TenantScope, now_ms
from trackingbms.server.store.series import SeriesAcc

#: the most raw samples a short-bucket history request decodes; a denser range is served from the rollups
RAW_HISTORY_MAX_ROWS = 20_000


#: buckets longer than this are whole hours read from the hour rollups, so that a bucket never folds more
#: than 30 rollup rows: 30 days at 1,000 points would otherwise fold 43,200 minute rows (SQL aggregates over
#: 36 columns: ~0.2 s on SQLite) for 983 buckets of 44 min; as 720 hour buckets it folds 720 rows
HOUR_BUCKETS_FROM_MS = 30 * 60_000
MINUTE_MS = 60_000
HOUR_MS = 3_600_000


class HistoryScope(TenantScope):
    async def history(self, battery_id: str, from_ms: int, to_ms: int, points: int) -> dict[str, Any]:
        """Min / max / mean per time bucket (at most ``points`` buckets), so that spikes survive.

        Buckets of a minute or more are aggregated in SQL from the rollups, whole minutes from the 1-minute
        rollups up to :data:`HOUR_BUCKETS_FROM_MS`, whole hours from the 1-hour rollups beyond: the reply and
        the work are bounded by ``points`` (at most 30 rollup rows per bucket), not by the span. Shorter
        buckets come from the raw samples, decoded only when the range holds at most
        :data:`RAW_HISTORY_MAX_ROWS` of them; otherwise 1-minute buckets from the rollups answer instead."""
        span_ms = max(1, to_ms - from_ms)
        points = max(1, points)
        bucket_ms = -(-max(1000, -(-span_ms // points)) // 1000) * 1000  # whole seconds
        async with self.engine.connect() as conn:
            _, sids = await self._battery_streams(conn, battery_id)
            if sids and bucket_ms < MINUTE_MS:
                # count (up to the cap, index only) before fetching: a dense range goes to the rollups;
                # raw rows come from the hot table and the compressed blocks together (store/cold.py)
                n_raw = await cold.count_raw(conn, sids, from_ms, to_ms, RAW_HISTORY_MAX_ROWS)
                if n_raw <= RAW_HISTORY_MAX_ROWS:
                    base_ms, bucket_ms = _bucket_grid(from_ms, to_ms, bucket_ms, points, 1000)
                    rows = [(r.ts_ms, r.data) for r in await cold.read_raw(conn, sids, from_ms, to_ms)]
                    # decoding is CPU work: off the event loop, so other requests keep being served
                    buckets = await asyncio.to_thread(_raw_buckets, rows, base_ms, bucket_ms)
                    return _history_reply(battery_id, from_ms, to_ms, base_ms, bucket_ms, buckets)
                bucket_ms = MINUTE_MS
            days_1m = self.store.rollup_1m_retention_days
            # past the minute rollups' retention only hours are left: coarser buckets rather than none
            minutes_gone = bool(days_1m) and from_ms < now_ms() - days_1m * 86_400_000
            if bucket_ms > HOUR_BUCKETS_FROM_MS or minutes_gone:
                step_ms, table = HOUR_MS, rollup_1h
            else:
                step_ms, table = MINUTE_MS, rollup_1m
            bucket_ms = -(-bucket_ms // step_ms) * step_ms
            base_ms, bucket_ms = _bucket_grid(from_ms, to_ms, bucket_ms, points, step_ms)
            buckets: dict[int, SeriesAcc] = {}
            if sids:
                buckets = await _rollup_buckets(
                    conn, table, sids, from_ms - from_ms % step_ms, to_ms, base_ms, bucket_ms
                )
        return _history_reply(battery_id, from_ms, to_ms, base_ms, bucket_ms, buckets)


async def _rollup_buckets(
    conn: AsyncConnection, table: Table, sids: list[int], lo_ms: int, to_ms: int, base_ms: int, bucket_ms: int
) -> dict[int, SeriesAcc]:
    """Per bucket the fold of the rollup rows (of ``table``) in [lo_ms, to_ms), aggregated in SQL."""
    r = table.c
    key = ((r.bucket_ms - base_ms) // bucket_ms).label("k")
    cols: list[Any] = [key]
    for name in SERIES:
        cols += [
            func.sum(r[f"{name}_n"]),
            func.min(r[f"{name}_min"]),
            func.max(r[f"{name}_max"]),
            func.sum(r[f"{name}_sum"]),
        ]
    q = (
        select(*cols)
        .where(r.stream_id.in_(sids), r.bucket_ms >= lo_ms, r.bucket_ms < to_ms)
        # by alias: PostgreSQL takes the expression's own bind parameters for another expression
        .group_by(literal_column("k"))
    )
    return {int(row[0]): SeriesAcc.from_columns(row[1:]) for row in (await conn.execute(q)).all()}


def _epoch_s(ms: int) -> int | float:
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def _bucket_grid(from_ms: int, to_ms: int, bucket_ms: int, points: int, step_ms: int) -> tuple[int, int]:
    """(first bucket start, bucket length): buckets on round times (multiples of the bucket) when that
    still fits in ``points``, else from ``from`` (on a whole ``step_ms``), widened by ``step_ms`` until
    it fits (a few steps at most: ``bucket_ms`` starts at span / points)."""
    base_ms = from_ms - from_ms % bucket_ms
    if (to_ms - 1 - base_ms) // bucket_ms + 1 > points:
        base_ms = from_ms - from_ms % step_ms
        while (to_ms - 1 - base_ms) // bucket_ms + 1 > points:
            bucket_ms += step_ms
    return base_ms, bucket_ms


def _raw_buckets(rows: list[Any], base_ms: int, bucket_ms: int) -> dict[int, SeriesAcc]:
    """Per bucket the series accumulator (the rollup layout) from raw (ts_ms, data) rows."""
    buckets: dict[int, SeriesAcc] = {}
    for ts, data in rows:
        k = (ts - base_ms) // bucket_ms
        acc = buckets.get(k)
        if acc is None:
            acc = buckets[k] = SeriesAcc()
        acc.add(packing.series_values(data))
    return buckets


def _history_reply(
    battery_id: str, from_ms: int, to_ms: int, base_ms: int, bucket_ms: int, buckets: dict[int, SeriesAcc]
) -> dict[str, Any]:
    keys = sorted(buckets)
    flats = [buckets[k].flat for k in keys]
    series: dict[str, dict[str, list[float | None]]] = {}
    # column by column over the flat [n, min, max, sum] lists: no per-cell objects (1,000 buckets x 9 series)
    for j, name in enumerate(SERIES):
        o = 4 * j
        series[name] = {
            "min": [f[o + 1] if f[o] else None for f in flats],
            "max": [f[o + 2] if f[o] else None for f in flats],
            "mean": [round(f[o + 3] / f[o], 4) if f[o] else None for f in flats],
        }
    return {
        "battery_id": battery_id,
        "from": packing.ms_to_ts(from_ms),
        "to": packing.ms_to_ts(to_ms),
        "bucket_s": bucket_ms // 1000,
        "t": [_epoch_s(base_ms + k * bucket_ms) for k in keys],
        "series": series,
    }
