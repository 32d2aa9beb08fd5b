"""What every part of the store shares: the engine and its write transaction, the tenant scope, errors and
the identities that tokens resolve to."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trackingbms.server.db import batteries, devices, is_sqlite, sites, streams

ROLES = ("admin", "operator", "viewer")


async def pg_fetch(engine: AsyncEngine, sql: str, *args: Any) -> list[Any]:
    """PostgreSQL: one statement (``$n`` parameters) on a pooled connection, outside any transaction (it
    commits by itself). One round trip: through SQLAlchemy's connection the same statement came with a
    BEGIN and a ROLLBACK or COMMIT, and ~0.2 ms of Python (what a request's token lookup and rate limit
    paid on every ingest request)."""
    async with engine.connect() as conn:
        apg = (await conn.get_raw_connection()).driver_connection
        return await apg.fetch(sql, *args)


def pg_sql(stmt: Any) -> str:
    """The PostgreSQL text of a SQLAlchemy statement with ``$n`` parameters (for :func:`pg_fetch`)."""
    from sqlalchemy.dialects.postgresql.asyncpg import dialect

    return str(stmt.compile(dialect=dialect()))


def now_ms() -> int:
    return int(time.time() * 1000)


class NotFound(LookupError):
    """The thing does not exist in this tenant (which, to the caller, is the same as not existing)."""


class Conflict(ValueError):
    """The name is already taken."""


@dataclass(frozen=True)
class DeviceRef:
    """A device as its token resolved it (carries its tenant)."""

    id: int
    tenant_id: int
    name: str
    config_version: int
    reported_config_version: int | None
    config: str | None

    def pending_config(self, reported: int | None) -> dict[str, Any] | None:
        """The remote config to hand the gateway, or None if it already runs it (``reported``: the version
        it says it runs in this request; None: fall back to the last one it reported)."""
        if self.config is None or self.config_version <= 0:
            return None
        known = reported if reported is not None else self.reported_config_version
        if known is not None and known >= self.config_version:
            return None
        return orjson.loads(self.config)


#: the columns a :class:`DeviceRef` is built from, in its fields' order (``DeviceRef(*row)``)
DEVICE_REF_COLUMNS = (
    devices.c.id,
    devices.c.tenant_id,
    devices.c.name,
    devices.c.config_version,
    devices.c.reported_config_version,
    devices.c.config,
)


@dataclass(frozen=True)
class UserRef:
    id: int
    tenant_id: int
    tenant: str
    email: str
    role: str

    @property
    def can_write(self) -> bool:
        return self.role in ("admin", "operator")


class StoreCore:
    """The engine, the settings the read model needs, and one write transaction at a time on SQLite."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        default_poll_interval_s: float = 5.0,
        offline_timeout_s: float = 300.0,
        online_grace_s: float = 15.0,
        session_ttl_s: float = 7 * 24 * 3600,
        rollup_1m_retention_days: float = 0.0,
        rollup_1h_retention_days: float = 0.0,
    ) -> None:
        self.engine = engine
        self.sqlite = is_sqlite(engine)
        # SQLite has one writer: queue writers here instead of spinning on SQLITE_BUSY
        self._write_lock = asyncio.Lock()
        self.default_poll_interval_s = default_poll_interval_s
        self.offline_timeout_s = offline_timeout_s
        self.online_grace_s = online_grace_s
        self.session_ttl_s = session_ttl_s
        #: how long the 1-minute / 1-hour rollups are kept (0: forever); see RetentionStore
        self.rollup_1m_retention_days = rollup_1m_retention_days
        self.rollup_1h_retention_days = rollup_1h_retention_days

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction, committed (durable) when the block ends."""
        if self.sqlite:
            async with self._write_lock, self.engine.begin() as conn:
                yield conn
        else:
            async with self.engine.begin() as conn:
                yield conn


class TenantScope:
    """One tenant's view: every lookup here filters on ``tenant_id``, so ids of another tenant behave as if
    they did not exist. The concern modules (provisioning, fleet, history, export) build on these."""

    def __init__(self, store: StoreCore, tenant_id: int) -> None:
        self.store = store
        self.engine = store.engine
        self.tenant_id = tenant_id

    async def _site_id(self, conn: AsyncConnection, site: int | str) -> int:
        cond = sites.c.id == site if isinstance(site, int) else sites.c.name == site
        sid = (
            await conn.execute(select(sites.c.id).where(cond, sites.c.tenant_id == self.tenant_id))
        ).scalar()
        if sid is None:
            raise NotFound(f"no site {site!r}")
        return sid

    async def _device_id(self, conn: AsyncConnection, name: str) -> int:
        did = (
            await conn.execute(
                select(devices.c.id).where(devices.c.name == name, devices.c.tenant_id == self.tenant_id)
            )
        ).scalar()
        if did is None:
            raise NotFound(f"no device {name!r}")
        return did

    async def _battery_pk(self, conn: AsyncConnection, battery_id: str) -> int:
        bid = (
            await conn.execute(
                select(batteries.c.id).where(
                    batteries.c.battery_id == battery_id, batteries.c.tenant_id == self.tenant_id
                )
            )
        ).scalar()
        if bid is None:
            raise NotFound(f"no battery {battery_id!r}")
        return bid

    async def _battery_streams(self, conn: AsyncConnection, battery_id: str) -> tuple[Any, list[int]]:
        """(battery row: id, cell_count, temp_count; its stream ids)."""
        b = (
            await conn.execute(
                select(batteries.c.id, batteries.c.cell_count, batteries.c.temp_count).where(
                    batteries.c.battery_id == battery_id, batteries.c.tenant_id == self.tenant_id
                )
            )
        ).first()
        if b is None:
            raise NotFound(f"no battery {battery_id!r}")
        sids = (await conn.execute(select(streams.c.id).where(streams.c.battery_id == b.id))).scalars().all()
        return b, list(sids)
