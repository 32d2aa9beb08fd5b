"""The durable queue: a sample counts as taken once on disk, and leaves only after the server acked it.

SQLite in WAL mode with ``synchronous=FULL``: each commit fsyncs the WAL, so a sample survives a crash or a
power cut the moment :meth:`DurableQueue.put` returns. ``seq`` is assigned in the same transaction as the
sample row, from a per-battery counter that only ever grows, so seqs are strictly increasing across
restarts and a crash can never hand out a seq twice (an uncommitted seq was never seen by anyone).
A battery's first seq is the Unix time in milliseconds: if the state directory is ever lost (SD card
replaced), the new counter still starts above every seq sent before (the server would otherwise take the
new samples for duplicates and drop them), as long as a battery is read less than 1000 times a second.

The ``acked`` column is a sample's state: ``PENDING`` (to send), ``ACKED`` (the server has it; kept for the
local history API until ``local_history_h`` passes) or ``PARKED`` (rejected for a reason an operator can fix,
e.g. the battery is not yet assigned to this device: kept, out of the sending queue, and retried slowly).
Samples rejected as invalid go to the ``dead_letter`` table with the reason;
:meth:`DurableQueue.replay_dead_letters` moves them back (``trackingbms gateway --replay-dead-letters``).

Disk budget policy (checked after writes and periodically):

1. acknowledged samples are deleted oldest first (they are safe on the server);
2. if still over budget, the oldest *unsent* (pending or parked) samples are thinned: every other one in the
   oldest quarter of the queue is dropped (counted in ``thinned_total``, logged as a warning, reported in
   the heartbeat).
   The newest samples are never dropped; a thinned backlog keeps its time span at half the resolution.

Above 80 % of the budget a warning is logged (at most once a minute) and the heartbeat reports the use.

Threading: the synchronous methods do the work. Inside the running gateway every call goes through the
``a*`` coroutines (or :meth:`DurableQueue.run`), which run it on the queue's one worker thread: an fsync, a
budget pass or a 10,000-row history read never stalls the event loop, and with a single thread no two
transactions ever interleave on the connection. :meth:`aput` returns only once the sample is committed.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson

from trackingbms.model import Reading, Sample, format_ts

log = logging.getLogger("trackingbms.gateway.queue")

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS seqs (battery_id TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    battery_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    body BLOB NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0,
    UNIQUE (battery_id, seq)
);
CREATE INDEX IF NOT EXISTS samples_pending ON samples (id) WHERE acked = 0;
CREATE INDEX IF NOT EXISTS samples_ts ON samples (ts);
CREATE INDEX IF NOT EXISTS samples_parked ON samples (battery_id, id) WHERE acked = 2;
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    battery_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts TEXT NOT NULL,
    body BLOB NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

_CHUNK = 900  # bound variables per statement

# values of samples.acked
PENDING, ACKED, PARKED = 0, 1, 2


class StateDirBusy(RuntimeError):
    pass


@dataclass(slots=True)
class QueuedSample:
    id: int
    battery_id: str
    seq: int
    ts: str
    body: bytes  # wire JSON object without "via" (the uplink adds it)


def encode_sample(sample: Sample) -> bytes:
    wire = sample.to_wire()
    wire.pop("via", None)
    ordered = {"battery_id": wire.pop("battery_id"), "seq": wire.pop("seq"), **wire}
    return orjson.dumps(ordered)


class DurableQueue:
    """SQLite queue: synchronous methods for direct use (tests, CLI, benches), ``a*`` coroutines that run them
    on the queue's own worker thread for the event loop (see the module docstring)."""

    def __init__(self, state_dir: Path, *, disk_budget_mb: float = 200.0, local_history_h: float = 24.0):
        state_dir.mkdir(parents=True, exist_ok=True)
        # one gateway per state dir: two would both send the same queue (the lock dies with the process)
        self._lock = (state_dir / "gateway.lock").open("w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise StateDirBusy(f"another gateway is running with state_dir {state_dir}") from None
        self.path = state_dir / "queue.sqlite3"
        self.budget_bytes = int(disk_budget_mb * 1024 * 1024)
        self.local_history_h = local_history_h
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        # keep the WAL from growing without bound between checkpoints
        self.db.execute("PRAGMA journal_size_limit=8388608")
        self.db.executescript(SCHEMA)
        self._page_size = self.db.execute("PRAGMA page_size").fetchone()[0]
        self.thinned_total = int(self.get_kv("thinned_total") or 0)
        self.acked_pruned_for_budget = 0
        self._last_budget_warning = 0.0
        self._puts_since_budget_check = 0
        # the one thread that touches the connection while the gateway runs (see the module docstring)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tbms-queue")

    def _close_db(self) -> None:
        try:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self.db.close()

    def close(self) -> None:
        self._worker.shutdown(wait=True)  # let queued work finish before the connection goes
        self._close_db()
        self._lock.close()

    # -- async wrappers: the same work, on the worker thread --------------------------------------------

    async def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` (a method of this queue) on the worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, functools.partial(fn, *args, **kwargs))

    async def aclose(self) -> None:
        await self.run(self._close_db)
        self._worker.shutdown(wait=False)
        self._lock.close()

    async def aput(self, battery_id: str, reading: Reading) -> Sample:
        """Returns once the sample is committed (it counts as taken only then)."""
        return await self.run(self.put, battery_id, reading)

    async def afetch(
        self, *, newest: int, oldest: int, exclude: set[int] | frozenset[int] = frozenset()
    ) -> list[QueuedSample]:
        return await self.run(self.fetch, newest=newest, oldest=oldest, exclude=frozenset(exclude))

    async def asettle(
        self,
        *,
        acked: Iterable[int] = (),
        parked: Sequence[QueuedSample] = (),
        dead: Sequence[tuple[QueuedSample, str]] = (),
    ) -> None:
        await self.run(self.settle, acked=list(acked), parked=parked, dead=dead)

    async def apending_count(self) -> int:
        return await self.run(self.pending_count)

    async def aunpark(self, battery_id: str | None = None, *, probe: bool = False) -> int:
        return await self.run(self.unpark, battery_id, probe=probe)

    async def ahistory(
        self, *, since: str | None, battery_id: str | None = None, limit: int = 1000, newest: bool = False
    ) -> list[dict]:
        return await self.run(self.history, since=since, battery_id=battery_id, limit=limit, newest=newest)

    async def aset_kv(self, key: str, value: str) -> None:
        await self.run(self.set_kv, key, value)

    async def ahousekeeping(self) -> None:
        await self.run(self._housekeeping)

    def _housekeeping(self) -> None:
        self.prune_history()
        self.enforce_budget()

    async def astatus(self) -> dict[str, Any]:
        """The heartbeat's queue figures, read in one trip to the worker."""
        return await self.run(self.status)

    def status(self) -> dict[str, Any]:
        return {
            "queue_depth": self.pending_count(),
            "oldest_queued_ts": self.oldest_pending_ts(),
            "disk_used_pct": self.disk_used_pct(),
            "dead_letter_count": self.dead_letter_count(),
            "parked_count": self.parked_count(),
        }

    # -- writing ------------------------------------------------------------------------------------

    def put(self, battery_id: str, reading: Reading) -> Sample:
        """Assign the next seq for the battery, store the sample durably, return it."""
        return self.put_many(battery_id, [reading])[0]

    def put_many(self, battery_id: str, readings: Sequence[Reading]) -> list[Sample]:
        """Several readings of one battery in one transaction (used for bulk loads and benches)."""
        db = self.db
        out: list[Sample] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT next_seq FROM seqs WHERE battery_id = ?", (battery_id,)).fetchone()
            seq = row[0] if row else time.time_ns() // 1_000_000
            rows = []
            for reading in readings:
                sample = Sample.from_reading(reading, battery_id=battery_id, seq=seq)
                rows.append((battery_id, seq, format_ts(sample.ts), encode_sample(sample)))
                out.append(sample)
                seq += 1
            db.executemany("INSERT INTO samples (battery_id, seq, ts, body) VALUES (?, ?, ?, ?)", rows)
            db.execute(
                "INSERT INTO seqs (battery_id, next_seq) VALUES (?, ?) "
                "ON CONFLICT (battery_id) DO UPDATE SET next_seq = excluded.next_seq",
                (battery_id, seq),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._puts_since_budget_check += len(out)
        if self._puts_since_budget_check >= 50:
            self._puts_since_budget_check = 0
            self.enforce_budget()
        return out

    # -- reading for the uplink -----------------------------------------------------------------------

    def pending_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM samples WHERE acked = 0").fetchone()[0]

    def oldest_pending_ts(self) -> str | None:
        row = self.db.execute("SELECT ts FROM samples WHERE acked = 0 ORDER BY id LIMIT 1").fetchone()
        return row[0] if row else None

    def fetch(
        self, *, newest: int, oldest: int, exclude: set[int] | frozenset[int] = frozenset()
    ) -> list[QueuedSample]:
        """Up to ``newest`` of the newest pending samples (the live lane) plus up to ``oldest`` of the oldest
        (the backlog lane), skipping ids in ``exclude`` (already in flight). Newest first, then oldest."""
        # ids first (index-only scans), bodies only for what is picked
        picked: list[int] = []
        seen: set[int] = set()
        if newest > 0:
            for (i,) in self.db.execute(
                "SELECT id FROM samples WHERE acked = 0 ORDER BY id DESC LIMIT ?", (newest + len(exclude),)
            ):
                if i not in exclude:
                    picked.append(i)
                    seen.add(i)
                    if len(picked) >= newest:
                        break
        if oldest > 0:
            want = len(picked) + oldest
            for (i,) in self.db.execute(
                "SELECT id FROM samples WHERE acked = 0 ORDER BY id LIMIT ?",
                (oldest + len(exclude) + len(picked),),
            ):
                if i not in exclude and i not in seen:
                    picked.append(i)
                    if len(picked) >= want:
                        break
        rows: dict[int, QueuedSample] = {}
        for k in range(0, len(picked), _CHUNK):
            chunk = picked[k : k + _CHUNK]
            for row in self.db.execute(
                "SELECT id, battery_id, seq, ts, body FROM samples WHERE id IN "
                f"({','.join('?' * len(chunk))})",
                chunk,
            ):
                rows[row[0]] = QueuedSample(*row)
        return [rows[i] for i in picked if i in rows]

    def ack(self, ids: Iterable[int]) -> None:
        """The server has these samples (accepted or duplicate): they leave the queue."""
        self.settle(acked=ids)

    def dead_letter(self, rejected: Sequence[tuple[QueuedSample, str]]) -> None:
        """Samples the server rejected as invalid go to ``dead_letter`` with the reason."""
        self.settle(dead=rejected)

    def settle(
        self,
        *,
        acked: Iterable[int] = (),
        parked: Sequence[QueuedSample] = (),
        dead: Sequence[tuple[QueuedSample, str]] = (),
    ) -> None:
        """Apply the server's verdict on a batch in one transaction (one fsync): acked samples leave the
        queue (kept for the local history), parked ones wait for a retry, dead ones go to ``dead_letter``."""
        ids = list(acked)
        if not ids and not parked and not dead:
            return
        keep = self.local_history_h > 0
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for i in range(0, len(ids), _CHUNK):
                chunk = ids[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                if keep:
                    db.execute(f"UPDATE samples SET acked = {ACKED} WHERE id IN ({marks})", chunk)
                else:
                    db.execute(f"DELETE FROM samples WHERE id IN ({marks})", chunk)
            if parked:
                db.executemany(f"UPDATE samples SET acked = {PARKED} WHERE id = ?", [(q.id,) for q in parked])
            if dead:
                now = format_ts(datetime.now(UTC))
                db.executemany(
                    "INSERT INTO dead_letter (battery_id, seq, ts, body, reason, at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(q.battery_id, q.seq, q.ts, q.body, reason, now) for q, reason in dead],
                )
                db.executemany("DELETE FROM samples WHERE id = ?", [(q.id,) for q, _ in dead])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        for q, reason in dead:
            log.warning("server rejected %s seq %d: %s (kept in dead_letter)", q.battery_id, q.seq, reason)

    # -- the phone relay (docs/architecture.md "Phone relay") -----------------------------------------------

    def unsent(self, *, after_id: int = 0, limit: int = 500) -> list[QueuedSample]:
        """Pending samples in queue order (oldest first) with an id above ``after_id``: a page of what a phone
        may carry to the server. Parked samples are not offered (the server refused them; see ``unpark``)."""
        return [
            QueuedSample(*row)
            for row in self.db.execute(
                f"SELECT id, battery_id, seq, ts, body FROM samples WHERE acked = {PENDING} AND id > ? "
                "ORDER BY id LIMIT ?",
                (after_id, limit),
            )
        ]

    def settle_relayed(self, ranges: dict[str, Sequence[Sequence[int]]]) -> int:
        """The server has every sample in these ``battery_id → [[first_seq, last_seq], ...]`` runs (a verified
        relay receipt): the unsent ones among them leave the send queue as if the uplink had been acked (kept
        for the local history). One transaction. Returns how many left the queue."""
        keep = self.local_history_h > 0
        verb = f"UPDATE samples SET acked = {ACKED}" if keep else "DELETE FROM samples"
        sql = f"{verb} WHERE battery_id = ? AND seq BETWEEN ? AND ? AND acked != {ACKED}"
        n = 0
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for battery_id, runs in ranges.items():
                for first, last in runs:
                    n += db.execute(sql, (battery_id, first, last)).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return n

    async def aunsent(self, *, after_id: int = 0, limit: int = 500) -> list[QueuedSample]:
        return await self.run(self.unsent, after_id=after_id, limit=limit)

    async def asettle_relayed(self, ranges: dict[str, Sequence[Sequence[int]]]) -> int:
        return await self.run(self.settle_relayed, ranges)

    # -- parked samples (rejected for a reason an operator can fix) -------------------------------------

    def parked_count(self) -> int:
        return self.db.execute(f"SELECT count(*) FROM samples WHERE acked = {PARKED}").fetchone()[0]

    def parked_batteries(self) -> set[str]:
        rows = self.db.execute(f"SELECT DISTINCT battery_id FROM samples WHERE acked = {PARKED}")
        return {r[0] for r in rows}

    def unpark(self, battery_id: str | None = None, *, probe: bool = False) -> int:
        """Put parked samples back in the sending queue: all of ``battery_id``'s (or every battery's), or with
        ``probe`` only the oldest one of each battery (a cheap test of whether the server now takes them)."""
        where = f"acked = {PARKED}" + (" AND battery_id = ?" if battery_id else "")
        args: tuple[str, ...] = (battery_id,) if battery_id else ()
        if probe:
            sql = (
                f"UPDATE samples SET acked = {PENDING} WHERE id IN "
                f"(SELECT min(id) FROM samples WHERE {where} GROUP BY battery_id)"
            )
        else:
            sql = f"UPDATE samples SET acked = {PENDING} WHERE {where}"
        return self.db.execute(sql, args).rowcount  # autocommit: durable on return

    def replay_dead_letters(self) -> int:
        """Move every dead letter back to the sending queue (same battery_id and seq: the server's
        idempotency makes a replay safe). Returns how many."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            # ordered by seq per battery so that replayed samples keep their order
            n = db.execute(
                "INSERT OR IGNORE INTO samples (battery_id, seq, ts, body) "
                "SELECT battery_id, seq, ts, body FROM dead_letter ORDER BY battery_id, seq"
            ).rowcount
            db.execute("DELETE FROM dead_letter")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return n

    def dead_letter_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM dead_letter").fetchone()[0]

    def dead_letters(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT battery_id, seq, ts, reason FROM dead_letter ORDER BY id").fetchall()
        return [{"battery_id": b, "seq": s, "ts": t, "reason": r} for b, s, t, r in rows]

    # -- local history --------------------------------------------------------------------------------

    def history(
        self, *, since: str | None, battery_id: str | None = None, limit: int = 1000, newest: bool = False
    ) -> list[dict]:
        """Samples taken here (sent or not) from ``since`` on, oldest first: the first ``limit`` of them, or
        with ``newest`` the last ``limit`` (what a phone that has seen nothing yet wants)."""
        sql = "SELECT body FROM samples WHERE ts >= ?"
        args: list[Any] = [since or ""]
        if battery_id:
            sql += " AND battery_id = ?"
            args.append(battery_id)
        sql += " ORDER BY ts DESC, id DESC LIMIT ?" if newest else " ORDER BY ts, id LIMIT ?"
        args.append(limit)
        rows = [orjson.loads(row[0]) for row in self.db.execute(sql, args)]
        return rows[::-1] if newest else rows

    def prune_history(self) -> int:
        """Drop acknowledged samples older than the local history window."""
        cutoff = format_ts(datetime.now(UTC) - timedelta(hours=self.local_history_h))
        cur = self.db.execute("DELETE FROM samples WHERE acked = 1 AND ts < ?", (cutoff,))
        return cur.rowcount

    def page_by_seq(self, battery_id: str, from_seq: int, limit: int) -> tuple[list[dict], bool]:
        """Up to ``limit`` samples of a battery with seq >= ``from_seq`` (sent or not), by seq; and whether
        more follow. The Bluetooth service's history pages (docs/ble.md)."""
        rows = self.db.execute(
            "SELECT body FROM samples WHERE battery_id = ? AND seq >= ? ORDER BY seq LIMIT ?",
            (battery_id, from_seq, limit + 1),
        ).fetchall()
        return [orjson.loads(r[0]) for r in rows[:limit]], len(rows) > limit

    def seq_range(self, battery_id: str) -> tuple[int | None, int | None]:
        """(oldest seq stored, next seq to be assigned) of a battery; None when there is none."""
        row = self.db.execute("SELECT min(seq) FROM samples WHERE battery_id = ?", (battery_id,)).fetchone()
        return row[0], self.next_seq(battery_id)

    def seqs_of(self, battery_id: str) -> list[int]:
        return [
            r[0]
            for r in self.db.execute(
                "SELECT seq FROM samples WHERE battery_id = ? ORDER BY seq", (battery_id,)
            )
        ]

    def next_seq(self, battery_id: str) -> int | None:
        row = self.db.execute("SELECT next_seq FROM seqs WHERE battery_id = ?", (battery_id,)).fetchone()
        return row[0] if row else None

    # -- disk budget ----------------------------------------------------------------------------------

    def disk_used_bytes(self) -> int:
        """Bytes in use: live pages of the main file (free pages are reused) plus the WAL."""
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        try:
            wal = os.path.getsize(str(self.path) + "-wal")
        except OSError:
            wal = 0
        return (pages - free) * self._page_size + wal

    def disk_used_pct(self) -> float:
        return round(100.0 * self.disk_used_bytes() / self.budget_bytes, 2)

    def enforce_budget(self) -> dict[str, int]:
        """Apply the budget policy (module docstring). Returns what was removed."""
        removed = {"acked": 0, "thinned": 0}
        for _ in range(50):
            used = self.disk_used_bytes()
            if used <= self.budget_bytes:
                break
            # WAL pages count too; checkpoint so deletions show up as free pages
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if self.disk_used_bytes() <= self.budget_bytes:
                break
            cur = self.db.execute(
                "DELETE FROM samples WHERE id IN "
                "(SELECT id FROM samples WHERE acked = 1 ORDER BY id LIMIT 5000)"
            )
            if cur.rowcount:
                removed["acked"] += cur.rowcount
                self.acked_pruned_for_budget += cur.rowcount
                continue
            # unsent = pending or parked (parked samples must not fill the disk either)
            unsent = self.db.execute(f"SELECT count(*) FROM samples WHERE acked != {ACKED}").fetchone()[0]
            if unsent < 8:
                break  # nothing sensible left to thin; the newest samples are never dropped
            n_oldest = max(2, unsent // 4)
            self.db.execute("BEGIN IMMEDIATE")
            try:
                ids = [
                    r[0]
                    for r in self.db.execute(
                        f"SELECT id FROM samples WHERE acked != {ACKED} ORDER BY id LIMIT ?", (n_oldest,)
                    )
                ]
                drop = ids[1::2]  # every other one: the span stays covered at half the resolution
                for i in range(0, len(drop), _CHUNK):
                    chunk = drop[i : i + _CHUNK]
                    self.db.execute(f"DELETE FROM samples WHERE id IN ({','.join('?' * len(chunk))})", chunk)
                self.thinned_total += len(drop)
                self._set_kv_nocommit("thinned_total", str(self.thinned_total))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            removed["thinned"] += len(drop)
            log.warning(
                "disk budget reached (%.1f MB): thinned %d of the oldest %d unsent samples "
                "(every other one; %d thinned in total)",
                self.budget_bytes / 1048576,
                len(drop),
                len(ids),
                self.thinned_total,
            )
        pct = self.disk_used_pct()
        if pct >= 80 and time.monotonic() - self._last_budget_warning > 60:
            self._last_budget_warning = time.monotonic()
            log.warning("queue uses %.1f %% of its disk budget (%.1f MB)", pct, self.budget_bytes / 1048576)
        return removed

    # -- key/value (remote config, counters) ------------------------------------------------------------

    def get_kv(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_kv_nocommit(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO kv (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def set_kv(self, key: str, value: str) -> None:
        self._set_kv_nocommit(key, value)  # autocommit mode: durable on return
