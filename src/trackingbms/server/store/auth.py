"""Tenants (admin CLI only: no tenant scope yet), logins, sessions and token lookups."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from trackingbms.server import security
from trackingbms.server.db import device_tokens, devices, tenants, user_tokens, users
from trackingbms.server.store.base import (
    DEVICE_REF_COLUMNS,
    Conflict,
    DeviceRef,
    NotFound,
    StoreCore,
    UserRef,
    now_ms,
    pg_fetch,
    pg_sql,
)


class AuthStore(StoreCore):
    #: for callers that pass none (provisioning, tests): unbounded queue, two at once
    _default_checker = security.PasswordChecker(2, 1 << 30)

    async def create_tenant(self, name: str, region: str | None = None) -> dict[str, Any]:
        async with self.write() as conn:
            try:
                tid = (
                    await conn.execute(
                        insert(tenants)
                        .values(name=name, created_ms=now_ms(), region=region)
                        .returning(tenants.c.id)
                    )
                ).scalar_one()
            except IntegrityError:
                raise Conflict(f"tenant {name!r} already exists") from None
        return {"tenant_id": tid, "name": name, **({"region": region} if region else {})}

    async def tenants(self) -> list[tuple[int, str]]:
        """Every tenant as (id, name): for server-wide figures (metrics), never for a user's reads."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(tenants.c.id, tenants.c.name).order_by(tenants.c.id))).all()
        return [(r.id, r.name) for r in rows]

    async def tenant_homes(self) -> list[tuple[int, str, str | None]]:
        """Every tenant as (id, name, home region or None: this deployment's region)."""
        q = select(tenants.c.id, tenants.c.name, tenants.c.region).order_by(tenants.c.id)
        async with self.engine.connect() as conn:
            return [(r.id, r.name, r.region) for r in (await conn.execute(q)).all()]

    async def directory_users(self) -> list[tuple[str, str, str | None]]:
        """Every user as (email, tenant name, tenant's home region or None), for the tenant directory."""
        q = select(users.c.email, tenants.c.name, tenants.c.region).join(
            tenants, tenants.c.id == users.c.tenant_id
        )
        async with self.engine.connect() as conn:
            return [(r.email, r.name, r.region) for r in (await conn.execute(q)).all()]

    async def set_tenant_region(self, name: str, region: str | None) -> dict[str, Any]:
        """Record ``name``'s home region (None: the region of this deployment)."""
        async with self.write() as conn:
            n = (
                await conn.execute(update(tenants).where(tenants.c.name == name).values(region=region))
            ).rowcount
        if not n:
            raise NotFound(f"no tenant {name!r}")
        return {"tenant": name, "region": region}

    async def tenant_by_name(self, name: str) -> int:
        async with self.engine.connect() as conn:
            tid = (await conn.execute(select(tenants.c.id).where(tenants.c.name == name))).scalar()
        if tid is None:
            raise NotFound(f"no tenant {name!r}")
        return tid

    async def device_for_token(self, token: str) -> DeviceRef | None:
        # looked up on every request (no cache: a token revoked by another process is refused at once)
        if not self.sqlite:
            rows = await pg_fetch(self.engine, _PG_DEVICE_FOR_TOKEN, security.token_hash(token))
            return DeviceRef(*rows[0]) if rows else None
        async with self.engine.connect() as conn:
            row = (await conn.execute(_DEVICE_FOR_TOKEN, {"token_hash": security.token_hash(token)})).first()
        return DeviceRef(*row) if row else None

    async def user_for_token(self, token: str) -> UserRef | None:
        q = (
            select(users.c.id, users.c.tenant_id, tenants.c.name, users.c.email, users.c.role)
            .join(user_tokens, user_tokens.c.user_id == users.c.id)
            .join(tenants, tenants.c.id == users.c.tenant_id)
            .where(
                user_tokens.c.token_hash == security.token_hash(token),
                user_tokens.c.revoked.is_(False),
                user_tokens.c.expires_ms > now_ms(),
            )
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return UserRef(*row) if row else None

    async def login(
        self, email: str, password: str, checker: security.PasswordChecker | None = None
    ) -> tuple[str, UserRef] | None:
        """A new access token for this email and password, or None. An unknown email costs the same one
        scrypt as a wrong password (timing does not tell which emails exist); ``checker`` bounds how many
        run at once (it raises :class:`~trackingbms.server.security.Busy` when too many wait)."""
        checker = checker or self._default_checker
        q = select(
            users.c.id, users.c.tenant_id, tenants.c.name, users.c.email, users.c.role, users.c.password_hash
        ).join(tenants, tenants.c.id == users.c.tenant_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(q.where(users.c.email == email.strip().lower()))).first()
        if not await checker.verify(password, row.password_hash if row is not None else None):
            return None
        assert row is not None  # verify() is False without a stored hash
        token = security.new_token(security.USER_TOKEN_PREFIX)
        t = now_ms()
        async with self.write() as conn:
            await conn.execute(
                insert(user_tokens).values(
                    user_id=row.id,
                    tenant_id=row.tenant_id,
                    token_hash=security.token_hash(token),
                    created_ms=t,
                    expires_ms=t + int(self.session_ttl_s * 1000),
                    revoked=False,
                )
            )
        return token, UserRef(row.id, row.tenant_id, row.name, row.email, row.role)

    async def revoke_token(self, token: str) -> bool:
        """Revoke a device or user token given in full. True if one was revoked."""
        h = security.token_hash(token)
        async with self.write() as conn:
            n = (
                await conn.execute(
                    update(device_tokens).where(device_tokens.c.token_hash == h).values(revoked=True)
                )
            ).rowcount
            n += (
                await conn.execute(
                    update(user_tokens).where(user_tokens.c.token_hash == h).values(revoked=True)
                )
            ).rowcount
        return n > 0


#: built once: it runs before every device request, and building it took ~40 µs of Python each time
_DEVICE_FOR_TOKEN = (
    select(*DEVICE_REF_COLUMNS)
    .join(device_tokens, device_tokens.c.device_id == devices.c.id)
    .where(device_tokens.c.token_hash == bindparam("token_hash"), device_tokens.c.revoked.is_(False))
)
_PG_DEVICE_FOR_TOKEN = pg_sql(_DEVICE_FOR_TOKEN)  # its one parameter: the token's hash
