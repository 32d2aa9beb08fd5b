"""The phone relay's lookups (on TenantStore): which device of the tenant a gateway's relay key names.

A gateway hands the phone ``relay_key_id(sha256(device token))`` (:mod:`trackingbms.model`), never its token;
the server finds the device among the tenant's live device tokens (stored as that SHA-256) and signs its
receipt with the same key, so that only that gateway believes it. A revoked token's key names nothing.
"""

from __future__ import annotations

import hmac

from sqlalchemy import select

from trackingbms.model import relay_key_id
from trackingbms.server.db import device_tokens, devices
from trackingbms.server.store.base import DEVICE_REF_COLUMNS, DeviceRef, NotFound, TenantScope


class RelayScope(TenantScope):
    async def relay_device(self, key_id: str) -> tuple[DeviceRef, bytes]:
        """(the device, its receipt key) for a gateway's relay key; NotFound outside this tenant. The tenant's
        live tokens are read and their key ids computed here (a few µs each): no extra column to keep."""
        q = (
            select(*DEVICE_REF_COLUMNS, device_tokens.c.token_hash)
            .join(device_tokens, device_tokens.c.device_id == devices.c.id)
            .where(
                devices.c.tenant_id == self.tenant_id,
                device_tokens.c.tenant_id == self.tenant_id,
                device_tokens.c.revoked.is_(False),
            )
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        for row in rows:
            key = bytes.fromhex(row.token_hash)
            if hmac.compare_digest(relay_key_id(key), key_id):
                return DeviceRef(*row[:6]), key
        raise NotFound(
            "no device of your tenant has this relay key (the gateway belongs to another tenant, or its "
            "device token was revoked or replaced)"
        )
