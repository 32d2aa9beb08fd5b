"""Live fan-out between processes over PostgreSQL ``LISTEN`` / ``NOTIFY`` (channel ``tbms_live``).

With several API processes and ingest workers on one PostgreSQL database, a sample stored by one process must
reach the WebSockets open on every other. Each process's :class:`~trackingbms.server.hub.Hub` relays what
it publishes with ``pg_notify`` and a listener re-publishes what the others sent (its own messages are
skipped by origin id). PostgreSQL caps a notification at 8000 bytes: a larger message (a very wide pack)
stays local and is logged. On SQLite there is one process, so nothing is relayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from trackingbms.server.hub import Hub

log = logging.getLogger("trackingbms.server.live")

CHANNEL = "tbms_live"
MAX_PAYLOAD = 7900
#: this process: its own notifications come back to its listener and are skipped
ORIGIN = uuid.uuid4().hex[:16]


def encode(tenant_id: int, message: dict[str, Any]) -> str | None:
    payload = orjson.dumps({"o": ORIGIN, "t": tenant_id, "m": message})
    if len(payload) > MAX_PAYLOAD:
        log.warning("live message of %d bytes too large for NOTIFY; not relayed", len(payload))
        return None
    return payload.decode()


async def notify(engine: AsyncEngine, tenant_id: int, message: dict[str, Any]) -> None:
    payload = encode(tenant_id, message)
    if payload is None:
        return
    async with engine.connect() as conn:
        await conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": payload})
        await conn.commit()


class PgRelay:
    """Relay a hub's messages to the other processes and theirs into it, while running."""

    def __init__(self, engine: AsyncEngine, hub: Hub) -> None:
        self.engine = engine
        self.hub = hub
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()

    def _dsn(self) -> str:
        url = self.engine.url.set(drivername="postgresql")
        return url.render_as_string(hide_password=False)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            obj = orjson.loads(payload)
            if obj["o"] != ORIGIN:
                self.hub.publish(int(obj["t"]), obj["m"], relay=False)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("ignoring a malformed live notification")

    def relay(self, tenant_id: int, message: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._send(tenant_id, message))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, tenant_id: int, message: dict[str, Any]) -> None:
        try:
            await notify(self.engine, tenant_id, message)
        except Exception as exc:  # the live feed is best effort; the data is stored already
            log.warning("live relay failed: %s", exc)

    async def _listen(self) -> None:
        import asyncpg

        while True:
            try:
                self._conn = await asyncpg.connect(self._dsn())
                await self._conn.add_listener(CHANNEL, self._on_notify)
                lost = asyncio.Event()
                self._conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await lost.wait()
                log.warning("live relay: database connection lost; reconnecting")
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("live relay: cannot listen (%s); retrying", exc)
            await asyncio.sleep(1.0)

    async def start(self) -> None:
        self.hub.relay = self.relay
        self._task = asyncio.create_task(self._listen(), name="live-relay")

    async def stop(self) -> None:
        self.hub.relay = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
