"""Storing a validated batch: duplicate and clash detection against the stored samples, the batch's hot
segments (one row per stream, store/segments.py), 1-minute and 1-hour rollups, the battery's newest sample
and its field-by-field last known state.

Why hand-written dedup instead of a unique index per sample: the per-sample table's two b-tree inserts per
row were most of the server's ingest CPU. The rules it enforced stay (per stream):
- a sample whose (seq, ts) is stored is a duplicate (counted once more in the reply, stored once), also when
  repeated inside one batch, and also when it was compacted into a block (looked up by ts in the blocks when
  its ts is at or before the stream's ``cold_ts_ms`` watermark, store/cold.py);
- a sample whose ts is held by another seq, or whose seq is stored (hot) with another ts, is a clash:
  refused with its index. (A seq re-used with a new ts after its first sample was compacted is not caught:
  blocks are found by time only; gateways re-send what they stored, with its ts.)
The normal batch, every sample newer (seq and ts) than what its streams hold, costs one query for the
streams' watermarks and one for the segments it overlaps (two empty index ranges per stream); only the
segments a re-send overlaps are decoded, and compared with numpy.
Concurrency: PostgreSQL locks the batch's stream rows (``FOR UPDATE``, in id order) before looking, and
compaction takes the same lock, so two requests carrying the same samples (a gateway re-sending while its
first attempt is in flight; two server processes) take turns and only the first stores them. SQLite has one
writer (the group commit below).

Validation and packing come first (:mod:`trackingbms.server.store.packing`), driven by the ingest service
(:mod:`trackingbms.server.ingest`), which is what HTTP and the MQTT / JetStream workers call.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import sqlite3
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import orjson
from sqlalchemy import BigInteger, Integer, LargeBinary, and_, bindparam, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from trackingbms.analytics.cells import SERIES
from trackingbms.server.db import (
    ROLLUP_PARTS,
    STATE_FIELDS,
    STATE_JSON_FIELDS,
    batteries,
    battery_state,
    devices,
    streams,
)
from trackingbms.server.store import cold, packing, segments
from trackingbms.server.store.base import DeviceRef, StoreCore
from trackingbms.server.store.packing import PackedSample
from trackingbms.server.store.series import SeriesAcc


class Assigned(NamedTuple):
    """A battery the device may report for: its stream from this device, its key, its newest stored ts."""

    stream_id: int
    battery_pk: int
    last_ts_ms: int | None


@dataclass(slots=True)
class BatchNewest:
    """Per battery, what one batch brings: its newest sample, the most cells / temps seen, and per presence
    mask the newest (ts, data) carrying that mask (a batch holds few distinct masks: cheap to keep)."""

    ts_ms: int
    seq: int
    data: bytes
    n_cells: int
    n_temps: int
    by_mask: dict[int, tuple[int, bytes]]


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    #: newest sample per battery in this batch, for the live feed: battery_id → wire sample (left out
    #: when the battery already had a newer sample stored)
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)


#: a batch waiting for SQLite's group commit, and its reply
_Waiting = tuple[DeviceRef, list[PackedSample], int, "asyncio.Future[IngestResult]"]


class IngestStore(StoreCore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: SQLite: batches waiting for the group commit, and the task committing them
        self._waiting: collections.deque[
            tuple[DeviceRef, list[PackedSample], int, asyncio.Future[IngestResult]]
        ] = collections.deque()
        self._committer: asyncio.Task[None] | None = None

    async def store_samples(self, device: DeviceRef, parsed: list[PackedSample], t_now: int) -> IngestResult:
        """Store (idempotent) and commit validated samples of one device; returns only after the commit.
        ``rejected`` lists the samples refused here (battery not assigned, clash), sorted by index.

        SQLite: batches waiting for the one writer are stored in one transaction (a group commit: one
        fsync for several batches, see :meth:`_commit_waiting`); PostgreSQL commits each on its own
        connection (the server flushes concurrent commits together)."""
        if not parsed:
            return IngestResult()
        if self.sqlite:
            fut: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
            self._waiting.append((device, parsed, t_now, fut))
            if self._committer is None or self._committer.done():
                self._committer = asyncio.create_task(self._commit_waiting())
            # shielded: a request that goes away leaves the group's other batches alone
            return await asyncio.shield(fut)
        async with self.write() as conn:
            return await self._store_batch(conn, device, parsed, t_now)

    async def _commit_waiting(self) -> None:
        """SQLite's group commit: the batches that queued while the previous transaction committed go into
        the next one, one after another (each sees what the ones before it stored, as in separate
        transactions), then one commit, then every batch's reply. At 500 samples a batch the fsync of a
        commit (5-15 ms on a shared disk) held the single writer longer than the batch's SQL did. If a
        batch fails, the transaction is rolled back and each batch of the group goes alone, so that only
        the failing one sees its error."""
        while self._waiting:
            group: list[_Waiting] = []
            n = 0
            while self._waiting and (not group or n + len(self._waiting[0][1]) <= _GROUP_COMMIT_SAMPLES):
                group.append(self._waiting.popleft())
                n += len(group[-1][1])
            try:
                results = await self._store_group(group)
            except BaseException:  # cancelled (shutdown): no request is left waiting for ever
                for *_, fut in (*group, *self._waiting):
                    fut.cancel()
                self._waiting.clear()
                raise
            for (*_, fut), res in zip(group, results, strict=True):
                if fut.done():
                    continue
                if isinstance(res, Exception):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    async def _store_group(self, group: list[_Waiting]) -> list[IngestResult | Exception]:
        try:
            async with self.write() as conn:
                return [
                    await self._store_batch(conn, device, parsed, t_now) for device, parsed, t_now, _ in group
                ]
        except Exception as e:
            if len(group) == 1:
                return [e]
        out: list[IngestResult | Exception] = []
        for device, parsed, t_now, _ in group:  # one of them failed: each alone, only it sees its error
            try:
                async with self.write() as conn:
                    out.append(await self._store_batch(conn, device, parsed, t_now))
            except Exception as e:
                out.append(e)
        return out

    async def _store_batch(
        self, conn: AsyncConnection, device: DeviceRef, parsed: list[PackedSample], t_now: int
    ) -> IngestResult:
        """One batch's statements, in the caller's transaction."""
        res = IngestResult()
        marks: dict[int, int | None] | None = None  # PostgreSQL: the locked streams' cold watermarks
        db: Any = None  # SQLite: the aiosqlite connection
        if self.sqlite:
            db = await _aiosqlite(conn)
            rows = await db.execute_fetchall(
                _SQLITE_SQL["assigned"], {"device_id": device.id, "tenant_id": device.tenant_id}
            )
        else:
            # one round trip: the device's contact time, the batch's batteries and their streams, locked
            names = list(dict.fromkeys(p.battery_id for p in parsed))
            got = await conn.exec_driver_sql(_PG_ASSIGNED_SQL, (device.id, device.tenant_id, names, t_now))
            rows = got.all()
            marks = {r[1]: r[4] for r in rows}
        assigned = {r[0]: Assigned(r[1], r[2], r[3]) for r in rows}
        kept: list[PackedSample] = []
        by_stream: dict[int, list[int]] = {}  # stream → its samples' places in `kept`
        stream_of = {bid: a.stream_id for bid, a in assigned.items()}
        for p in parsed:
            sid = stream_of.get(p.battery_id)
            if sid is None:
                res.rejected.append(
                    {
                        "index": p.index,
                        "error": f"battery_id: {p.battery_id!r} is not assigned to this device",
                    }
                )
                continue
            ks = by_stream.get(sid)
            if ks is None:
                by_stream[sid] = [len(kept)]
            else:
                ks.append(len(kept))
            kept.append(p)
        if kept:
            accepted, clashes, keys = await self._dedup(conn, kept, by_stream, marks)
            res.accepted = sum(len(ks) for ks in accepted.values())
            for k, err in clashes.items():
                res.rejected.append({"index": kept[k].index, "error": err})
            res.duplicates = len(kept) - res.accepted - len(clashes)
            seg_rows = _segment_rows(kept, accepted, keys)
            newest: dict[str, BatchNewest] = {}
            # each minute row's samples, folded at once below (SeriesAcc.of_points: column-wise)
            points: dict[tuple[int, int], list[packing.Stats]] = {}
            for stream, ks in accepted.items():
                for k in ks:
                    p = kept[k]
                    key = (stream, p.ts_ms - p.ts_ms % 60_000)
                    got = points.get(key)
                    if got is None:
                        points[key] = [p.series]
                    else:
                        got.append(p.series)
            for k, p in enumerate(kept):
                if clashes and k in clashes:
                    continue
                seq, ts, data = p.seq, p.ts_ms, p.data
                wire = p.wire
                n_cells = len(wire.get("cells_mv") or ())
                n_temps = len(wire.get("temps_c") or ())
                mask = data[0] | data[1] << 8  # packing.presence_mask, inlined: once per sample
                cur = newest.get(p.battery_id)
                if cur is None:
                    newest[p.battery_id] = BatchNewest(ts, seq, data, n_cells, n_temps, {mask: (ts, data)})
                else:
                    if ts >= cur.ts_ms:
                        cur.ts_ms, cur.seq, cur.data = ts, seq, data
                    if n_cells > cur.n_cells:
                        cur.n_cells = n_cells
                    if n_temps > cur.n_temps:
                        cur.n_temps = n_temps
                    prev = cur.by_mask.get(mask)
                    if prev is None or ts >= prev[0]:
                        cur.by_mask[mask] = (ts, data)
            rollups = {key: SeriesAcc.of_points(pts) for key, pts in points.items()}
            # hours folded from this batch's minutes, upserted beside them in the same transaction:
            # a few rows per stream and batch, always exact (late samples included), no lag
            hours: dict[tuple[int, int], SeriesAcc] = {}
            for (stream, minute), acc in rollups.items():
                key = (stream, minute - minute % 3_600_000)
                h = hours.get(key)
                if h is None:
                    hours[key] = SeriesAcc(list(acc.flat))
                else:
                    h.merge(acc)
            # in battery order, so that concurrent batches lock rows in one order
            order = sorted(newest, key=lambda b: assigned[b].battery_pk)
            if not self.sqlite:
                seen = [(assigned[bid].battery_pk, newest[bid]) for bid in order]
                await _write_pg(conn, seg_rows, rollups, hours, seen, t_now)
            else:
                await self._insert_segments(conn, seg_rows)
                if rollups:
                    await self._upsert_rollups(conn, rollups, hours)
            if newest and self.sqlite:
                # one executemany for the batch: arrival figures always, "latest" only if newer
                await db.executemany(
                    _SQLITE_SQL["battery_seen"],
                    [
                        {
                            "b_id": assigned[bid].battery_pk,
                            "t_now": t_now,
                            "b_ts": newest[bid].ts_ms,
                            "b_seq": newest[bid].seq,
                            "b_data": newest[bid].data,
                            "n_cells": newest[bid].n_cells,
                            "n_temps": newest[bid].n_temps,
                        }
                        for bid in order
                    ],
                )
                # the last known state: each field merged in SQL, so concurrent batches cannot race
                await db.executemany(
                    _SQLITE_SQL["state"],
                    [_state_row(assigned[bid].battery_pk, newest[bid].by_mask) for bid in order],
                )
            for bid, nw in newest.items():
                stored_ts = assigned[bid].last_ts_ms
                if stored_ts is not None and nw.ts_ms < stored_ts:
                    continue  # a backfill: live clients would take it for the pack's present state
                res.latest[bid] = packing.to_sample(bid, nw.seq, nw.ts_ms, nw.data)
        res.rejected.sort(key=lambda r: r["index"])
        if self.sqlite:  # PostgreSQL: with the first statement
            await db.execute(_SQLITE_SQL["device_contact"], {"d_id": device.id, "t_now": t_now})
        return res

    async def _dedup(
        self,
        conn: AsyncConnection,
        kept: list[PackedSample],
        by_stream: dict[int, list[int]],
        locked: dict[int, int | None] | None = None,
    ) -> tuple[dict[int, list[int]], dict[int, str], dict[int, tuple[np.ndarray, np.ndarray]]]:
        """Which samples are new (per stream, their places in ``kept``, in batch order) and which clash
        (place → error); the others are duplicates. The rules are in the module docstring. Also the
        (seq, ts) arrays of the streams whose samples were all new (the normal case: not built twice).
        ``locked``: PostgreSQL, the streams' cold watermarks, read as the caller locked the streams."""
        keys: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        ranges: list[tuple[int, int, int, int, int]] = []  # per stream: its seq and ts ranges in the batch
        for sid, ks in by_stream.items():
            seqs = np.fromiter((kept[k].seq for k in ks), dtype=np.int64, count=len(ks))
            tss = np.fromiter((kept[k].ts_ms for k in ks), dtype=np.int64, count=len(ks))
            keys[sid] = seqs, tss
            ranges.append((sid, int(seqs.min()), int(seqs.max()), int(tss.min()), int(tss.max())))
        ranges.sort()
        marks: dict[int, int | None] = {}
        stored: dict[int, list[bytes]] = {}
        # hand-written SQL: building the SQLAlchemy expressions cost ~2 ms a batch
        if self.sqlite:
            # one round trip (per _SQLITE_OVERLAP_STREAMS streams): the watermarks, then the segments
            # overlapping the batch's ranges
            db = await _aiosqlite(conn)
            for start in range(0, len(ranges), _SQLITE_OVERLAP_STREAMS):
                part = ranges[start : start + _SQLITE_OVERLAP_STREAMS]
                params: list[int] = [r[0] for r in part]
                for sid, seq_lo, seq_hi, ts_lo, ts_hi in part:
                    params += (sid, seq_lo, seq_hi, sid, ts_lo, ts_hi)
                got = await db.execute_fetchall(_sqlite_overlap_sql(len(part)), params)
                for kind, sid, mark, payload in got:
                    if kind == 0:
                        marks[sid] = mark
                    else:
                        stored.setdefault(sid, []).append(payload)
        else:
            apg = (await conn.get_raw_connection()).driver_connection
            # the streams were locked by the caller (_PG_ASSIGNED_SQL); the segments come in a statement of
            # their own: it sees what a request we waited for committed
            cols = list(map(list, zip(*ranges, strict=True)))
            marks = locked or {}
            for sid, payload in await apg.fetch(_PG_OVERLAP_SQL, *cols):
                stored.setdefault(sid, []).append(payload)
        accepted: dict[int, list[int]] = {}
        clashes: dict[int, str] = {}
        whole: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for sid, ks in by_stream.items():
            seqs, tss = keys[sid]
            mark = marks.get(sid)
            if (
                sid not in stored
                and (mark is None or int(tss.min()) > mark)
                and (len(ks) == 1 or (bool(np.all(seqs[1:] > seqs[:-1])) and len(np.unique(tss)) == len(ks)))
            ):
                accepted[sid] = ks  # the normal case: nothing stored to compare with, no repeat inside
                whole[sid] = seqs, tss
                continue
            ok = await self._dedup_stream(conn, sid, kept, ks, seqs, tss, stored.get(sid, []), mark, clashes)
            if ok:
                accepted[sid] = ok
        return accepted, clashes, whole

    @staticmethod
    async def _dedup_stream(
        conn: AsyncConnection,
        sid: int,
        kept: list[PackedSample],
        ks: list[int],
        seqs: np.ndarray,
        tss: np.ndarray,
        payloads: list[bytes],
        mark: int | None,
        clashes: dict[int, str],
    ) -> list[int]:
        """The slow path of :meth:`_dedup` for one stream (a re-send, a repeat, a backfill): its samples in
        batch order against the stored ones they may meet, hot and cold, and the ones before them."""
        by_ts: dict[int, int] = {}  # ts → seq of what is stored (hot) or accepted before in this batch
        by_seq: dict[int, int] = {}
        for payload in payloads:
            st_seq, st_ts = segments.keys(payload)
            meet = np.isin(st_seq, seqs) | np.isin(st_ts, tss)  # only the stored keys this batch can meet
            if meet.any():
                ss, tt = st_seq[meet].tolist(), st_ts[meet].tolist()
                by_ts.update(zip(tt, ss, strict=True))
                by_seq.update(zip(ss, tt, strict=True))
        in_cold: dict[int, int] = {}
        if mark is not None:
            early = tss[tss <= mark]
            if len(early):
                in_cold = await cold.stored_by_ts(conn, sid, int(early.min()), int(early.max()))
        ok: list[int] = []
        for k, seq, ts in zip(ks, seqs.tolist(), tss.tolist(), strict=True):
            other = by_ts.get(ts)
            if other is None and ts in in_cold:
                other = in_cold[ts]
            if other is not None:
                if other != seq:
                    clashes[k] = f"ts: another sample of this battery (seq {other}) has the same ts"
                continue  # else a duplicate
            if seq in by_seq:
                clashes[k] = f"seq: {seq} was already stored with another ts"
                continue
            by_ts[ts] = seq
            by_seq[seq] = ts
            ok.append(k)
        return ok

    async def _insert_segments(self, conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
        """Insert segment rows (:func:`_segment_rows`)."""
        if not rows:
            return
        db = await _aiosqlite(conn)
        for start in range(0, len(rows), _SQLITE_SEGMENT_ROWS):
            chunk = rows[start : start + _SQLITE_SEGMENT_ROWS]
            await db.execute(_sqlite_segment_sql(len(chunk)), [x for r in chunk for x in r])

    async def _upsert_rollups(
        self,
        conn: AsyncConnection,
        minutes: dict[tuple[int, int], SeriesAcc],
        hours: dict[tuple[int, int], SeriesAcc],
    ) -> None:
        """SQLite: add the batch's folds to the minute and hour rows. Hand-written SQL, not the SQLAlchemy
        upsert construct: its per-row parameter processing cost ~0.1 ms a row (38 columns) under the SQLite
        lock. (PostgreSQL: in :func:`_write_pg`'s one statement.)"""
        db = await _aiosqlite(conn)
        for table, folds in (("rollup_1m", minutes), ("rollup_1h", hours)):
            keys = list(folds)
            for start in range(0, len(keys), _SQLITE_ROLLUP_ROWS):
                chunk = keys[start : start + _SQLITE_ROLLUP_ROWS]
                params: list[Any] = []
                for key in chunk:
                    params += key
                    params += folds[key].flat
                await db.execute(_sqlite_rollup_sql(table, len(chunk)), params)


async def _aiosqlite(conn: AsyncConnection) -> Any:
    """SQLite: the aiosqlite connection under ``conn``, in its transaction. Statements sent to it directly
    cost one hop to its thread; through SQLAlchemy's cursor each took three or four (cursor, execute, fetch,
    close: ~0.1 ms of CPU a statement, with the GIL handed back and forth), ~1 ms for a batch's eight."""
    return (await conn.get_raw_connection()).driver_connection


def _sqlite_state_upsert() -> Any:
    """SQLite: insert a battery's state, or merge it field by field: a field moves only to a value read at
    the same ts or later (a backfill of old samples never overwrites newer values). PostgreSQL: the same
    merge, hand-written in :func:`_pg_write_sql`."""
    from sqlalchemy.dialects.sqlite import insert as dialect_insert

    stmt = dialect_insert(battery_state)
    st, ex = battery_state.c, stmt.excluded
    set_: dict[str, Any] = {}
    for name, _ in STATE_FIELDS:
        # NULL when this batch did not carry the field: then the stored value stays
        newer = ex[f"{name}_ts"] >= func.coalesce(st[f"{name}_ts"], ex[f"{name}_ts"])
        set_[name] = case((newer, ex[name]), else_=st[name])
        set_[f"{name}_ts"] = case((newer, ex[f"{name}_ts"]), else_=st[f"{name}_ts"])
    return stmt.on_conflict_do_update(index_elements=["battery_id"], set_=set_)


#: the batteries a device reports for, with their stream from it: built once (~60 µs of Python per batch)
_ASSIGNED = (
    select(batteries.c.battery_id, streams.c.id, batteries.c.id, batteries.c.last_ts_ms)
    .join(
        streams,
        and_(streams.c.battery_id == batteries.c.id, streams.c.device_id == bindparam("device_id")),
    )
    .where(batteries.c.tenant_id == bindparam("tenant_id"), batteries.c.device_id == bindparam("device_id"))
)


def _battery_seen() -> Any:
    b = batteries.c
    ts = bindparam("b_ts", type_=BigInteger)
    n_cells = bindparam("n_cells", type_=Integer)
    n_temps = bindparam("n_temps", type_=Integer)
    newer = or_(b.last_ts_ms.is_(None), b.last_ts_ms <= ts)
    return (
        update(batteries)
        .where(b.id == bindparam("b_id"))
        .values(
            last_received_ms=bindparam("t_now", type_=BigInteger),
            received_ts_ms=ts,
            cell_count=case((b.cell_count < n_cells, n_cells), else_=b.cell_count),
            temp_count=case((b.temp_count < n_temps, n_temps), else_=b.temp_count),
            last_seq=case((newer, bindparam("b_seq", type_=BigInteger)), else_=b.last_seq),
            last_data=case((newer, bindparam("b_data", type_=LargeBinary)), else_=b.last_data),
            last_ts_ms=case((newer, ts), else_=b.last_ts_ms),
        )
    )


#: built once: building the UPDATE expression cost ~0.1 ms a batch
_DEVICE_CONTACT = (
    update(devices)
    .where(devices.c.id == bindparam("d_id"))
    .values(last_contact_ms=bindparam("t_now", type_=BigInteger))
)


def _sqlite_statements() -> dict[str, str]:
    """The SQLite text (named parameters) of the statements built with SQLAlchemy above, run through
    aiosqlite directly (:func:`_aiosqlite`) with the same parameters. Their values need no conversion
    (bools, ints, floats, str, bytes: what sqlite3 takes as SQLAlchemy's processors would give it)."""
    from sqlalchemy.dialects import sqlite

    dialect = sqlite.dialect(paramstyle="named")
    return {
        "assigned": str(_ASSIGNED.compile(dialect=dialect)),
        "battery_seen": str(_battery_seen().compile(dialect=dialect)),
        "state": str(_sqlite_state_upsert().compile(dialect=dialect)),
        "device_contact": str(_DEVICE_CONTACT.compile(dialect=dialect)),
    }


_SQLITE_SQL = _sqlite_statements()


def _state_row(battery_pk: int, by_mask: dict[int, tuple[int, bytes]]) -> dict[str, Any]:
    """A battery's state row from one batch: per field the value of the newest sample carrying it."""
    best: dict[str, tuple[int, bytes]] = {}
    for mask, (ts, data) in by_mask.items():
        for name, bit in packing.FIELD_BITS:
            if mask & bit:
                b = best.get(name)
                if b is None or ts > b[0]:
                    best[name] = (ts, data)
    row: dict[str, Any] = {"battery_id": battery_pk}
    decoded: dict[bytes, dict[str, Any]] = {}  # few distinct samples: unpack each once
    for name, _ in packing.FIELD_BITS:
        b = best.get(name)
        if b is None:
            row[name] = row[f"{name}_ts"] = None
            continue
        ts, data = b
        fields = decoded.get(data)
        if fields is None:
            fields = decoded[data] = packing.unpack(data)
        v = fields[name]
        row[name] = orjson.dumps(v).decode() if name in STATE_JSON_FIELDS else v
        row[f"{name}_ts"] = ts
    return row


#: SQLite group commit: at most this many samples in one transaction (a few batches)
_GROUP_COMMIT_SAMPLES = 4_000
#: SQLite's limit on parameters per statement: 999 before 3.32, 32,766 since
_SQLITE_MAX_VARS = 32_766 if sqlite3.sqlite_version_info >= (3, 32) else 999
#: streams per overlap query (7 parameters each)
_SQLITE_OVERLAP_STREAMS = _SQLITE_MAX_VARS // 7
#: rows per multi-row INSERT of segments (7 parameters a row)
_SQLITE_SEGMENT_ROWS = _SQLITE_MAX_VARS // 7
#: the rollup columns after (stream_id, bucket_ms), in SeriesAcc.flat order
_ROLLUP_COLUMNS: tuple[str, ...] = tuple(f"{name}_{part}" for name in SERIES for part in ROLLUP_PARTS)
_SQLITE_ROLLUP_ROWS = _SQLITE_MAX_VARS // (2 + len(_ROLLUP_COLUMNS))


def _rollup_merge_sql(sqlite: bool) -> str:
    """The ON CONFLICT clause adding a fold to a stored rollup row: n and sum add up, min / max skip NULLs
    (a series absent from one side), as :meth:`SeriesAcc.merge` does."""
    if sqlite:
        lo = "min(coalesce({c}, excluded.{c}), coalesce(excluded.{c}, {c}))"
        hi = "max(coalesce({c}, excluded.{c}), coalesce(excluded.{c}, {c}))"
    else:
        lo, hi = "least({t}.{c}, excluded.{c})", "greatest({t}.{c}, excluded.{c})"  # both skip NULLs
    sets = []
    for name in SERIES:
        sets.append("{n} = coalesce({t}.{n}, 0) + coalesce(excluded.{n}, 0)".replace("{n}", f"{name}_n"))
        sets.append(f"{name}_min = " + lo.replace("{c}", f"{name}_min"))
        sets.append(f"{name}_max = " + hi.replace("{c}", f"{name}_max"))
        sets.append(
            "{s} = coalesce({t}.{s}, 0.0) + coalesce(excluded.{s}, 0.0)".replace("{s}", f"{name}_sum")
        )
    return "ON CONFLICT (stream_id, bucket_ms) DO UPDATE SET " + ", ".join(sets)


@functools.lru_cache(maxsize=64)
def _sqlite_rollup_sql(table: str, n_rows: int) -> str:
    cols = ("stream_id", "bucket_ms", *_ROLLUP_COLUMNS)
    row = "(" + ", ".join("?" * len(cols)) + ")"
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES {', '.join([row] * n_rows)} " + _rollup_merge_sql(
        True
    ).replace("{t}", table)


#: PostgreSQL's column type of each battery_state field (db.STATE_FIELDS' SQLAlchemy types)
_PG_TYPES = {"Float": "float8", "Integer": "int", "String": "text", "Text": "text", "Boolean": "bool"}


def _pg_write_sql() -> str:
    """PostgreSQL: every write of a batch in one statement over unnest arrays (one round trip instead of
    five; each statement cost ~0.3 ms of Python and asyncpg a batch): its segments, the minute and hour
    rollups (merged as SQLite's), the batteries' arrival figures and newest sample (only if newer), and
    their field-by-field state. Arrays may be empty (a batch of duplicates writes no segment).
    Lock order: rollups by key and batteries by id (sorted by the caller; the batteries locked through
    ``lk`` since an UPDATE ... FROM does not follow its array's order), as the separate statements did."""
    k = itertools.count(1)

    def arrays(types: list[str]) -> str:
        return ", ".join(f"${next(k)}::{t}[]" for t in types)

    seg = (
        "INSERT INTO sample_segments (stream_id, seq_min, seq_max, ts_min, ts_max, n, data) "
        f"SELECT * FROM unnest({arrays(['int', 'bigint', 'bigint', 'bigint', 'bigint', 'int', 'bytea'])})"
    )
    cols = ("stream_id", "bucket_ms", *_ROLLUP_COLUMNS)
    types = ["int", "bigint"] + ["int" if c.endswith("_n") else "float8" for c in _ROLLUP_COLUMNS]
    merge, names = _rollup_merge_sql(False), ", ".join(cols)
    roll = {
        t: f"INSERT INTO {t} ({names}) SELECT * FROM unnest({arrays(types)}) {merge.replace('{t}', t)}"
        for t in ("rollup_1m", "rollup_1h")
    }
    b_ids = f"${next(k)}::int[]"
    seen = f"unnest({b_ids}, {arrays(['bigint', 'bigint', 'bytea', 'int', 'int'])})"
    t_now = f"${next(k)}::bigint"
    newer = "b.last_ts_ms IS NULL OR b.last_ts_ms <= u.b_ts"
    battery = (
        f"UPDATE batteries b SET last_received_ms = {t_now}, received_ts_ms = u.b_ts, "
        "cell_count = CASE WHEN b.cell_count < u.n_cells THEN u.n_cells ELSE b.cell_count END, "
        "temp_count = CASE WHEN b.temp_count < u.n_temps THEN u.n_temps ELSE b.temp_count END, "
        f"last_seq = CASE WHEN {newer} THEN u.b_seq ELSE b.last_seq END, "
        f"last_data = CASE WHEN {newer} THEN u.b_data ELSE b.last_data END, "
        f"last_ts_ms = CASE WHEN {newer} THEN u.b_ts ELSE b.last_ts_ms END "
        f"FROM {seen} AS u(b_id, b_ts, b_seq, b_data, n_cells, n_temps) "
        "WHERE b.id = u.b_id AND b.id IN (SELECT id FROM lk)"
    )
    state_cols = ["battery_id"]
    state_types = ["int"]
    sets = []
    for name, type_ in STATE_FIELDS:
        state_cols += [name, f"{name}_ts"]
        sa_type = type_ if isinstance(type_, type) else type(type_)  # String(16) is an instance
        state_types += [_PG_TYPES[sa_type.__name__], "bigint"]
        # NULL when this batch did not carry the field: then the stored value stays
        new = f"excluded.{name}_ts >= coalesce(battery_state.{name}_ts, excluded.{name}_ts)"
        sets.append(f"{name} = CASE WHEN {new} THEN excluded.{name} ELSE battery_state.{name} END")
        sets.append(f"{name}_ts = CASE WHEN {new} THEN excluded.{name}_ts ELSE battery_state.{name}_ts END")
    state = (
        f"INSERT INTO battery_state ({', '.join(state_cols)}) SELECT * FROM unnest({arrays(state_types)}) "
        f"ON CONFLICT (battery_id) DO UPDATE SET {', '.join(sets)}"
    )
    return (
        f"WITH seg AS ({seg}), m AS ({roll['rollup_1m']}), h AS ({roll['rollup_1h']}), "
        f"lk AS MATERIALIZED (SELECT id FROM batteries WHERE id = ANY({b_ids}) ORDER BY id FOR UPDATE), "
        f"bs AS ({battery}) {state}"
    )


_PG_WRITE_SQL = _pg_write_sql()


async def _write_pg(
    conn: AsyncConnection,
    seg_rows: list[tuple[Any, ...]],
    minutes: dict[tuple[int, int], SeriesAcc],
    hours: dict[tuple[int, int], SeriesAcc],
    seen: list[tuple[int, BatchNewest]],
    t_now: int,
) -> None:
    """Run :data:`_PG_WRITE_SQL`: ``seg_rows`` from :func:`_segment_rows`, the rollup folds, and per battery
    (in battery key order) what the batch brought."""
    args: list[Any] = [list(c) for c in zip(*seg_rows, strict=True)] if seg_rows else [[]] * 7
    for folds in (minutes, hours):
        keys = sorted(folds)  # one lock order for concurrent batches of the same streams
        args.append([key[0] for key in keys])
        args.append([key[1] for key in keys])
        flats = [folds[key].flat for key in keys]
        args += [[f[o] for f in flats] for o in range(len(_ROLLUP_COLUMNS))]
    args.append([pk for pk, _ in seen])
    args += [
        [nw.ts_ms for _, nw in seen],
        [nw.seq for _, nw in seen],
        [nw.data for _, nw in seen],
        [nw.n_cells for _, nw in seen],
        [nw.n_temps for _, nw in seen],
        t_now,
    ]
    states = [_state_row(pk, nw.by_mask) for pk, nw in seen]
    args.append([pk for pk, _ in seen])
    for name, _ in STATE_FIELDS:
        args.append([st[name] for st in states])
        args.append([st[f"{name}_ts"] for st in states])
    apg = (await conn.get_raw_connection()).driver_connection
    await apg.execute(_PG_WRITE_SQL, *args)


def _segment_rows(
    kept: list[PackedSample], accepted: dict[int, list[int]], whole: dict[int, tuple[np.ndarray, np.ndarray]]
) -> list[tuple[Any, ...]]:
    """The accepted samples as segment rows (stream_id, *NewSegment): one per stream (more only for a batch
    spanning a day). ``whole``: the (seq, ts) arrays of streams whose samples were all accepted."""
    rows: list[tuple[Any, ...]] = []
    for sid, ks in accepted.items():
        ps = [kept[k] for k in ks]
        got = whole.get(sid)
        if got is None:
            seqs = np.fromiter((p.seq for p in ps), dtype=np.int64, count=len(ps))
            tss = np.fromiter((p.ts_ms for p in ps), dtype=np.int64, count=len(ps))
        else:
            seqs, tss = got
        rows += [(sid, *seg) for seg in segments.build(seqs, tss, [p.data for p in ps])]
    return rows


#: PostgreSQL, a batch's first statement: the device's contact time, and its batteries among the batch's
#: (as _ASSIGNED) with their streams' cold watermarks, the stream rows locked in id order (one lock order
#: for concurrent batches): one request at a time per stream until commit; compaction takes the same lock
#: (store/cold.py). The device row is locked too (after the streams): a config push locks it before the
#: batteries, as this transaction does now.
_PG_ASSIGNED_SQL = (
    "WITH d AS (UPDATE devices SET last_contact_ms = $4::bigint WHERE id = $1::int) "
    "SELECT b.battery_id, s.id, b.id, b.last_ts_ms, s.cold_ts_ms FROM batteries b "
    "JOIN streams s ON s.battery_id = b.id AND s.device_id = $1::int "
    "WHERE b.tenant_id = $2::int AND b.device_id = $1::int AND b.battery_id = ANY($3::text[]) "
    "ORDER BY s.id FOR UPDATE OF s"
)
#: the segments a batch may meet: per stream, those whose seq range or ts range overlaps the batch's (two
#: index ranges, on (stream_id, seq_max) and (stream_id, ts_max): empty when the batch is newer)
_PG_OVERLAP_SQL = (
    "SELECT stream_id, data FROM sample_segments WHERE id IN ("
    "SELECT g.id FROM unnest($1::int[], $2::bigint[], $3::bigint[]) AS b(sid, lo, hi) "
    "JOIN sample_segments g ON g.stream_id = b.sid AND g.seq_max >= b.lo AND g.seq_min <= b.hi "
    "UNION ALL SELECT g.id FROM unnest($1::int[], $4::bigint[], $5::bigint[]) AS b(sid, lo, hi) "
    "JOIN sample_segments g ON g.stream_id = b.sid AND g.ts_max >= b.lo AND g.ts_min <= b.hi)"
)


@functools.lru_cache(maxsize=64)
def _sqlite_overlap_sql(n_streams: int) -> str:
    """The watermarks of ``n_streams`` streams (kind 0), then the segments overlapping each stream's seq or
    ts range in the batch (kind 1), as in _PG_OVERLAP_SQL."""
    ids = ", ".join("?" * n_streams)
    branches = " UNION ALL ".join(
        [
            "SELECT id FROM sample_segments WHERE stream_id = ? AND seq_max >= ? AND seq_min <= ? UNION ALL "
            "SELECT id FROM sample_segments WHERE stream_id = ? AND ts_max >= ? AND ts_min <= ?"
        ]
        * n_streams
    )
    return (
        f"SELECT 0, id, cold_ts_ms, NULL FROM streams WHERE id IN ({ids}) UNION ALL "
        f"SELECT 1, stream_id, NULL, data FROM sample_segments WHERE id IN ({branches})"
    )


@functools.lru_cache(maxsize=64)
def _sqlite_segment_sql(n: int) -> str:
    return (
        "INSERT INTO sample_segments (stream_id, seq_min, seq_max, ts_min, ts_max, n, data) VALUES "
        + ",".join(["(?, ?, ?, ?, ?, ?, ?)"] * n)
    )
