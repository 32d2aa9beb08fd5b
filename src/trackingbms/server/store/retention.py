"""Raw-sample retention per tenant (hot segments, trimmed to the cutoff, and whole compressed blocks), rollup
retention server-wide, and the on-disk size of the samples (for the benchmarks)."""

from __future__ import annotations

from sqlalchemy import select, update

from trackingbms.server.db import batteries, rollup_1h, rollup_1m, sample_segments, streams, tenants
from trackingbms.server.store import segments
from trackingbms.server.store.base import StoreCore, now_ms
from trackingbms.server.store.cold import ColdStore, rewrite_segments


class RetentionStore(ColdStore, StoreCore):
    async def set_retention(self, tenant_id: int, days: int | None) -> None:
        """Keep a tenant's raw samples ``days`` long (None: forever). Rollups follow the server's
        ``rollup_1m_retention_days`` / ``rollup_1h_retention_days`` instead."""
        async with self.write() as conn:
            await conn.execute(
                update(tenants).where(tenants.c.id == tenant_id).values(retention_days=days or None)
            )

    async def apply_retention(self, at_ms: int | None = None) -> int:
        """Delete raw samples older than each tenant's retention, and rollup rows older than the server's
        rollup retention; returns how many rows were deleted."""
        at_ms = at_ms or now_ms()
        async with self.engine.connect() as conn:
            rules = (
                await conn.execute(
                    select(tenants.c.id, tenants.c.retention_days).where(
                        tenants.c.retention_days.is_not(None)
                    )
                )
            ).all()
        deleted = 0
        for tenant_id, days in rules:
            cutoff = at_ms - int(days * 86_400_000)
            tenant_streams = (
                select(streams.c.id)
                .join(batteries, batteries.c.id == streams.c.battery_id)
                .where(batteries.c.tenant_id == tenant_id)
            )
            g = sample_segments.c
            async with self.write() as conn:
                old = (
                    await conn.execute(
                        select(g.id, g.stream_id, g.ts_max, g.n, g.data).where(
                            g.stream_id.in_(tenant_streams), g.ts_min < cutoff
                        )
                    )
                ).all()
                whole = [r.id for r in old if r.ts_max < cutoff]
                if whole:
                    await conn.execute(sample_segments.delete().where(g.id.in_(whole)))
                    deleted += sum(r.n for r in old if r.ts_max < cutoff)
                for r in old:  # a segment straddling the cutoff keeps its newer samples
                    if r.ts_max >= cutoff:
                        rows = segments.decode(r.data)
                        keep = [x for x in rows if x.ts_ms >= cutoff]
                        deleted += len(rows) - len(keep)
                        await rewrite_segments(conn, r.stream_id, [r.id], keep)
                deleted += await self.delete_cold_before(conn, tenant_id, cutoff)
        rollups = ((rollup_1m, self.rollup_1m_retention_days), (rollup_1h, self.rollup_1h_retention_days))
        for table, days in rollups:
            if not days:
                continue
            cutoff = at_ms - int(days * 86_400_000)
            async with self.write() as conn:
                # per stream (the key's first column): an index range each, not a scan of the whole table
                in_streams = table.c.stream_id.in_(select(streams.c.id))
                r = await conn.execute(table.delete().where(in_streams, table.c.bucket_ms < cutoff))
                deleted += max(0, r.rowcount)
        return deleted

    async def samples_bytes(self) -> int:
        """Bytes the hot segments table and its indexes take (PostgreSQL: with its TOAST table); the
        compressed blocks are :meth:`cold_bytes`."""
        async with self.engine.connect() as conn:
            if self.sqlite:
                q = "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE 'sample_segments%'"
            else:
                q = "SELECT pg_total_relation_size('sample_segments')"
            return int((await conn.exec_driver_sql(q)).scalar() or 0)
