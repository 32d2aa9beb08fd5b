"""Provisioning, as a small async Python API (used by the admin CLI, the demo and the tests).

Each function takes ``db``: a database URL (migrated on first use, engine closed afterwards) or an open
:class:`~trackingbms.server.store.Store`. ``tenant`` is a tenant name or id. Example::

    from trackingbms.server import provisioning as p
    url = "sqlite+aiosqlite:///data/trackingbms.db"
    await p.create_tenant(url, "acme")
    await p.create_user(url, "acme", "ops@acme.test", "s3cret-pass", "admin")
    await p.create_site(url, "acme", "depot")
    dev = await p.provision_device(url, "acme", "gw-1")      # {"device_id": "gw-1", "token": "tbd_…"}
    await p.create_battery(url, "acme", "depot", "pack-1", name="Forklift 1", device="gw-1")
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from trackingbms.server.db import make_engine, migrate
from trackingbms.server.store import Store, TenantStore

Db = Store | str


@contextlib.asynccontextmanager
async def open_store(db: Db) -> AsyncIterator[Store]:
    if isinstance(db, Store):
        yield db
        return
    engine = make_engine(db, pool_size=2)
    try:
        await migrate(engine)
        yield Store(engine)
    finally:
        await engine.dispose()


async def _tenant(store: Store, tenant: str | int) -> TenantStore:
    tid = tenant if isinstance(tenant, int) else await store.tenant_by_name(tenant)
    return store.tenant(tid)


async def create_tenant(db: Db, name: str, region: str | None = None) -> dict[str, Any]:
    """``region``: the tenant's home region (trackingbms.server.regions); None: this deployment's."""
    if region is not None:
        from trackingbms.server.regions import check_region

        check_region(region)
    async with open_store(db) as store:
        return await store.create_tenant(name, region)


async def set_tenant_region(db: Db, name: str, region: str | None) -> dict[str, Any]:
    """Record ``name``'s home region. Moving a tenant's data is a separate step (export, import): this
    only tells every region where its devices and users are served from now on."""
    if region is not None:
        from trackingbms.server.regions import check_region

        check_region(region)
    async with open_store(db) as store:
        return await store.set_tenant_region(name, region)


async def create_user(
    db: Db, tenant: str | int, email: str, password: str, role: str = "viewer"
) -> dict[str, Any]:
    if len(password) < 8:
        raise ValueError("password must be at least 8 characters")
    async with open_store(db) as store:
        return await (await _tenant(store, tenant)).create_user(email, password, role)


async def create_site(db: Db, tenant: str | int, name: str) -> dict[str, Any]:
    async with open_store(db) as store:
        return await (await _tenant(store, tenant)).create_site(name)


async def create_battery(
    db: Db,
    tenant: str | int,
    site: str | int,
    battery_id: str,
    name: str | None = None,
    device: str | None = None,
    poll_interval_s: float | None = None,
    chemistry: str | None = None,
    rated_capacity_ah: float | None = None,
) -> dict[str, Any]:
    async with open_store(db) as store:
        return await (await _tenant(store, tenant)).create_battery(
            site,
            battery_id,
            name=name,
            device=device,
            poll_interval_s=poll_interval_s,
            chemistry=chemistry,
            rated_capacity_ah=rated_capacity_ah,
        )


async def set_battery_profile(
    db: Db, tenant: str | int, battery_id: str, chemistry: str | None, rated_capacity_ah: float | None
) -> dict[str, Any]:
    async with open_store(db) as store:
        return await (await _tenant(store, tenant)).set_battery_profile(
            battery_id, chemistry, rated_capacity_ah
        )


async def assign_battery(db: Db, tenant: str | int, battery_id: str, device: str | None) -> None:
    async with open_store(db) as store:
        await (await _tenant(store, tenant)).assign_battery(battery_id, device)


async def provision_device(db: Db, tenant: str | int, name: str) -> dict[str, Any]:
    """Create a device; the returned ``token`` is shown this once (only its hash is stored)."""
    async with open_store(db) as store:
        return await (await _tenant(store, tenant)).create_device(name)


async def new_device_token(db: Db, tenant: str | int, name: str) -> dict[str, Any]:
    async with open_store(db) as store:
        return await (await _tenant(store, tenant)).new_device_token(name)


async def revoke_token(db: Db, token: str) -> bool:
    """Revoke one device or user token, given in full."""
    async with open_store(db) as store:
        return await store.revoke_token(token)


async def revoke_device_tokens(db: Db, tenant: str | int, device: str) -> int:
    async with open_store(db) as store:
        return await (await _tenant(store, tenant)).revoke_device_tokens(device)


async def set_device_config(db: Db, tenant: str | int, device: str, config: dict[str, Any]) -> dict[str, Any]:
    async with open_store(db) as store:
        return await (await _tenant(store, tenant)).set_device_config(device, config)


async def set_retention(db: Db, tenant: str | int, days: int | None) -> dict[str, Any]:
    """Keep ``tenant``'s raw samples ``days`` long (None or 0: forever); 1-minute rollups stay."""
    if days is not None and days < 0:
        raise ValueError("days must be ≥ 0")
    async with open_store(db) as store:
        tid = tenant if isinstance(tenant, int) else await store.tenant_by_name(tenant)
        await store.set_retention(tid, days)
    return {"tenant": tenant, "retention_days": days or None}


async def compact(db: Db, hot_window_ms: int) -> dict[str, int]:
    """Move samples older than the hot window into compressed blocks now (the server does this on its own
    every ``compact_interval_s``)."""
    async with open_store(db) as store:
        return (await store.compact(hot_window_ms=hot_window_ms))._asdict()


async def apply_retention(db: Db) -> int:
    """Delete raw samples past each tenant's retention now (the server also does this every hour)."""
    async with open_store(db) as store:
        return await store.apply_retention()
