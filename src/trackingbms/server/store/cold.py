"""The cold layout: compaction of hot segments into compressed blocks, raw-sample reads across both, and
the duplicate lookup in blocks.

Samples arrive in ``sample_segments`` (one row per stream and batch,
:mod:`~trackingbms.server.store.segments`, written by :mod:`~trackingbms.server.store.ingest`). Samples
older than the *hot window* (``compact_hot_window_s``, default 1 h) are moved by :meth:`ColdStore.compact`
into ``sample_blocks`` (:mod:`~trackingbms.server.store.blocks`), per stream, each move one transaction
(blocks written, the segments they came from deleted, the part of a segment not moved written back as a
smaller segment, the stream's ``cold_ts_ms`` watermark raised): a kill mid-compaction leaves either the
segments or the block, never both, never neither. On PostgreSQL a move holds the stream's row lock (``FOR
UPDATE``), as ingest does while it checks a batch for duplicates, so the two take turns per stream.

Why one hour: the newest hour is where the live views, alarms and most history requests read, and where
re-sends of a gateway's unacknowledged batches land; keeping it in uncompressed segments keeps those reads
and the duplicate check at ingest cheap. Shorter windows make compaction rewrite the stream's tail block
more often.

Duplicates across hot and cold (the rule "a re-sent sample is a duplicate" holds for compacted samples):
ingest reads the watermark of its streams under the stream lock; samples at or before it are looked up in
the blocks (:func:`stored_by_ts`). Found there with the same seq: a duplicate; with another seq: a clash.
A late sample that is new (a backfill after an outage) stays hot and is merged into its block by the next
compaction.

Reads: :func:`read_raw` and :func:`iter_raw` return ``(ts_ms, stream_id, seq, data)`` rows of a stream set
in a time range from blocks and segments together (a sample in both, possible only for an instant, counts
once): history's raw buckets, export (CSV, Parquet) and the analytics replay all read through them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from trackingbms.server.db import batteries, sample_blocks, sample_segments, streams, tenants
from trackingbms.server.store import blocks, segments
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


def _segments_overlapping(sids: Sequence[int], from_ms: int, to_ms: int) -> Any:
    """Hot segments with a sample possibly in [from_ms, to_ms) (the span bound keeps it an index range)."""
    g = sample_segments.c
    return and_(
        g.stream_id.in_(sids),
        g.ts_min >= from_ms - segments.SEGMENT_MAX_SPAN_MS,
        g.ts_min < to_ms,
        g.ts_max >= from_ms,
    )


def _merge(cold: list[RawRow], hot: list[RawRow], from_ms: int, to_ms: int) -> list[RawRow]:
    out: dict[tuple[int, int], RawRow] = {(r.stream_id, r.ts_ms): r for r in hot}
    for r in cold:  # a block's copy wins over a hot one (the same sample, for an instant)
        if from_ms <= r.ts_ms < to_ms:
            out[(r.stream_id, r.ts_ms)] = r
    return sorted(out.values())


def _decode_blocks(rows: list[tuple[int, bytes]]) -> list[RawRow]:
    out: list[RawRow] = []
    for stream_id, payload in rows:
        out.extend(RawRow(r.ts_ms, stream_id, r.seq, r.data) for r in blocks.decode(payload))
    return out


def _decode_segments(rows: list[tuple[int, bytes]], from_ms: int, to_ms: int) -> list[RawRow]:
    """The samples of hot segments in [from_ms, to_ms)."""
    out: list[RawRow] = []
    for stream_id, payload in rows:
        out.extend(
            RawRow(r.ts_ms, stream_id, r.seq, r.data)
            for r in segments.decode(payload)
            if from_ms <= r.ts_ms < to_ms
        )
    return out


async def count_raw(conn: AsyncConnection, sids: Sequence[int], from_ms: int, to_ms: int, cap: int) -> int:
    """How many raw samples the range holds, counted up to ``cap`` (more: ``cap + 1``); blocks that only
    partly overlap the range count whole (an upper bound: the caller only compares it with the cap), hot
    segments exactly (the keys of those partly in the range are read)."""
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
    g = sample_segments.c
    n_hot = 0
    partial: list[int] = []
    for seg_id, ts_min, ts_max, n in (
        await conn.execute(
            select(g.id, g.ts_min, g.ts_max, g.n).where(_segments_overlapping(sids, from_ms, to_ms))
        )
    ).all():
        if ts_min >= from_ms and ts_max < to_ms:
            n_hot += n
        else:
            partial.append(seg_id)
    if partial and n_cold + n_hot <= cap:
        for (payload,) in (await conn.execute(select(g.data).where(g.id.in_(partial)))).all():
            _, tss = segments.keys(payload)
            n_hot += int(((tss >= from_ms) & (tss < to_ms)).sum())
    return min(int(n_cold) + n_hot, cap + 1)


async def _fetch_raw(
    conn: AsyncConnection, sids: Sequence[int], from_ms: int, to_ms: int
) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """The (stream_id, payload) of the blocks overlapping the range, and of its hot segments."""
    b, g = sample_blocks.c, sample_segments.c
    packed = (
        await conn.execute(select(b.stream_id, b.data).where(_blocks_overlapping(sids, from_ms, to_ms)))
    ).all()
    hot = (
        await conn.execute(select(g.stream_id, g.data).where(_segments_overlapping(sids, from_ms, to_ms)))
    ).all()
    return [(sid, data) for sid, data in packed], [(sid, data) for sid, data in hot]


def _read_both(
    packed: list[tuple[int, bytes]], hot_segments: list[tuple[int, bytes]], from_ms: int, to_ms: int
) -> list[RawRow]:
    hot = _decode_segments(hot_segments, from_ms, to_ms)
    if not packed:
        return sorted(hot)
    return _merge(_decode_blocks(packed), hot, from_ms, to_ms)


async def read_raw(conn: AsyncConnection, sids: Sequence[int], from_ms: int, to_ms: int) -> list[RawRow]:
    """Every raw sample of the streams in [from_ms, to_ms), blocks and hot segments merged, in (ts, stream,
    seq) order. Decoding runs in a thread (CPU work: other requests keep being served)."""
    if not sids:
        return []
    packed, hot = await _fetch_raw(conn, sids, from_ms, to_ms)
    if not packed and not hot:
        return []
    return await asyncio.to_thread(_read_both, packed, hot, from_ms, to_ms)


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
    packed: list[tuple[int, bytes]], hot: list[tuple[int, bytes]], from_ms: int, to_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_merge` on columns: one (stream, ts) sample each, a block's copy over a hot one's (and a later
    block's over an earlier one's, as the dict there keeps), in (ts, stream) order."""
    ts_parts: list[np.ndarray] = []
    sid_parts: list[np.ndarray] = []
    hot_datas: list[bytes] = []
    for sid, payload in hot:
        _, ts = segments.keys(payload)
        keep = (ts >= from_ms) & (ts < to_ms)
        if not keep.any():
            continue
        rows = segments.datas(payload)
        ts_parts.append(ts[keep])
        sid_parts.append(np.full(int(keep.sum()), sid, dtype=np.int64))
        hot_datas += [d for d, k in zip(rows, keep.tolist(), strict=True) if k]
    m_parts = [blocks.rows_measures(hot_datas)]
    ts_parts = [np.concatenate([np.zeros(0, dtype=np.int64), *ts_parts])]
    sid_parts = [np.concatenate([np.zeros(0, dtype=np.int64), *sid_parts])]
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
    cursor). A page covers a time window holding about ``page`` samples (whole blocks and segments: it may
    hold more)."""
    if not sids:
        return
    b, g = sample_blocks.c, sample_segments.c
    cur = from_ms
    while cur < to_ms:
        async with engine.connect() as conn:
            # the window's end: where the blocks and segments starting after `cur` pass `page` samples
            metas = (
                await conn.execute(
                    select(b.ts_min, b.n).where(_blocks_overlapping(sids, cur, to_ms)).order_by(b.ts_min)
                )
            ).all() + (
                await conn.execute(
                    select(g.ts_min, g.n).where(_segments_overlapping(sids, cur, to_ms)).order_by(g.ts_min)
                )
            ).all()
            end = to_ms
            n = 0
            for ts_min, k in sorted(metas):
                if n >= page and ts_min > cur:
                    end = ts_min
                    break
                n += k
            rows = await read_raw(conn, sids, cur, end)
        if rows:
            yield rows
        cur = end


async def stored_by_ts(conn: AsyncConnection, sid: int, lo_ms: int, hi_ms: int) -> dict[int, int]:
    """ts → seq of the samples a stream's blocks hold in [lo_ms, hi_ms]: ingest's duplicate lookup for
    samples at or before the watermark (see the module docstring)."""
    packed = (
        await conn.execute(
            select(sample_blocks.c.stream_id, sample_blocks.c.data).where(
                _blocks_overlapping([sid], lo_ms, hi_ms + 1)
            )
        )
    ).all()
    if not packed:
        return {}
    rows = await asyncio.to_thread(_decode_blocks, [tuple(p) for p in packed])
    return {r.ts_ms: r.seq for r in rows if lo_ms <= r.ts_ms <= hi_ms}


async def rewrite_segments(
    conn: AsyncConnection, sid: int, ids: list[int], rows: list[segments.SegmentRow]
) -> None:
    """Replace the segments ``ids`` of a stream by segments holding ``rows`` (what compaction or retention
    left of them)."""
    if ids:
        await conn.execute(delete(sample_segments).where(sample_segments.c.id.in_(ids)))
    new = segments.build_rows(rows)
    if new:
        await conn.execute(insert(sample_segments), [{"stream_id": sid, **g._asdict()} for g in new])


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
        g, b = sample_segments.c, sample_blocks.c
        lim = blocks.BLOCK_MAX_SAMPLES
        async with self.write() as conn:
            q = select(streams.c.cold_ts_ms).where(streams.c.id == sid)
            if not self.sqlite:
                q = q.with_for_update()  # two servers compacting, or ingest checking, the stream take turns
            mark = (await conn.execute(q)).scalar()
            # the oldest segments until they hold a block's worth; `bound`: where the next one starts
            metas = (
                await conn.execute(
                    select(g.id, g.ts_min, g.n)
                    .where(g.stream_id == sid, g.ts_min < cutoff)
                    .order_by(g.ts_min)
                    .limit(lim + 1)
                )
            ).all()
            if not metas:
                return 0, 0, 0, False
            ids: list[int] = []
            n = 0
            bound = cutoff
            for seg_id, ts_min, k in metas:
                if n >= lim:
                    bound = min(bound, ts_min)
                    break
                ids.append(seg_id)
                n += k
            more = len(ids) < len(metas)
            payloads = (await conn.execute(select(g.data).where(g.id.in_(ids)))).scalars().all()
            held = sorted((r for p in payloads for r in segments.decode(p)), key=lambda r: r.ts_ms)
            movable = [blocks.Row(*r) for r in held if r.ts_ms < bound]
            hot_rows = movable[:lim]
            more = more or len(movable) > lim
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
                    touched, top_bound = [prev], prev.ts_max
                else:
                    nxt = (
                        await conn.execute(
                            select(b.ts_min)
                            .where(b.stream_id == sid, b.ts_min > lo)
                            .order_by(b.ts_min)
                            .limit(1)
                        )
                    ).scalar()
                    top_bound = mark if nxt is None else nxt - 1
                kept = [r for r in hot_rows if r.ts_ms <= top_bound]
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
            # the segments go; what of them was not moved (newer than the cutoff, or for the next step) stays
            moved = {r.ts_ms for r in hot_rows}
            await rewrite_segments(conn, sid, ids, [r for r in held if r.ts_ms not in moved])
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
            dups += 1  # ingest keeps these out (stored_by_ts, under the stream lock): a safeguard only
            continue
        merged[r.ts_ms] = r
    rows = [merged[t] for t in sorted(merged)]
    # blocks that were separate stay separate where they were full; the merged run is cut afresh
    out = [(c[0].ts_ms, c[-1].ts_ms, len(c), blocks.encode(c)) for c in chunk(rows)]
    return out, dups
