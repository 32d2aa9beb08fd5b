"""The cold layout: compaction of hot rows into compressed blocks, raw-sample reads across both, and the
duplicate rules across hot and cold.

Samples arrive in the ``samples`` table (one packed row each, :mod:`~trackingbms.server.store.ingest`).
Rows older than the *hot window* (``compact_hot_window_s``, default 1 h) are moved by
:meth:`ColdStore.compact` into ``sample_blocks`` (:mod:`~trackingbms.server.store.blocks`), per stream, each
move one transaction
(blocks written, hot rows deleted, the stream's ``cold_ts_ms`` watermark raised): a kill mid-compaction
leaves either the hot rows or the block, never both, never neither.

Why one hour: the newest hour is where the live views, alarms and most history requests read, and where
re-sends of a gateway's unacknowledged batches land; keeping it in plain rows keeps those reads and the
duplicate check at ingest to one index lookup. An hour of a 1 Hz pack is 3,600 hot rows (~400 KB): small
beside a day of blocks. Shorter windows make compaction rewrite the stream's tail block more often.

Duplicates across hot and cold (the rule "a re-sent sample is a duplicate" holds for compacted samples):
ingest inserts a batch as always, then reads the watermark of its streams *after* the insert; rows at or
before it are looked up in the blocks (:func:`settle_cold`). A row found there with the same seq is a
duplicate (deleted again, counted as such), with another seq a clash (refused, as in the hot table).
Reading the watermark after the insert is what makes this safe against a compaction running at the same
moment on PostgreSQL: if the re-sent row's original was still hot, the insert conflicts with it (and waits
for a compaction deleting it to commit), so once the insert is done any compaction that moved it has
committed and its watermark is visible to the next statement. A late sample that is new (a backfill after
an outage) stays hot and is merged into its block by the next compaction.

Reads: :func:`read_raw` and :func:`iter_raw` return ``(ts_ms, stream_id, seq, data)`` rows of a stream set
in a time range from blocks and hot rows together (a row in both, possible only for an instant, counts
once): history's raw buckets, export (CSV, Parquet) and the analytics replay all read through them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import and_, delete, func, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from trackingbms.server.db import batteries, sample_blocks, samples, streams, tenants
from trackingbms.server.store import blocks
from trackingbms.server.store.base import StoreCore, now_ms

log = logging.getLogger(__name__)

#: the default hot window (see the module docstring)
HOT_WINDOW_MS = 3_600_000
#: a block spans at most this much time, so that the blocks of a range are found by ``ts_min`` alone
BLOCK_MAX_SPAN_MS = 86_400_000


class RawRow(NamedTuple):
    ts_ms: int
    stream_id: int
    seq: int
    data: bytes


def chunk(rows: Sequence[blocks.Row]) -> list[list[blocks.Row]]:
    """Rows in ts order cut into blocks: at most BLOCK_MAX_SAMPLES each, spanning under BLOCK_MAX_SPAN_MS."""
    out: list[list[blocks.Row]] = []
    cur: list[blocks.Row] = []
    for r in rows:
        if cur and (len(cur) >= blocks.BLOCK_MAX_SAMPLES or r.ts_ms - cur[0].ts_ms >= BLOCK_MAX_SPAN_MS):
            out.append(cur)
            cur = []
        cur.append(r)
    if cur:
        out.append(cur)
    return out


def _blocks_overlapping(sids: Sequence[int], from_ms: int, to_ms: int) -> Any:
    """Blocks with a sample possibly in [from_ms, to_ms) (the span bound keeps it an index range)."""
    b = sample_blocks.c
    return and_(
        b.stream_id.in_(sids),
        b.ts_min >= from_ms - BLOCK_MAX_SPAN_MS,
        b.ts_min < to_ms,
        b.ts_max >= from_ms,
    )


def _merge(cold: list[RawRow], hot: list[RawRow], from_ms: int, to_ms: int) -> list[RawRow]:
    out: dict[tuple[int, int], RawRow] = {(r.stream_id, r.ts_ms): r for r in hot}
    for r in cold:  # a block's copy wins over a hot row (the same sample, for an instant)
        if from_ms <= r.ts_ms < to_ms:
            out[(r.stream_id, r.ts_ms)] = r
    return sorted(out.values())


def _decode_blocks(rows: list[tuple[int, bytes]]) -> list[RawRow]:
    out: list[RawRow] = []
    for stream_id, payload in rows:
        out.extend(RawRow(r.ts_ms, stream_id, r.seq, r.data) for r in blocks.decode(payload))
    return out


async def count_raw(conn: AsyncConnection, sids: Sequence[int], from_ms: int, to_ms: int, cap: int) -> int:
    """How many raw samples the range holds, counted up to ``cap`` (more: ``cap + 1``); blocks that only
    partly overlap the range count whole (an upper bound: the caller only compares it with the cap)."""
    if not sids:
        return 0
    b = sample_blocks.c
    n_cold = (
        await conn.execute(
            select(func.coalesce(func.sum(b.n), 0)).where(_blocks_overlapping(sids, from_ms, to_ms))
        )
    ).scalar_one()
    if n_cold > cap:
        return cap + 1
    s = samples.c
    capped = (
        select(s.ts_ms)
        .where(s.stream_id.in_(sids), s.ts_ms >= from_ms, s.ts_ms < to_ms)
        .limit(cap + 1 - int(n_cold))
        .subquery()
    )
    n_hot = (await conn.execute(select(func.count()).select_from(capped))).scalar_one()
    return int(n_cold) + int(n_hot)


async def _fetch_raw(
    conn: AsyncConnection, sids: Sequence[int], from_ms: int, to_ms: int
) -> tuple[list[tuple[int, bytes]], list[RawRow]]:
    """The (stream_id, payload) of the blocks overlapping the range, and its hot rows."""
    b, s = sample_blocks.c, samples.c
    packed = (
        await conn.execute(select(b.stream_id, b.data).where(_blocks_overlapping(sids, from_ms, to_ms)))
    ).all()
    hot = [
        RawRow(*r)
        for r in (
            await conn.execute(
                select(s.ts_ms, s.stream_id, s.seq, s.data).where(
                    s.stream_id.in_(sids), s.ts_ms >= from_ms, s.ts_ms < to_ms
                )
            )
        ).all()
    ]
    return [(sid, data) for sid, data in packed], hot


async def read_raw(conn: AsyncConnection, sids: Sequence[int], from_ms: int, to_ms: int) -> list[RawRow]:
    """Every raw sample of the streams in [from_ms, to_ms), blocks and hot rows merged, in (ts, stream, seq)
    order. Decoding runs in a thread (CPU work: other requests keep being served)."""
    if not sids:
        return []
    packed, hot = await _fetch_raw(conn, sids, from_ms, to_ms)
    if not packed:
        return sorted(hot)
    cold = await asyncio.to_thread(_decode_blocks, packed)
    return _merge(cold, hot, from_ms, to_ms)


async def read_measures(
    conn: AsyncConnection, sids: Sequence[int], from_ms: int, to_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    """The samples :func:`read_raw` returns, in the same order and merged the same way, as their timestamps
    (int64) and :data:`~trackingbms.server.store.blocks.MEASURES` matrix: history's input, decoded from the
    block columns without rebuilding packed rows (in a thread, like read_raw's decoding)."""
    if not sids:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(blocks.MEASURES)))
    packed, hot = await _fetch_raw(conn, sids, from_ms, to_ms)
    return await asyncio.to_thread(_merge_measures, packed, hot, from_ms, to_ms)


def _merge_measures(
    packed: list[tuple[int, bytes]], hot: list[RawRow], from_ms: int, to_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_merge` on columns: one (stream, ts) sample each, a block's copy over a hot row's (and a later
    block's over an earlier one's, as the dict there keeps), in (ts, stream) order."""
    ts_parts = [np.array([r.ts_ms for r in hot], dtype=np.int64)]
    sid_parts = [np.array([r.stream_id for r in hot], dtype=np.int64)]
    m_parts = [blocks.rows_measures([r.data for r in hot])]
    for sid, payload in packed:
        ts, m = blocks.decode_measures(payload)
        keep = (ts >= from_ms) & (ts < to_ms)
        ts_parts.append(ts[keep])
        sid_parts.append(np.full(int(keep.sum()), sid, dtype=np.int64))
        m_parts.append(m[keep])
    ts, sid, m = np.concatenate(ts_parts), np.concatenate(sid_parts), np.concatenate(m_parts)
    # by ts, then stream, then the later copy first; keep the first of each (ts, stream)
    order = np.lexsort((-np.arange(len(ts)), sid, ts))
    ts, sid = ts[order], sid[order]
    first = np.ones(len(ts), dtype=bool)
    first[1:] = (ts[1:] != ts[:-1]) | (sid[1:] != sid[:-1])
    return ts[first], m[order[first]]


async def iter_raw(
    engine: Any, sids: Sequence[int], from_ms: int, to_ms: int, page: int = 5000
) -> AsyncIterator[list[RawRow]]:
    """Pages of :func:`read_raw`'s rows in order, each read in its own short query set (no long-held
    cursor). A page covers a time window holding about ``page`` samples (whole blocks: it may hold more)."""
    if not sids:
        return
    b, s = sample_blocks.c, samples.c
    cur = from_ms
    while cur < to_ms:
        async with engine.connect() as conn:
            # the window's end: where the hot rows pass `page`, or where the blocks do
            hot_ts = (
                await conn.execute(
                    select(s.ts_ms)
                    .where(s.stream_id.in_(sids), s.ts_ms >= cur, s.ts_ms < to_ms)
                    .order_by(s.ts_ms)
                    .offset(page)
                    .limit(1)
                )
            ).scalar()
            end = to_ms if hot_ts is None else hot_ts
            metas = (
                await conn.execute(
                    select(b.ts_min, b.n).where(_blocks_overlapping(sids, cur, end)).order_by(b.ts_min)
                )
            ).all()
            n = 0
            for ts_min, k in metas:
                if n >= page and ts_min > cur:
                    end = ts_min
                    break
                n += k
            rows = await read_raw(conn, sids, cur, end)
        if rows:
            yield rows
        cur = end


async def settle_cold(
    conn: AsyncConnection, rows: Sequence[Any], inserted: set[tuple[int, int, int]]
) -> dict[int, str]:
    """After a batch's insert: drop the inserted rows that re-send a compacted sample (see the module
    docstring). ``rows`` are ``(stream_id, seq, ts_ms, data)``, ``inserted`` the ``(stream, ts, seq)`` the
    insert stored; duplicates are removed from it (and from the table). Returns clashes: row index → error."""
    if not inserted:
        return {}
    sids = sorted({r[0] for r in rows})
    marks = dict(
        (
            await conn.execute(
                select(streams.c.id, streams.c.cold_ts_ms).where(
                    streams.c.id.in_(sids), streams.c.cold_ts_ms.is_not(None)
                )
            )
        ).all()
    )
    if not marks:
        return {}
    by_stream: dict[int, list[int]] = {}
    for k, (stream, seq, ts, _) in enumerate(rows):
        mark = marks.get(stream)
        if mark is not None and ts <= mark and (stream, ts, seq) in inserted:
            by_stream.setdefault(stream, []).append(k)
    clashes: dict[int, str] = {}
    gone: list[tuple[int, int]] = []
    for stream, ks in by_stream.items():
        lo = min(rows[k][2] for k in ks)
        hi = max(rows[k][2] for k in ks)
        packed = (
            await conn.execute(
                select(sample_blocks.c.stream_id, sample_blocks.c.data).where(
                    _blocks_overlapping([stream], lo, hi + 1)
                )
            )
        ).all()
        stored = {r.ts_ms: r.seq for r in _decode_blocks([tuple(p) for p in packed])}
        for k in ks:
            _, seq, ts, _ = rows[k]
            other = stored.get(ts)
            if other is None:
                continue  # a late sample, new: it stays hot until the next compaction merges it
            inserted.discard((stream, ts, seq))
            gone.append((stream, ts))
            if other != seq:
                clashes[k] = f"ts: another sample of this battery (seq {other}) has the same ts"
    if gone:
        await conn.execute(delete(samples).where(tuple_(samples.c.stream_id, samples.c.ts_ms).in_(gone)))
    return clashes


class CompactResult(NamedTuple):
    samples: int  # hot rows moved into blocks
    blocks: int  # blocks written (new or rewritten)
    duplicates: int  # hot rows dropped because their block already held them


class ColdStore(StoreCore):
    async def compact(
        self, before_ms: int | None = None, *, hot_window_ms: int = HOT_WINDOW_MS
    ) -> CompactResult:
        """Move hot rows older than ``before_ms`` (default: now minus the hot window) into blocks, one
        transaction per stream and run of at most BLOCK_MAX_SAMPLES rows."""
        cutoff = before_ms if before_ms is not None else now_ms() - hot_window_ms
        async with self.engine.connect() as conn:
            sids = (await conn.execute(select(streams.c.id).order_by(streams.c.id))).scalars().all()
        moved = written = dups = 0
        for sid in sids:
            while True:
                m, w, d, more = await self._compact_step(sid, cutoff)
                moved, written, dups = moved + m, written + w, dups + d
                if not more:
                    break
        if moved:
            log.info("compaction: %d samples into %d blocks", moved, written)
        return CompactResult(moved, written, dups)

    async def _compact_step(self, sid: int, cutoff: int) -> tuple[int, int, int, bool]:
        s, b = samples.c, sample_blocks.c
        lim = blocks.BLOCK_MAX_SAMPLES
        async with self.write() as conn:
            q = select(streams.c.cold_ts_ms).where(streams.c.id == sid)
            if not self.sqlite:
                q = q.with_for_update()  # two servers compacting the same stream take turns
            mark = (await conn.execute(q)).scalar()
            hot = (
                await conn.execute(
                    select(s.seq, s.ts_ms, s.data)
                    .where(s.stream_id == sid, s.ts_ms < cutoff)
                    .order_by(s.ts_ms)
                    .limit(lim)
                )
            ).all()
            if not hot:
                return 0, 0, 0, False
            hot_rows = [blocks.Row(*r) for r in hot]
            more = len(hot_rows) == lim
            lo = hot_rows[0].ts_ms
            cols = (b.id, b.ts_min, b.ts_max, b.n, b.data)
            touched: list[Any] = []
            if mark is not None and lo <= mark:
                # late rows (a backfill): one block's worth per step, merged into the block that covers
                # them, or a block of their own in the gap between two blocks
                prev = (
                    await conn.execute(
                        select(*cols)
                        .where(b.stream_id == sid, b.ts_min <= lo)
                        .order_by(b.ts_min.desc())
                        .limit(1)
                    )
                ).first()
                if prev is not None and prev.ts_max >= lo:
                    touched, bound = [prev], prev.ts_max
                else:
                    nxt = (
                        await conn.execute(
                            select(b.ts_min)
                            .where(b.stream_id == sid, b.ts_min > lo)
                            .order_by(b.ts_min)
                            .limit(1)
                        )
                    ).scalar()
                    bound = mark if nxt is None else nxt - 1
                kept = [r for r in hot_rows if r.ts_ms <= bound]
                more = more or len(kept) < len(hot_rows)
                hot_rows = kept
            elif mark is not None:
                # fresh rows extend the stream's tail block while it has room
                tail = (
                    await conn.execute(
                        select(*cols)
                        .where(b.stream_id == sid, b.ts_max == mark)
                        .order_by(b.ts_min.desc())
                        .limit(1)
                    )
                ).first()
                if tail is not None and tail.n < lim and hot_rows[-1].ts_ms - tail.ts_min < BLOCK_MAX_SPAN_MS:
                    touched = [tail]
            plan = await asyncio.to_thread(_plan, hot_rows, [(t.ts_min, t.ts_max, t.data) for t in touched])
            new_blocks, dups = plan
            if touched:
                await conn.execute(delete(sample_blocks).where(b.id.in_([t.id for t in touched])))
            if new_blocks:
                await conn.execute(
                    insert(sample_blocks),
                    [
                        {"stream_id": sid, "ts_min": t0, "ts_max": t1, "n": n, "data": payload}
                        for t0, t1, n, payload in new_blocks
                    ],
                )
            await conn.execute(
                delete(samples).where(s.stream_id == sid, s.ts_ms.in_([r.ts_ms for r in hot_rows]))
            )
            top = max(t1 for _, t1, _, _ in new_blocks)
            if mark is None or top > mark:
                await conn.execute(update(streams).where(streams.c.id == sid).values(cold_ts_ms=top))
        return len(hot_rows) - dups, len(new_blocks), dups, more

    async def cold_bytes(self) -> int:
        """Bytes the blocks table and its indexes take (PostgreSQL: with its TOAST table)."""
        async with self.engine.connect() as conn:
            if self.sqlite:
                q = (
                    "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN "
                    "('sample_blocks', 'sample_blocks_stream_ts')"
                )
            else:
                q = "SELECT pg_total_relation_size('sample_blocks')"
            return int((await conn.exec_driver_sql(q)).scalar() or 0)

    async def delete_cold_before(self, conn: AsyncConnection, tenant_id: int, cutoff_ms: int) -> int:
        """Retention: delete a tenant's blocks whose newest sample is older than ``cutoff_ms`` (whole blocks:
        a block straddling the cutoff stays until all of it is past). Returns the samples deleted."""
        tenant_streams = (
            select(streams.c.id)
            .join(batteries, batteries.c.id == streams.c.battery_id)
            .join(tenants, tenants.c.id == batteries.c.tenant_id)
            .where(batteries.c.tenant_id == tenant_id)
        )
        cond = and_(sample_blocks.c.stream_id.in_(tenant_streams), sample_blocks.c.ts_max < cutoff_ms)
        n = (
            await conn.execute(select(func.coalesce(func.sum(sample_blocks.c.n), 0)).where(cond))
        ).scalar_one()
        if n:
            await conn.execute(delete(sample_blocks).where(cond))
        return int(n)


def _plan(
    hot: list[blocks.Row], touched: list[tuple[int, int, bytes]]
) -> tuple[list[tuple[int, int, int, bytes]], int]:
    """The blocks that replace ``touched`` once ``hot`` is merged in: ``(ts_min, ts_max, n, payload)`` each,
    and how many hot rows were already in a block (dropped: the block's copy stays)."""
    merged: dict[int, blocks.Row] = {}
    for _, _, payload in touched:
        for r in blocks.decode(payload):
            merged[r.ts_ms] = r
    dups = 0
    for r in hot:
        if r.ts_ms in merged:
            dups += 1  # ingest keeps these out (settle_cold); only a re-send racing a compaction gets here
            continue
        merged[r.ts_ms] = r
    rows = [merged[t] for t in sorted(merged)]
    # blocks that were separate stay separate where they were full; the merged run is cut afresh
    out = [(c[0].ts_ms, c[-1].ts_ms, len(c), blocks.encode(c)) for c in chunk(rows)]
    return out, dups
