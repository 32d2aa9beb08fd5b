"""The fleet read model: sites, batteries with their last known state and connectivity, devices."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import and_, select

from trackingbms.analytics.cells import cell_stats, power_w
from trackingbms.analytics.connectivity import connectivity
from trackingbms.server.db import STATE_FIELDS, STATE_JSON_FIELDS, batteries, battery_state, devices, sites
from trackingbms.server.store import packing
from trackingbms.server.store.base import NotFound, TenantScope, now_ms


class FleetScope(TenantScope):
    async def sites(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(sites.c.id, sites.c.name)
                    .where(sites.c.tenant_id == self.tenant_id)
                    .order_by(sites.c.name)
                )
            ).all()
        return [{"site_id": r.id, "name": r.name} for r in rows]

    def _fleet_item(self, r: Any, t_now: int, detail: bool = False) -> dict[str, Any]:
        link_state = None
        if r.heartbeat:
            for b in orjson.loads(r.heartbeat).get("batteries") or ():
                if b.get("battery_id") == r.battery_id:
                    link_state = b.get("link_state")
        latest, latest_ts = _last_known(r)
        lo, hi, delta = cell_stats(latest.get("cells_mv") if latest else None)
        conn_state = connectivity(
            t_now,
            poll_interval_s=r.poll_interval_s,
            last_received_ms=r.last_received_ms,
            received_ts_ms=r.received_ts_ms,
            heartbeat_ms=r.heartbeat_ms,
            link_state=link_state,
            offline_timeout_s=self.store.offline_timeout_s,
            grace_s=self.store.online_grace_s,
        )
        item = {
            "battery_id": r.battery_id,
            "name": r.name,
            "site_id": r.site_id,
            "site_name": r.site_name,
            "device_id": r.device_name,
            "connectivity": conn_state,
            "last_seen": packing.ms_to_ts(r.last_ts_ms) if r.last_ts_ms is not None else None,
            "last_received": packing.ms_to_ts(r.last_received_ms) if r.last_received_ms else None,
            "link_state": link_state,
            "latest": latest,
            "latest_ts": latest_ts,
            # from the newest sample that read the faults: one that did not says nothing about them
            "alarms": list(latest.get("faults") or []) if latest else [],
            "cell_min_mv": lo,
            "cell_max_mv": hi,
            "cell_delta_mv": delta,
            "power_w": power_w(latest) if latest else None,
        }
        if detail:
            item["cell_count"] = r.cell_count
            item["temp_count"] = r.temp_count
            item["poll_interval_s"] = r.poll_interval_s
            item["chemistry"] = r.chemistry
            item["rated_capacity_ah"] = r.rated_capacity_ah
        return item

    async def fleet(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_fleet_query(self.tenant_id))).all()
        t = now_ms()
        items = [self._fleet_item(r, t) for r in rows]
        counts, health = await self.alarm_counts(), await self.health_summaries()  # type: ignore[attr-defined]
        for item in items:
            item.update(counts.get(item["battery_id"], {"active_alarms": 0, "worst_severity": None}))
            item["health"] = health.get(item["battery_id"])
        return items

    async def battery(self, battery_id: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            r = (
                await conn.execute(_fleet_query(self.tenant_id).where(batteries.c.battery_id == battery_id))
            ).first()
        if r is None:
            raise NotFound(f"no battery {battery_id!r}")
        return self._fleet_item(r, now_ms(), detail=True)

    def _device_item(self, r: Any) -> dict[str, Any]:
        return {
            "device_id": r.name,
            "name": r.name,
            "last_contact": packing.ms_to_ts(r.last_contact_ms) if r.last_contact_ms else None,
            "heartbeat": orjson.loads(r.heartbeat) if r.heartbeat else None,
            "config_version": r.config_version,
            "reported_config_version": r.reported_config_version,
            "config": orjson.loads(r.config) if r.config else None,
        }

    async def devices(self) -> list[dict[str, Any]]:
        d = devices.c
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(select(devices).where(d.tenant_id == self.tenant_id).order_by(d.name))
            ).all()
        return [self._device_item(r) for r in rows]

    async def device(self, name: str) -> dict[str, Any]:
        d = devices.c
        async with self.engine.connect() as conn:
            r = (
                await conn.execute(select(devices).where(d.tenant_id == self.tenant_id, d.name == name))
            ).first()
        if r is None:
            raise NotFound(f"no device {name!r}")
        return self._device_item(r)


def _fleet_query(tenant_id: int) -> Any:
    b, s, d = batteries.c, sites.c, devices.c
    return (
        select(
            b.id,
            b.battery_id,
            b.name,
            b.site_id,
            s.name.label("site_name"),
            d.name.label("device_name"),
            b.poll_interval_s,
            b.cell_count,
            b.temp_count,
            b.chemistry,
            b.rated_capacity_ah,
            b.last_seq,
            b.last_ts_ms,
            b.last_data,
            b.last_received_ms,
            b.received_ts_ms,
            d.heartbeat_ms,
            d.heartbeat,
            battery_state.c.battery_id.label("state_battery_id"),
            *(c for c in battery_state.c if c.name != "battery_id"),
        )
        .join(sites, and_(sites.c.id == b.site_id, sites.c.tenant_id == tenant_id))
        .outerjoin(devices, and_(devices.c.id == b.device_id, devices.c.tenant_id == tenant_id))
        .outerjoin(battery_state, battery_state.c.battery_id == b.id)
        .where(b.tenant_id == tenant_id)
        .order_by(s.name, b.battery_id)
    )


def _last_known(r: Any) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """(latest, latest_ts) of a fleet row: ``seq``, ``ts``, ``source``, ``via`` and ``errors`` of the
    newest sample, each measurement field its last known value; ``latest_ts`` the ts of each."""
    if not r.last_data:
        return None, {}
    newest = packing.to_sample(r.battery_id, r.last_seq, r.last_ts_ms, r.last_data)
    if r.state_battery_id is None:
        # no state row (cannot happen after migration 0003 and an ingest): the newest sample alone
        ts = newest["ts"]
        return newest, {name: ts for name, _ in STATE_FIELDS if name in newest}
    latest = {k: newest[k] for k in ("battery_id", "seq", "ts", "source", "via") if k in newest}
    latest_ts: dict[str, str] = {}
    m = r._mapping
    for name, _ in STATE_FIELDS:
        v = m[name]
        if v is None:
            continue
        latest[name] = orjson.loads(v) if name in STATE_JSON_FIELDS else v
        latest_ts[name] = packing.ms_to_ts(m[f"{name}_ts"])
    if "errors" in newest:  # what the newest sample could not read, and why
        latest["errors"] = newest["errors"]
    return latest, latest_ts
