"""Personal access tokens for integrations (scripts, Grafana, Home Assistant's REST sensors).

A token belongs to a user, has a name, a scope and an expiry, and is shown once and stored hashed like
every other token. ``read`` lets it read what its user can read; ``read-write`` adds what its user may
change (a viewer can only hold read tokens). A token resolves to a :class:`UserRef` whose role is capped by
the scope (a read token acts as a viewer), so every route's existing checks apply unchanged.
A token cannot create tokens (only a dashboard login or the admin CLI can).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update

from trackingbms.server import security
from trackingbms.server.db import api_tokens, tenants, users
from trackingbms.server.store.base import NotFound, StoreCore, TenantScope, UserRef, now_ms

API_TOKEN_PREFIX = "tbp_"
SCOPES = ("read", "read-write")
MAX_EXPIRY_DAYS = 366
#: last use is recorded at most this often per token (a write per request would be a write per read)
LAST_USED_RESOLUTION_MS = 60_000


def is_api_token(token: str) -> bool:
    return token.startswith(API_TOKEN_PREFIX)


def _public(row: Any) -> dict[str, Any]:
    now = now_ms()
    return {
        "id": row.id,
        "name": row.name,
        "scope": row.scope,
        "user": row.email,
        "created_ms": row.created_ms,
        "expires_ms": row.expires_ms,
        "last_used_ms": row.last_used_ms,
        "status": "revoked" if row.revoked_ms else ("expired" if row.expires_ms <= now else "active"),
    }


class ApiTokenStore(StoreCore):
    """Server-wide: resolve a presented token."""

    async def user_for_api_token(self, token: str) -> UserRef | None:
        t = now_ms()
        q = (
            select(
                api_tokens.c.id,
                api_tokens.c.scope,
                api_tokens.c.last_used_ms,
                users.c.id.label("user_id"),
                users.c.tenant_id,
                tenants.c.name,
                users.c.email,
                users.c.role,
            )
            .join(users, users.c.id == api_tokens.c.user_id)
            .join(tenants, tenants.c.id == users.c.tenant_id)
            .where(
                api_tokens.c.token_hash == security.token_hash(token),
                api_tokens.c.revoked_ms.is_(None),
                api_tokens.c.expires_ms > t,
            )
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        if row is None:
            return None
        if row.last_used_ms is None or t - row.last_used_ms >= LAST_USED_RESOLUTION_MS:
            async with self.write() as conn:
                await conn.execute(update(api_tokens).where(api_tokens.c.id == row.id).values(last_used_ms=t))
        role = row.role if row.scope == "read-write" else "viewer"
        return UserRef(row.user_id, row.tenant_id, row.name, row.email, role)


class ApiTokenScope(TenantScope):
    """One tenant's tokens: created for a user of the tenant, listed and revoked within it."""

    async def create_api_token(
        self, user_email: str, name: str, scope: str, expires_days: int
    ) -> dict[str, Any]:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        if not 1 <= expires_days <= MAX_EXPIRY_DAYS:
            raise ValueError(f"expiry must be 1 to {MAX_EXPIRY_DAYS} days")
        name = name.strip()
        if not 1 <= len(name) <= 100:
            raise ValueError("name must be 1 to 100 characters")
        token = security.new_token(API_TOKEN_PREFIX)
        t = now_ms()
        async with self.store.write() as conn:
            user = (
                await conn.execute(
                    select(users.c.id, users.c.role).where(
                        users.c.email == user_email.strip().lower(), users.c.tenant_id == self.tenant_id
                    )
                )
            ).first()
            if user is None:
                raise NotFound(f"no user {user_email!r}")
            if scope == "read-write" and user.role not in ("admin", "operator"):
                raise ValueError(f"a {user.role} can only hold read tokens")
            tid = (
                await conn.execute(
                    insert(api_tokens)
                    .values(
                        tenant_id=self.tenant_id,
                        user_id=user.id,
                        name=name,
                        token_hash=security.token_hash(token),
                        scope=scope,
                        created_ms=t,
                        expires_ms=t + expires_days * 86_400_000,
                    )
                    .returning(api_tokens.c.id)
                )
            ).scalar_one()
        return {
            "id": tid,
            "name": name,
            "scope": scope,
            "user": user_email.strip().lower(),
            "created_ms": t,
            "expires_ms": t + expires_days * 86_400_000,
            "last_used_ms": None,
            "status": "active",
            "token": token,
        }

    async def list_api_tokens(self, user_email: str | None = None) -> list[dict[str, Any]]:
        q = (
            select(
                api_tokens.c.id,
                api_tokens.c.name,
                api_tokens.c.scope,
                users.c.email,
                api_tokens.c.created_ms,
                api_tokens.c.expires_ms,
                api_tokens.c.last_used_ms,
                api_tokens.c.revoked_ms,
            )
            .join(users, users.c.id == api_tokens.c.user_id)
            .where(api_tokens.c.tenant_id == self.tenant_id)
            .order_by(api_tokens.c.id)
        )
        if user_email is not None:
            q = q.where(users.c.email == user_email.strip().lower())
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [_public(r) for r in rows]

    async def revoke_api_token(self, token_id: int, user_email: str | None = None) -> dict[str, Any]:
        """Revoke one token of this tenant (of ``user_email`` only, when given). Revoking twice is fine."""
        mine = [t for t in await self.list_api_tokens(user_email) if t["id"] == token_id]
        if not mine:
            raise NotFound(f"no API token {token_id}")
        async with self.store.write() as conn:
            await conn.execute(
                update(api_tokens)
                .where(
                    api_tokens.c.id == token_id,
                    api_tokens.c.tenant_id == self.tenant_id,
                    api_tokens.c.revoked_ms.is_(None),
                )
                .values(revoked_ms=now_ms())
            )
        return {**mine[0], "status": "revoked"}
