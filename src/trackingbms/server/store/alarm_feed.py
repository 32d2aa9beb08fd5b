"""What the alarm feed reads (server/alarm_feed.py): newly stored hot segments by id, across tenants, and
the lease that makes one process at a time the one evaluating them.

The lease is a row of ``service_leases`` taken with one conditional UPDATE (the same on SQLite and
PostgreSQL: PostgreSQL re-checks the WHERE after the row lock, so two processes racing for an expired lease
cannot both win); a holder renews it well within ``ttl``, and a process that stops gives it up at once.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from trackingbms.server.db import batteries, sample_segments, service_leases, streams
from trackingbms.server.store.base import StoreCore


class FeedSegment(NamedTuple):
    """A stored segment with the battery it belongs to."""

    id: int
    tenant_id: int
    battery_pk: int
    battery_id: str
    site_id: int
    name: str
    payload: bytes


class Lease(NamedTuple):
    """The lease as its holder took or renewed it."""

    epoch: int  # moves whenever another process held it in between
    cursor: int | None  # what the previous holder had evaluated (None: never set)


def _feed_query() -> Any:
    s, b = sample_segments.c, batteries.c
    return (
        select(s.id, b.tenant_id, b.id, b.battery_id, b.site_id, b.name, s.data)
        .select_from(
            sample_segments.join(streams, streams.c.id == s.stream_id).join(
                batteries, batteries.c.id == streams.c.battery_id
            )
        )
        .order_by(s.id)
    )


class AlarmFeedStore(StoreCore):
    """Reads and the lease of the alarm feed."""

    async def segments_after(self, after_id: int, limit: int) -> list[FeedSegment]:
        """Segments with an id above ``after_id``, oldest id first, at most ``limit``."""
        q = _feed_query().where(sample_segments.c.id > after_id).limit(limit)
        async with self.engine.connect() as conn:
            return [FeedSegment(*r) for r in (await conn.execute(q)).all()]

    async def segments_in(self, ids: list[int]) -> list[FeedSegment]:
        """Those of ``ids`` that exist now (ids the feed saw skipped: a transaction not committed then)."""
        if not ids:
            return []
        q = _feed_query().where(sample_segments.c.id.in_(ids))
        async with self.engine.connect() as conn:
            return [FeedSegment(*r) for r in (await conn.execute(q)).all()]

    async def last_segment_id(self) -> int:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(func.max(sample_segments.c.id)))).scalar() or 0

    async def take_lease(self, name: str, holder: str, now_ms: int, ttl_ms: int) -> Lease | None:
        """Take or renew the lease (held by nobody, expired, or by ``holder`` already); None when another
        process holds it."""
        c = service_leases.c
        take = (
            update(service_leases)
            .where(c.name == name, or_(c.holder == holder, c.holder.is_(None), c.expires_ms < now_ms))
            .values(
                holder=holder,
                expires_ms=now_ms + ttl_ms,
                epoch=case((c.holder == holder, c.epoch), else_=c.epoch + 1),  # NULL holder: else
            )
            .returning(c.epoch, c.cursor)
        )
        async with self.write() as conn:
            row = (await conn.execute(take)).first()
            if row is None and (await conn.execute(select(c.name).where(c.name == name))).first() is None:
                # the lease's first use on this database (one statement per renewal from then on)
                dialect_insert = sqlite_insert if self.sqlite else pg_insert
                await conn.execute(  # two processes starting together: one row, no error
                    dialect_insert(service_leases)
                    .values(name=name, holder=None, expires_ms=0, epoch=0, cursor=None)
                    .on_conflict_do_nothing()
                )
                row = (await conn.execute(take)).first()
        return None if row is None else Lease(row[0], row[1])

    async def save_lease_cursor(self, name: str, holder: str, cursor: int) -> bool:
        """Record what the holder has evaluated (with its saved state); False when it no longer holds it."""
        c = service_leases.c
        async with self.write() as conn:
            got = await conn.execute(
                update(service_leases).where(c.name == name, c.holder == holder).values(cursor=cursor)
            )
        return got.rowcount == 1

    async def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up (a stopping process): the next process takes it without waiting for expiry."""
        c = service_leases.c
        async with self.write() as conn:
            await conn.execute(
                update(service_leases)
                .where(c.name == name, c.holder == holder)
                .values(holder=None, expires_ms=0)
            )
