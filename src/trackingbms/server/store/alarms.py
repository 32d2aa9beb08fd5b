"""Alarms, alarm rules, per-battery analytics state and health, notification targets.

Server-wide (:class:`AlarmStore`): what the alarm service needs while samples arrive — battery keys, saved
analytics state, writing alarm transitions, presence inputs for the no-data rules. Tenant-scoped
(:class:`AlarmsScope`): what users read and change through the API.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson
from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from trackingbms.analytics.alarms import (
    BUILTIN_RULES,
    CELL_VOLTAGE_LIMITS_MV,
    RULE_FIELDS,
    AlarmEvent,
    Rule,
    builtin_rule,
    builtin_rules,
    override,
)
from trackingbms.server.db import (
    alarm_rules,
    alarms,
    batteries,
    battery_analytics,
    devices,
    notify_targets,
    sites,
)
from trackingbms.server.store import packing
from trackingbms.server.store.base import NotFound, StoreCore, TenantScope, now_ms

SEVERITIES = ("info", "warning", "critical")
#: API field name → alarm_rules column (``set`` / ``clear`` are reserved words in SQL)
_COLUMN = {"set": "set_value", "clear": "clear_value"}


def _col(field: str) -> str:
    return _COLUMN.get(field, field)


def rule_changes(row: Any) -> dict[str, Any]:
    """The fields a rules row overrides (non-null), by API name."""
    m = row._mapping
    return {f: m[_col(f)] for f in RULE_FIELDS if m[_col(f)] is not None}


def resolve_rules(
    rows: list[Any], site_id: int | None, battery_pk: int | None, chemistry: str | None = None
) -> list[Rule]:
    """The rules in force for one battery: built-ins (for its chemistry), then the tenant's rows, its
    site's, its own, each non-null field overriding the level below; disabled rules left out. A row that
    does not make a valid rule (cannot happen through the API, which checks) is skipped rather than
    stopping every alarm."""
    builtins = builtin_rules(chemistry)
    by_id: dict[str, Rule | None] = {r.id: r for r in builtins}
    levels = (
        [r for r in rows if r.site_id is None and r.battery_pk is None],
        [r for r in rows if r.site_id is not None and r.site_id == site_id and r.battery_pk is None],
        [r for r in rows if r.battery_pk is not None and r.battery_pk == battery_pk],
    )
    for level in levels:
        for row in level:
            if not row.enabled:
                by_id[row.rule_id] = None
                continue
            base = by_id.get(row.rule_id) or builtin_rule(row.rule_id, chemistry)
            try:
                if base is None:
                    if row.metric is None or row.set_value is None or row.op is None:
                        continue
                    base = Rule(
                        row.rule_id, row.metric, row.op, row.set_value, row.clear_value
                        if row.clear_value is not None else row.set_value,
                    )  # fmt: skip
                by_id[row.rule_id] = override(base, rule_changes(row))
            except ValueError:
                continue
    return [r for r in by_id.values() if r is not None]


def disabled_faults(rows: list[Any], site_id: int | None, battery_pk: int | None) -> set[str]:
    """Fault rules (met on the way, not in the list) switched off for this battery."""
    out: set[str] = set()
    for row in sorted(rows, key=lambda r: (r.battery_pk is not None, r.site_id is not None)):
        applies = (row.site_id is None and row.battery_pk is None) or (
            row.battery_pk == battery_pk if row.battery_pk is not None else row.site_id == site_id
        )
        if applies and row.rule_id.startswith("fault:"):
            (out.discard if row.enabled else out.add)(row.rule_id)
    return out


def _alarm_query() -> Any:
    a, b, s = alarms.c, batteries.c, sites.c
    return select(
        a.id,
        a.rule_id,
        a.severity,
        a.status,
        a.active,
        a.cell,
        a.value,
        a.message,
        a.raised_ms,
        a.acked_ms,
        a.acked_by,
        a.cleared_ms,
        a.clear_message,
        b.battery_id,
        b.name.label("battery_name"),
        s.name.label("site_name"),
        a.battery_pk,
    ).select_from(alarms.join(batteries, b.id == a.battery_pk).join(sites, s.id == b.site_id))


def _alarm_item(r: Any) -> dict[str, Any]:
    ts = packing.ms_to_ts
    return {
        "id": r.id,
        "battery_id": r.battery_id,
        "battery_name": r.battery_name,
        "site": r.site_name,
        "rule_id": r.rule_id,
        "severity": r.severity,
        "status": r.status,
        "active": bool(r.active),
        "cell": r.cell,
        "value": r.value,
        "message": r.message,
        "raised_at": ts(r.raised_ms),
        "acknowledged_at": ts(r.acked_ms) if r.acked_ms else None,
        "acknowledged_by": r.acked_by,
        "cleared_at": ts(r.cleared_ms) if r.cleared_ms else None,
        "clear_message": r.clear_message,
    }


class AlarmStore(StoreCore):
    """What the alarm service reads and writes across tenants."""

    async def battery_keys(self, keys: set[tuple[int, str]]) -> dict[tuple[int, str], tuple[int, int, str]]:
        """(tenant, battery_id) → (battery pk, site id, name)."""
        if not keys:
            return {}
        b = batteries.c
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(b.id, b.tenant_id, b.battery_id, b.site_id, b.name).where(
                        b.battery_id.in_({k[1] for k in keys})
                    )
                )
            ).all()
        return {
            (r.tenant_id, r.battery_id): (r.id, r.site_id, r.name)
            for r in rows
            if (r.tenant_id, r.battery_id) in keys
        }

    async def active_alarm_counts(self) -> dict[int, dict[str, int]]:
        """tenant id → severity → active alarms (the alarms table; tenants without any are absent)."""
        a = alarms.c
        q = select(a.tenant_id, a.severity, func.count()).where(a.active).group_by(a.tenant_id, a.severity)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        out: dict[int, dict[str, int]] = {}
        for tenant_id, severity, n in rows:
            out.setdefault(tenant_id, {})[severity] = n
        return out

    async def rule_marks(self) -> dict[int, tuple[int, ...]]:
        """Per tenant a fingerprint of its rule rows — (count, newest ``updated_ms``, sum of ids) — that any
        insert, update or delete changes, and of its batteries' profiles (newest ``profile_ms``: a chemistry
        picks the built-in thresholds): how other processes notice an edit (two small queries)."""
        r, b = alarm_rules.c, batteries.c
        q = select(r.tenant_id, func.count(), func.max(r.updated_ms), func.sum(r.id)).group_by(r.tenant_id)
        profiles = (
            select(b.tenant_id, func.max(b.profile_ms)).where(b.profile_ms.is_not(None)).group_by(b.tenant_id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
            profile_rows = (await conn.execute(profiles)).all()
        marks: dict[int, tuple[int, ...]] = {t: (int(n), int(u or 0), int(s or 0), 0) for t, n, u, s in rows}
        for t, newest in profile_rows:
            marks[t] = (*marks.get(t, (0, 0, 0, 0))[:3], int(newest))
        return marks

    async def battery_profiles(self, tenant_id: int) -> dict[int, tuple[str | None, float | None]]:
        """battery pk → (chemistry, rated capacity Ah) as its admin set them (None: not set)."""
        b = batteries.c
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(b.id, b.chemistry, b.rated_capacity_ah).where(b.tenant_id == tenant_id)
                )
            ).all()
        return {pk: (chem, rated) for pk, chem, rated in rows}

    async def rule_rows(self, tenant_id: int) -> list[Any]:
        async with self.engine.connect() as conn:
            return list(
                (await conn.execute(select(alarm_rules).where(alarm_rules.c.tenant_id == tenant_id))).all()
            )

    async def load_analytics(self, battery_pk: int) -> tuple[int | None, dict[str, Any] | None]:
        async with self.engine.connect() as conn:
            r = (
                await conn.execute(
                    select(battery_analytics.c.t_last_ms, battery_analytics.c.state).where(
                        battery_analytics.c.battery_pk == battery_pk
                    )
                )
            ).first()
        if r is None:
            return None, None
        return r.t_last_ms, orjson.loads(r.state) if r.state else None

    async def save_analytics(self, rows: list[dict[str, Any]]) -> None:
        """Upsert ``{battery_pk, t_last_ms, state, health}`` rows (state / health as dicts)."""
        if not rows:
            return
        t = now_ms()
        ba = battery_analytics.c
        async with self.write() as conn:
            pks = [r["battery_pk"] for r in rows]
            have = set((await conn.execute(select(ba.battery_pk).where(ba.battery_pk.in_(pks)))).scalars())
            for r in rows:
                values = {
                    "t_last_ms": r["t_last_ms"],
                    "state": orjson.dumps(r["state"]).decode(),
                    "health": orjson.dumps(r["health"]).decode() if r.get("health") is not None else None,
                    "updated_ms": t,
                }
                if r.get("health") is None:
                    del values["health"]
                if r["battery_pk"] in have:
                    await conn.execute(
                        update(battery_analytics).where(ba.battery_pk == r["battery_pk"]).values(**values)
                    )
                else:
                    await conn.execute(insert(battery_analytics).values(battery_pk=r["battery_pk"], **values))

    async def record_events(
        self, tenant_id: int, battery_pk: int, events: list[AlarmEvent]
    ) -> list[dict[str, Any]]:
        """Write alarm transitions (raised: a new active alarm; repeat: its latest value; cleared: it ends);
        returns the alarms as the API shows them, one per event that was written."""
        touched: list[tuple[int, AlarmEvent]] = []
        a = alarms.c
        async with self.write() as conn:
            for ev in events:
                t = int(ev.t * 1000)
                active = (
                    await conn.execute(
                        select(a.id).where(a.battery_pk == battery_pk, a.rule_id == ev.rule_id, a.active)
                    )
                ).scalar()
                if ev.kind == "raised":
                    if active is not None:
                        continue  # already raised (state restored from before a crash): one at a time
                    res = await conn.execute(
                        insert(alarms).values(
                            tenant_id=tenant_id,
                            battery_pk=battery_pk,
                            rule_id=ev.rule_id,
                            severity=ev.severity,
                            status="raised",
                            active=True,
                            cell=ev.cell,
                            value=ev.value,
                            message=ev.message,
                            raised_ms=t,
                        )
                    )
                    touched.append((res.inserted_primary_key[0], ev))
                elif active is None:
                    continue
                elif ev.kind == "repeat":
                    await conn.execute(update(alarms).where(a.id == active).values(value=ev.value))
                    touched.append((active, ev))
                elif ev.kind == "cleared":
                    await conn.execute(
                        update(alarms)
                        .where(a.id == active)
                        .values(status="cleared", active=False, cleared_ms=t, clear_message=ev.message)
                    )
                    touched.append((active, ev))
            if not touched:
                return []
            rows = {
                r.id: r
                for r in (await conn.execute(_alarm_query().where(a.id.in_([i for i, _ in touched])))).all()
            }
        # a reminder of an alarm acknowledged through another process (its evaluator did not hear of it)
        # is not sent: the service then acknowledges it in its evaluator too
        return [
            {
                **_alarm_item(rows[i]),
                "event": ev.kind,
                "event_message": ev.message,
                "notify": ev.notify and not (ev.kind == "repeat" and rows[i].status == "acknowledged"),
            }
            for i, ev in touched
        ]

    async def presence_rows(self) -> list[Any]:
        """Every battery with what connectivity needs (the no-data rules run over all tenants)."""
        b, d = batteries.c, devices.c
        async with self.engine.connect() as conn:
            return list(
                (
                    await conn.execute(
                        select(
                            b.id,
                            b.tenant_id,
                            b.site_id,
                            b.battery_id,
                            b.name,
                            b.poll_interval_s,
                            b.last_received_ms,
                            b.received_ts_ms,
                            d.heartbeat_ms,
                            d.heartbeat,
                        ).select_from(batteries.outerjoin(devices, d.id == b.device_id))
                    )
                ).all()
            )

    async def targets_for(self, tenant_id: int) -> list[dict[str, Any]]:
        t = notify_targets.c
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(notify_targets).where(t.tenant_id == tenant_id))).all()
        return [_target_item(r) for r in rows]


def _target_item(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "url": r.url,
        "severities": [s for s in r.severities.split(",") if s],
        "recovery": bool(r.recovery),
        "created_at": packing.ms_to_ts(r.created_ms),
    }


class AlarmsScope(TenantScope):
    """One tenant's alarms, rules, health and notification targets."""

    async def alarms(
        self,
        *,
        site: str | None = None,
        severity: str | None = None,
        active: bool | None = None,
        battery_id: str | None = None,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        """Active first (newest first), then history (newest first)."""
        a, b, s = alarms.c, batteries.c, sites.c
        q = _alarm_query().where(a.tenant_id == self.tenant_id)
        if site is not None:
            q = q.where(s.name == site)
        if severity is not None:
            q = q.where(a.severity == severity)
        if active is not None:
            q = q.where(a.active == active)
        if battery_id is not None:
            q = q.where(b.battery_id == battery_id)
        q = q.order_by(a.active.desc(), a.raised_ms.desc(), a.id.desc()).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [_alarm_item(r) for r in rows]

    async def _alarm_row(self, conn: AsyncConnection, alarm_id: int) -> Any:
        r = (
            await conn.execute(
                _alarm_query().where(alarms.c.id == alarm_id, alarms.c.tenant_id == self.tenant_id)
            )
        ).first()
        if r is None:
            raise NotFound(f"no alarm {alarm_id}")
        return r

    async def ack_alarm(self, alarm_id: int, by: str) -> tuple[dict[str, Any], int, str, bool]:
        """Acknowledge an active alarm: (the alarm, battery pk, rule id, whether this call changed it).
        Acknowledging an acknowledged or cleared alarm changes nothing (and says so in ``status``)."""
        a = alarms.c
        async with self.store.write() as conn:
            r = await self._alarm_row(conn, alarm_id)
            changed = r.status == "raised"
            if changed:
                await conn.execute(
                    update(alarms)
                    .where(a.id == alarm_id, a.status == "raised")
                    .values(status="acknowledged", acked_ms=now_ms(), acked_by=by)
                )
                r = await self._alarm_row(conn, alarm_id)
        return _alarm_item(r), r.battery_pk, r.rule_id, changed

    async def alarm_counts(self) -> dict[str, dict[str, Any]]:
        """battery_id → active alarm count and worst severity."""
        a, b = alarms.c, batteries.c
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(b.battery_id, a.severity, func.count())
                    .select_from(alarms.join(batteries, b.id == a.battery_pk))
                    .where(a.tenant_id == self.tenant_id, a.active)
                    .group_by(b.battery_id, a.severity)
                )
            ).all()
        out: dict[str, dict[str, Any]] = {}
        for bid, sev, n in rows:
            item = out.setdefault(bid, {"active_alarms": 0, "worst_severity": None})
            item["active_alarms"] += n
            if item["worst_severity"] is None or SEVERITIES.index(sev) > SEVERITIES.index(
                item["worst_severity"]
            ):
                item["worst_severity"] = sev
        return out

    async def health_summaries(self) -> dict[str, dict[str, Any]]:
        """battery_id → the few health figures the fleet list shows."""
        ba, b = battery_analytics.c, batteries.c
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(b.battery_id, ba.health)
                    .select_from(battery_analytics.join(batteries, b.id == ba.battery_pk))
                    .where(b.tenant_id == self.tenant_id, ba.health.is_not(None))
                )
            ).all()
        out: dict[str, dict[str, Any]] = {}
        for bid, health in rows:
            h = orjson.loads(health)
            out[bid] = {
                "soh_pct": h.get("soh_pct"),
                "weak_cells": h.get("weak_cells") or [],
                "findings": len(h.get("findings") or []),
            }
        return out

    async def health(self, battery_id: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            pk = await self._battery_pk(conn, battery_id)
            r = (
                await conn.execute(
                    select(battery_analytics.c.health, battery_analytics.c.updated_ms).where(
                        battery_analytics.c.battery_pk == pk
                    )
                )
            ).first()
        health = orjson.loads(r.health) if r is not None and r.health else None
        return {
            "battery_id": battery_id,
            "updated_at": packing.ms_to_ts(r.updated_ms) if health is not None else None,
            "health": health,
            "reason": None if health is not None else "not analysed yet (needs samples)",
            "alarms": await self.alarms(battery_id=battery_id, active=True),
        }

    # ---- rules ---------------------------------------------------------------------------------------
    async def _rule_item(self, conn: AsyncConnection, r: Any) -> dict[str, Any]:
        site = battery = None
        if r.site_id is not None:
            site = (await conn.execute(select(sites.c.name).where(sites.c.id == r.site_id))).scalar()
        if r.battery_pk is not None:
            battery = (
                await conn.execute(select(batteries.c.battery_id).where(batteries.c.id == r.battery_pk))
            ).scalar()
        return {
            "id": r.id,
            "rule_id": r.rule_id,
            "scope": "battery" if battery else "site" if site else "tenant",
            "site": site,
            "battery_id": battery,
            "metric": r.metric,
            "enabled": bool(r.enabled),
            **{f: r._mapping[_col(f)] for f in RULE_FIELDS},
            "updated_at": packing.ms_to_ts(r.updated_ms),
        }

    async def alarm_rules(self) -> dict[str, Any]:
        """The built-in rules and this tenant's overrides / own rules."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(alarm_rules)
                    .where(alarm_rules.c.tenant_id == self.tenant_id)
                    .order_by(alarm_rules.c.rule_id, alarm_rules.c.id)
                )
            ).all()
            overrides = [await self._rule_item(conn, r) for r in rows]
        return {
            # ``rule_id`` as the overrides and POST name it (``id`` kept: the Rules page and scripts read it)
            "builtin": [{"rule_id": r.id, **asdict(r)} for r in BUILTIN_RULES],
            # a battery whose chemistry is set starts from these cell-voltage thresholds instead
            "builtin_by_chemistry": {
                chem: {rid: {"set": lim[0], "clear": lim[1]} for rid, lim in limits.items()}
                for chem, limits in CELL_VOLTAGE_LIMITS_MV.items()
            },
            "fault_rule": "fault:<name> for every BMS fault bit (level 1: warning, level 2: critical)",
            "overrides": overrides,
        }

    async def _check_rule(self, conn: AsyncConnection, values: dict[str, Any]) -> None:
        """ValueError unless the row, over what it overrides, makes a valid rule."""
        base = builtin_rule(values["rule_id"])
        if base is None:
            rows = (
                await conn.execute(
                    select(alarm_rules).where(
                        alarm_rules.c.tenant_id == self.tenant_id, alarm_rules.c.rule_id == values["rule_id"]
                    )
                )
            ).all()
            tenant_row = next((r for r in rows if r.site_id is None and r.battery_pk is None), None)
            metric = values.get("metric") or (tenant_row.metric if tenant_row is not None else None)
            if metric is None:
                raise ValueError(f"{values['rule_id']!r} is not a built-in rule: give its metric, op and set")
            fields = {f: values.get(_col(f)) for f in RULE_FIELDS}
            if tenant_row is not None:
                fields = {**rule_changes(tenant_row), **{k: v for k, v in fields.items() if v is not None}}
            if fields.get("op") is None or fields.get("set") is None:
                raise ValueError(f"{values['rule_id']!r} is not a built-in rule: give its metric, op and set")
            clear = fields.get("clear") if fields.get("clear") is not None else fields["set"]
            base = Rule(values["rule_id"], metric, fields["op"], fields["set"], clear)
        override(base, {f: values.get(_col(f)) for f in RULE_FIELDS})

    async def create_rule(self, body: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {"rule_id": body["rule_id"], "metric": body.get("metric")}
        values.update({_col(f): body.get(f) for f in RULE_FIELDS})
        values["enabled"] = body.get("enabled", True) if body.get("enabled") is not None else True
        async with self.store.write() as conn:
            values["site_id"] = await self._site_id(conn, body["site"]) if body.get("site") else None
            values["battery_pk"] = (
                await self._battery_pk(conn, body["battery_id"]) if body.get("battery_id") else None
            )
            await self._check_rule(conn, values)
            res = await conn.execute(
                insert(alarm_rules).values(tenant_id=self.tenant_id, updated_ms=now_ms(), **values)
            )
            row = (
                await conn.execute(select(alarm_rules).where(alarm_rules.c.id == res.inserted_primary_key[0]))
            ).first()
            return await self._rule_item(conn, row)

    async def _rule_row(self, conn: AsyncConnection, rule_pk: int) -> Any:
        r = (
            await conn.execute(
                select(alarm_rules).where(
                    alarm_rules.c.id == rule_pk, alarm_rules.c.tenant_id == self.tenant_id
                )
            )
        ).first()
        if r is None:
            raise NotFound(f"no alarm rule {rule_pk}")
        return r

    async def update_rule(self, rule_pk: int, body: dict[str, Any]) -> dict[str, Any]:
        """Change the given fields of a rules row (``null`` leaves a field as it is)."""
        async with self.store.write() as conn:
            r = await self._rule_row(conn, rule_pk)
            values = dict(r._mapping)
            changes = {
                _col(k): v
                for k, v in body.items()
                if v is not None and (k in RULE_FIELDS or k in ("metric", "enabled"))
            }
            values.update(changes)
            await self._check_rule(conn, values)
            if changes:
                await conn.execute(
                    update(alarm_rules)
                    .where(alarm_rules.c.id == rule_pk)
                    .values(updated_ms=now_ms(), **changes)
                )
            return await self._rule_item(conn, await self._rule_row(conn, rule_pk))

    async def delete_rule(self, rule_pk: int) -> str:
        """Remove a rules row (the level below applies again); returns its rule id."""
        async with self.store.write() as conn:
            r = await self._rule_row(conn, rule_pk)
            await conn.execute(delete(alarm_rules).where(alarm_rules.c.id == rule_pk))
        return r.rule_id

    async def close_alarms_of(self, rule_id: str, message: str) -> int:
        """Clear the active alarms of a rule that no longer exists anywhere in the tenant."""
        a = alarms.c
        async with self.store.write() as conn:
            left = (
                await conn.execute(
                    select(func.count()).where(
                        alarm_rules.c.tenant_id == self.tenant_id, alarm_rules.c.rule_id == rule_id
                    )
                )
            ).scalar()
            if left or builtin_rule(rule_id) is not None:
                return 0
            res = await conn.execute(
                update(alarms)
                .where(and_(a.tenant_id == self.tenant_id, a.rule_id == rule_id, a.active))
                .values(status="cleared", active=False, cleared_ms=now_ms(), clear_message=message)
            )
        return res.rowcount or 0

    # ---- notification targets ------------------------------------------------------------------------
    async def notify_targets(self) -> list[dict[str, Any]]:
        t = notify_targets.c
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(select(notify_targets).where(t.tenant_id == self.tenant_id).order_by(t.id))
            ).all()
        return [_target_item(r) for r in rows]

    async def add_notify_target(self, url: str, severities: list[str], recovery: bool) -> dict[str, Any]:
        async with self.store.write() as conn:
            res = await conn.execute(
                insert(notify_targets).values(
                    tenant_id=self.tenant_id,
                    url=url,
                    severities=",".join(s for s in SEVERITIES if s in severities),
                    recovery=recovery,
                    created_ms=now_ms(),
                )
            )
            r = (
                await conn.execute(
                    select(notify_targets).where(notify_targets.c.id == res.inserted_primary_key[0])
                )
            ).first()
        return _target_item(r)

    async def delete_notify_target(self, target_id: int) -> None:
        t = notify_targets.c
        async with self.store.write() as conn:
            res = await conn.execute(
                delete(notify_targets).where(t.id == target_id, t.tenant_id == self.tenant_id)
            )
        if not res.rowcount:
            raise NotFound(f"no notification target {target_id}")
