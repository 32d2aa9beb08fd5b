"""Device heartbeats, the config version a gateway runs, and connectivity of a sample pushed live."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import update

from trackingbms.analytics.connectivity import connectivity
from trackingbms.model import Connectivity
from trackingbms.server.db import devices
from trackingbms.server.store import packing
from trackingbms.server.store.base import DeviceRef, StoreCore, now_ms


class HeartbeatStore(StoreCore):
    async def heartbeat(
        self, device: DeviceRef, body: dict[str, Any], received_ms: int | None = None
    ) -> None:
        t = received_ms or now_ms()
        async with self.write() as conn:
            await conn.execute(
                update(devices)
                .where(devices.c.id == device.id, devices.c.tenant_id == device.tenant_id)
                .values(
                    last_contact_ms=t,
                    heartbeat_ms=t,
                    heartbeat=orjson.dumps(body).decode(),
                    reported_config_version=body.get("config_version"),
                )
            )

    async def note_config_version(self, device: DeviceRef, version: int) -> None:
        async with self.write() as conn:
            await conn.execute(
                update(devices).where(devices.c.id == device.id).values(reported_config_version=version)
            )

    def live_connectivity(self, sample: dict[str, Any], received_ms: int) -> Connectivity:
        ts = packing.parse_ts_ms(sample["ts"])
        return connectivity(
            received_ms,
            poll_interval_s=self.default_poll_interval_s,
            last_received_ms=received_ms,
            received_ts_ms=ts,
            heartbeat_ms=None,
            link_state=None,
            offline_timeout_s=self.offline_timeout_s,
            grace_s=self.online_grace_s,
        )
