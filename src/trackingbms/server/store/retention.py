"""Raw-sample retention per tenant (hot rows and whole compressed blocks), rollup retention server-wide, and
the on-disk size of the samples (for the benchmarks)."""

from __future__ import annotations

from sqlalchemy import select, update

from trackingbms.server.db import batteries, rollup_1h, rollup_1m, samples, streams, tenants
from trackingbms.server.store.base import StoreCore, now_ms
from trackingbms.server.store.cold import ColdStore


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
            async with self.write() as conn:
                r = await conn.execute(
                    samples.delete().where(samples.c.stream_id.in_(tenant_streams), samples.c.ts_ms < cutoff)
                )
                deleted += max(0, r.rowcount)
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
        """Bytes the hot samples table and its indexes take (PostgreSQL: all partitions); the compressed
        blocks are :meth:`cold_bytes`."""
        async with self.engine.connect() as conn:
            if self.sqlite:
                return int(
                    (
                        await conn.exec_driver_sql(
                            "SELECT sum(pgsize) FROM dbstat WHERE name IN ('samples', 'samples_stream_ts')"
                        )
                    ).scalar()
                    or 0
                )
            return int(
                (
                    await conn.exec_driver_sql(
                        "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
                        "WHERE inhparent = 'samples'::regclass"
                    )
                ).scalar()
            )
