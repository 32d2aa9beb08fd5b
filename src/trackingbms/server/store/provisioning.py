"""A tenant's users, sites, devices (and their tokens), batteries and remote device config."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from trackingbms.model import BATTERY_ID_RULE, is_battery_id
from trackingbms.server import security
from trackingbms.server.db import batteries, device_tokens, devices, sites, streams, tenants, users
from trackingbms.server.store.base import ROLES, Conflict, NotFound, TenantScope, now_ms


class ProvisioningScope(TenantScope):
    async def create_user(self, email: str, password: str, role: str) -> dict[str, Any]:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        email = email.strip().lower()
        pw = await asyncio.to_thread(security.hash_password, password)
        async with self.store.write() as conn:
            try:
                uid = (
                    await conn.execute(
                        insert(users)
                        .values(
                            tenant_id=self.tenant_id,
                            email=email,
                            password_hash=pw,
                            role=role,
                            created_ms=now_ms(),
                        )
                        .returning(users.c.id)
                    )
                ).scalar_one()
            except IntegrityError:
                raise Conflict(f"user {email!r} already exists") from None
        return {"user_id": uid, "email": email, "role": role}

    async def create_site(self, name: str) -> dict[str, Any]:
        async with self.store.write() as conn:
            try:
                sid = (
                    await conn.execute(
                        insert(sites).values(tenant_id=self.tenant_id, name=name).returning(sites.c.id)
                    )
                ).scalar_one()
            except IntegrityError:
                raise Conflict(f"site {name!r} already exists") from None
        return {"site_id": sid, "name": name}

    async def create_device(self, name: str) -> dict[str, Any]:
        """A new device and its token (the token is returned here only: it is stored hashed)."""
        token = security.new_token(await self._device_token_prefix())
        async with self.store.write() as conn:
            try:
                did = (
                    await conn.execute(
                        insert(devices)
                        .values(tenant_id=self.tenant_id, name=name, created_ms=now_ms(), config_version=0)
                        .returning(devices.c.id)
                    )
                ).scalar_one()
            except IntegrityError:
                raise Conflict(f"device {name!r} already exists") from None
            await self._insert_token(conn, did, token)
        return {"device_id": name, "token": token}

    async def _device_token_prefix(self) -> str:
        """A tenant with a home region gets tokens naming it: another region can redirect the device
        without knowing the token (trackingbms.server.regions)."""
        from trackingbms.server.regions import device_token_prefix

        async with self.store.engine.connect() as conn:
            region = (
                await conn.execute(select(tenants.c.region).where(tenants.c.id == self.tenant_id))
            ).scalar()
        return device_token_prefix(region)

    async def _insert_token(self, conn: AsyncConnection, device_id: int, token: str) -> None:
        await conn.execute(
            insert(device_tokens).values(
                device_id=device_id,
                tenant_id=self.tenant_id,
                token_hash=security.token_hash(token),
                created_ms=now_ms(),
                revoked=False,
            )
        )

    async def new_device_token(self, name: str) -> dict[str, Any]:
        """Another token for an existing device (e.g. to rotate: issue, deploy, revoke the old one)."""
        token = security.new_token(await self._device_token_prefix())
        async with self.store.write() as conn:
            await self._insert_token(conn, await self._device_id(conn, name), token)
        return {"device_id": name, "token": token}

    async def revoke_device_tokens(self, name: str) -> int:
        async with self.store.write() as conn:
            did = await self._device_id(conn, name)
            return (
                await conn.execute(
                    update(device_tokens)
                    .where(
                        device_tokens.c.device_id == did,
                        device_tokens.c.tenant_id == self.tenant_id,
                        device_tokens.c.revoked.is_(False),
                    )
                    .values(revoked=True)
                )
            ).rowcount

    async def create_battery(
        self,
        site: int | str,
        battery_id: str,
        name: str | None = None,
        device: str | None = None,
        poll_interval_s: float | None = None,
        chemistry: str | None = None,
        rated_capacity_ah: float | None = None,
    ) -> dict[str, Any]:
        if not is_battery_id(battery_id):
            raise ValueError(f"battery_id must match {BATTERY_ID_RULE}")
        profile = _profile_values(chemistry, rated_capacity_ah)
        async with self.store.write() as conn:
            sid = await self._site_id(conn, site)
            did = await self._device_id(conn, device) if device else None
            try:
                bid = (
                    await conn.execute(
                        insert(batteries)
                        .values(
                            tenant_id=self.tenant_id,
                            site_id=sid,
                            device_id=did,
                            battery_id=battery_id,
                            name=name or battery_id,
                            poll_interval_s=poll_interval_s or self.store.default_poll_interval_s,
                            cell_count=0,
                            temp_count=0,
                            **profile,
                        )
                        .returning(batteries.c.id)
                    )
                ).scalar_one()
            except IntegrityError:
                raise Conflict(f"battery {battery_id!r} already exists") from None
            if did is not None:
                await conn.execute(insert(streams).values(device_id=did, battery_id=bid))
        return {
            "battery_id": battery_id,
            "name": name or battery_id,
            "site_id": sid,
            "device_id": device,
            "chemistry": profile.get("chemistry"),
            "rated_capacity_ah": profile.get("rated_capacity_ah"),
        }

    async def set_battery_profile(
        self, battery_id: str, chemistry: str | None = None, rated_capacity_ah: float | None = None
    ) -> dict[str, Any]:
        """Set a battery's chemistry and / or rated capacity (None: leave as is; ``"unset"`` / 0 clears).
        Processes running the alarm service pick the change up at their next rule check."""
        values = _profile_values(chemistry, rated_capacity_ah, allow_unset=True)
        if not values:
            raise ValueError("nothing to set: give a chemistry, a rated capacity or both")
        async with self.store.write() as conn:
            bid = await self._battery_pk(conn, battery_id)
            await conn.execute(update(batteries).where(batteries.c.id == bid).values(**values))
            row = (
                await conn.execute(
                    select(batteries.c.chemistry, batteries.c.rated_capacity_ah).where(batteries.c.id == bid)
                )
            ).one()
        return {
            "battery_id": battery_id,
            "chemistry": row.chemistry,
            "rated_capacity_ah": row.rated_capacity_ah,
        }

    async def assign_battery(self, battery_id: str, device: str | None) -> None:
        """Move a battery to another device (its samples so far stay, under the old device's stream)."""
        async with self.store.write() as conn:
            bid = await self._battery_pk(conn, battery_id)
            did = await self._device_id(conn, device) if device else None
            await conn.execute(update(batteries).where(batteries.c.id == bid).values(device_id=did))
            if did is not None:
                exists = (
                    await conn.execute(
                        select(streams.c.id).where(streams.c.device_id == did, streams.c.battery_id == bid)
                    )
                ).scalar()
                if exists is None:
                    await conn.execute(insert(streams).values(device_id=did, battery_id=bid))

    async def set_device_config(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """Store a device's remote config under the next ``config_version``; returns it as sent."""
        async with self.store.write() as conn:
            row = (
                await conn.execute(
                    select(devices.c.id, devices.c.config_version).where(
                        devices.c.name == name, devices.c.tenant_id == self.tenant_id
                    )
                )
            ).first()
            if row is None:
                raise NotFound(f"no device {name!r}")
            version = (row.config_version or 0) + 1
            body = {"config_version": version, **{k: v for k, v in config.items() if k != "config_version"}}
            await conn.execute(
                update(devices)
                .where(devices.c.id == row.id)
                .values(config=orjson.dumps(body).decode(), config_version=version)
            )
            # connectivity judges freshness by the poll interval the gateway is told to use
            for battery_id, bcfg in (body.get("batteries") or {}).items():
                if bcfg.get("poll_interval_s"):
                    await conn.execute(
                        update(batteries)
                        .where(
                            batteries.c.tenant_id == self.tenant_id,
                            batteries.c.device_id == row.id,
                            batteries.c.battery_id == battery_id,
                        )
                        .values(poll_interval_s=bcfg["poll_interval_s"])
                    )
        return body


def _profile_values(
    chemistry: str | None, rated_capacity_ah: float | None, allow_unset: bool = False
) -> dict[str, Any]:
    """The batteries columns of a profile, checked; ``profile_ms`` stamped when anything is set."""
    from trackingbms.analytics.alarms import CHEMISTRIES

    values: dict[str, Any] = {}
    if chemistry is not None:
        chem = chemistry.strip().lower()
        if allow_unset and chem == "unset":
            values["chemistry"] = None
        elif chem in CHEMISTRIES:
            values["chemistry"] = chem
        else:
            raise ValueError(f"chemistry must be one of {', '.join(CHEMISTRIES)}, not {chemistry!r}")
    if rated_capacity_ah is not None:
        if allow_unset and rated_capacity_ah == 0:
            values["rated_capacity_ah"] = None
        elif 0 < rated_capacity_ah <= 100_000:
            values["rated_capacity_ah"] = float(rated_capacity_ah)
        else:
            raise ValueError(f"rated capacity must be between 0 and 100000 Ah, not {rated_capacity_ah:g}")
    if values:
        values["profile_ms"] = now_ms()
    return values
