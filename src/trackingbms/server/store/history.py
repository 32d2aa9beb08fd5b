"""History: min / max / mean per time bucket, from raw samples for short buckets, else from the 1-minute or
1-hour rollups (the coarsest whose step fits the bucket: rows read stay a small multiple of the points).

Rollup buckets are folded in one SQL statement whose shape depends on the backend (:func:`_rollup_buckets`:
on SQLite a join to a tally table, the usual "numbers table" technique, so rows are grouped as read instead
of sorted); the means are rounded column-wise by :func:`round4` (scale and ``rint``, Python's ``round`` on
near-ties: ``numpy.round`` alone differs from ``round`` there). Raw-sample buckets are folded column-wise
with numpy (:func:`_raw_buckets`: ``reduceat`` for min / max / counts, sums added in sample order so that the
means equal the per-sample fold's: a groupby library (pandas, not a dependency) sums its own way). Both
measured: docs/architecture.md."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import Float, Table, and_, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection

from trackingbms.analytics.cells import SERIES
from trackingbms.server.db import BUCKET_NUMBERS_MAX, bucket_numbers, rollup_1h, rollup_1m
from trackingbms.server.store import cold, packing
from trackingbms.server.store.base import TenantScope, now_ms

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
                    ts_ms, measures = await cold.read_measures(conn, sids, from_ms, to_ms)
                    # folding is CPU work: off the event loop, so other requests keep being served
                    buckets = await asyncio.to_thread(_raw_buckets, ts_ms, measures, base_ms, bucket_ms)
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
            buckets: list[tuple[Any, ...]] = []
            if sids:
                grid = _Grid(from_ms - from_ms % step_ms, to_ms, base_ms, bucket_ms, step_ms)
                buckets = await _rollup_buckets(conn, table, sids, grid, self.store.sqlite)
        return _history_reply(battery_id, from_ms, to_ms, base_ms, bucket_ms, buckets)


class _Grid(NamedTuple):
    """The rollup rows a history request folds, [lo_ms, to_ms), and its buckets: bucket k starts at
    ``base_ms + k * bucket_ms``; ``step_ms`` is the rollup's (``lo_ms``, ``base_ms`` and ``bucket_ms`` are
    multiples of it)."""

    lo_ms: int
    to_ms: int
    base_ms: int
    bucket_ms: int
    step_ms: int


async def _rollup_buckets(
    conn: AsyncConnection, table: Table, sids: list[int], g: _Grid, sqlite: bool
) -> list[Any]:
    """Per bucket with data, in bucket order: ``(k, then min, max, mean per series)`` from the rollup rows
    (of ``table``) in [lo_ms, to_ms), aggregated in SQL. The mean is divided in SQL (the same IEEE division
    on both backends) and rounded in :func:`_history_reply`; n and the sums never reach Python.

    Three shapes of the same fold, by what measured fastest (docs/architecture.md, History reads):

    - one stream and buckets of one rollup row each (30 days in hours, a few hours in minutes): the rows
      as they are, nothing to fold (half the time of a grouped read of the same 720 rows on SQLite);
    - SQLite: the buckets are the outer loop, from the tally table
      :data:`~trackingbms.server.db.bucket_numbers`, each reading its own range of the primary key, so rows
      arrive grouped and are folded as they are read. Grouped by an expression instead, SQLite first copies
      every row (38 columns) into a temporary b-tree to sort it: a third of a 7-day span's time (10,080
      minute rows);
    - PostgreSQL (or more buckets than the tally holds): grouped by the bucket expression (a hash
      aggregate on PostgreSQL)."""
    r = table.c
    k_lo, k_hi = (g.lo_ms - g.base_ms) // g.bucket_ms, (g.to_ms - 1 - g.base_ms) // g.bucket_ms
    in_range = (r.stream_id.in_(sids), r.bucket_ms >= g.lo_ms, r.bucket_ms < g.to_ms)
    if len(sids) == 1 and g.bucket_ms == g.step_ms:
        key = (r.bucket_ms - g.base_ms) // g.bucket_ms
        q = select(key, *_series_columns(r, fold=False)).where(*in_range).order_by(r.bucket_ms)
    elif sqlite and k_hi <= BUCKET_NUMBERS_MAX:
        k = bucket_numbers.c.k
        start = g.base_ms + k * g.bucket_ms
        # max / min of two: one range per bucket for the primary key (the 2-argument forms are SQLite's)
        in_bucket = and_(
            r.stream_id.in_(sids),
            r.bucket_ms >= func.max(start, g.lo_ms),
            r.bucket_ms < func.min(start + g.bucket_ms, g.to_ms),
        )
        q = (
            select(k, *_series_columns(r, fold=True))
            .select_from(bucket_numbers.join(table, in_bucket))
            .where(k.between(k_lo, k_hi))
            .group_by(k)
            .order_by(k)
        )
    else:
        key = ((r.bucket_ms - g.base_ms) // g.bucket_ms).label("k")
        q = (
            select(key, *_series_columns(r, fold=True))
            .where(*in_range)
            # by alias: PostgreSQL takes the expression's own bind parameters for another expression
            .group_by(literal_column("k"))
            .order_by(literal_column("k"))
        )
    return list((await conn.execute(q)).all())


def _series_columns(r: Any, fold: bool) -> list[Any]:
    """min, max, mean per series of rollup columns ``r``: aggregates over a bucket's rows (``fold``) or one
    row's own. n is 0 (not NULL) where no sample carried the series and min / max are NULL there: the mean
    is NULL exactly when min and max are. A plain "/" on both backends (the sums are REAL / double
    precision): the same IEEE division as Python's."""
    cols: list[Any] = []
    for name in SERIES:
        lo, hi, total, n = (r[f"{name}_{part}"] for part in ("min", "max", "sum", "n"))
        if fold:
            lo, hi, total, n = func.min(lo), func.max(hi), func.sum(total), func.sum(n)
        cols += [lo, hi, total.op("/", return_type=Float)(func.nullif(n, 0))]
    return cols


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


#: the SERIES columns holding whole millivolts (cell min / max / delta): their min and max stay ints
_INT_SERIES = tuple(j for j, name in enumerate(SERIES) if name.endswith("_mv"))


def _series_matrix(measures: np.ndarray) -> np.ndarray:
    """The n x len(SERIES) matrix (NaN where absent) from the :data:`~.blocks.MEASURES` matrix, by the
    formulas of ``analytics.cells.series_point`` (power rounded to the mW as Python's ``round`` does)."""
    v, a, soc, cell_lo, cell_hi, t_lo, t_hi = measures.T
    with np.errstate(invalid="ignore"):
        power = round_array(v * a, 3)
    columns = {
        "voltage_v": v,
        "current_a": a,
        "soc_pct": soc,
        "power_w": power,
        "cell_min_mv": cell_lo,
        "cell_max_mv": cell_hi,
        "cell_delta_mv": cell_hi - cell_lo,
        "temp_max_c": t_hi,
        "temp_min_c": t_lo,
    }
    return (
        np.column_stack([columns[name] for name in SERIES]) if len(measures) else np.zeros((0, len(SERIES)))
    )


def _raw_buckets(
    ts_ms: np.ndarray, measures: np.ndarray, base_ms: int, bucket_ms: int
) -> list[tuple[Any, ...]]:
    """Per bucket with data, in bucket order: ``(k, then min, max, mean per series)`` (as
    :func:`_rollup_buckets` answers) from samples in time order, folded column-wise with numpy.

    Equal to folding each sample with :class:`~.series.SeriesAcc` (tests/server/test_history_raw.py): min
    and max by ``fmin`` / ``fmax.reduceat`` (NaN, an absent value, skipped), counts likewise, and the sums
    added in sample order, one position of every bucket at a time (``add.reduceat`` sums pairwise, whose
    last bits can differ from the sequential ``+=`` and so, rarely, a rounded mean)."""
    if not len(ts_ms):
        return []
    vals = _series_matrix(measures)
    k = (ts_ms - base_ms) // bucket_ms
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    lens = np.diff(np.r_[starts, len(k)])
    present = ~np.isnan(vals)
    n = np.add.reduceat(present, starts, axis=0)
    lo = np.fmin.reduceat(vals, starts, axis=0)
    hi = np.fmax.reduceat(vals, starts, axis=0)
    total = vals[starts].copy()  # NaN where the bucket's first sample lacks the series
    for j in range(1, int(lens.max())):
        sel = np.flatnonzero(lens > j)
        v, acc = vals[starts[sel] + j], total[sel]
        with np.errstate(invalid="ignore"):
            total[sel] = np.where(np.isnan(v), acc, np.where(np.isnan(acc), v, acc + v))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    cols: list[list[Any]] = [k[starts].tolist()]
    for j in range(len(SERIES)):
        for part in (lo[:, j], hi[:, j]):
            if j in _INT_SERIES:
                cols.append([None if x != x else int(x) for x in part.tolist()])
            else:
                cols.append([None if x != x else x for x in part.tolist()])
        cols.append([None if x != x else x for x in mean[:, j].tolist()])
    return list(zip(*cols, strict=True))


def _history_reply(
    battery_id: str, from_ms: int, to_ms: int, base_ms: int, bucket_ms: int, rows: list[tuple[Any, ...]]
) -> dict[str, Any]:
    """The reply, built column by column: ``rows`` are ``(k, then min, max, mean per series)`` in bucket
    order; one transpose (in C) instead of per-bucket, per-series objects (1,000 buckets x 9 series)."""
    cols: list[Any] = list(zip(*rows, strict=True)) if rows else [()] * (1 + 3 * len(SERIES))
    means = round4([cols[3 + 3 * j] for j in range(len(SERIES))])
    series: dict[str, dict[str, list[float | None]]] = {}
    for j, name in enumerate(SERIES):
        series[name] = {"min": list(cols[1 + 3 * j]), "max": list(cols[2 + 3 * j]), "mean": means[j]}
    return {
        "battery_id": battery_id,
        "from": packing.ms_to_ts(from_ms),
        "to": packing.ms_to_ts(to_ms),
        "bucket_s": bucket_ms // 1000,
        "t": [_epoch_s(base_ms + k * bucket_ms) for k in cols[0]],
        "series": series,
    }


#: |x * 10^4| from which a float's spacing nears the tie margin below: such values take Python's round()
_ROUND4_EXACT_BELOW = 2.0**40


def round4(columns: list[Sequence[float | None]]) -> list[list[float | None]]:
    """``[[round(v, 4) for v in column] ...]`` (None stays None), equal to Python's ``round`` value for
    value, at a fifth of its cost (6,500 means in a 720-bucket reply: 2 ms of ``round`` calls); see
    :func:`round_array`."""
    if not columns or not columns[0]:
        return [[] for _ in columns]
    out = round_array(np.array(columns, dtype=float), 4).tolist()  # None -> NaN
    return [[None if v != v else v for v in row] for row in out]  # NaN (was None) back to None


def round_array(a: np.ndarray, digits: int) -> np.ndarray:
    """``round(x, digits)`` of every element (digits <= 4; NaN stays NaN), equal to Python's value for value.

    Vectorised scale-round-unscale, with Python's ``round`` where that could differ from it: ``round(x, d)``
    is the double nearest to x's exact decimal value rounded half-even to d places, i.e. to N / 10^d with
    N the integer nearest x * 10^d. ``rint(x * 10^d)`` finds the same N unless the product's own rounding
    (half a unit in the last place: under 10^-3 below 2^40) crosses a half-way point, so values within
    10^-3 of one (and huge ones) go to ``round``; then ``N / 10^d`` is one correctly rounded IEEE division
    of two exact values, the double nearest N / 10^d, as ``round`` returns. NumPy's ``round`` is this
    without the fallback (it differs from Python's on near-ties), hence hand-written."""
    scale = float(10**digits)
    scaled = a * scale
    out = np.rint(scaled) / scale
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, not a tie; an infinity takes round() below
        frac = np.abs(scaled - np.trunc(scaled))
        near_tie = (np.abs(frac - 0.5) < 1e-3) | (np.abs(scaled) >= _ROUND4_EXACT_BELOW)
    for idx in zip(*np.nonzero(near_tie), strict=True):
        out[idx] = round(a[idx].item(), digits)
    return out
