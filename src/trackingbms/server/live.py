"""Live fan-out between processes: PostgreSQL ``LISTEN`` / ``NOTIFY`` (channel ``tbms_live``) on one database,
or NATS subjects ``tbms.live.<tenant id>`` when a NATS URL is configured (:class:`NatsRelay`).

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
from sqlalchemy.ext.asyncio import AsyncEngine

from trackingbms.server.hub import Hub
from trackingbms.server.store.base import pg_fetch

log = logging.getLogger("trackingbms.server.live")

CHANNEL = "tbms_live"
MAX_PAYLOAD = 7900
#: messages waiting to be relayed at most (a stalled database must not hold an ingest burst's worth)
MAX_PENDING = 10_000
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
    await notify_many(engine, [payload])


#: one notification per payload, in array order, in one statement (its own transaction: delivered at once)
_NOTIFY_MANY = f"SELECT pg_notify('{CHANNEL}', p) FROM unnest($1::text[]) AS p"


async def notify_many(engine: AsyncEngine, payloads: list[str]) -> None:
    """Send encoded messages (:func:`encode`) in one round trip on one pooled connection."""
    await pg_fetch(engine, _NOTIFY_MANY, payloads)  # outside a transaction: delivered as it runs


class PgRelay:
    """Relay a hub's messages to the other processes and theirs into it, while running."""

    def __init__(self, engine: AsyncEngine, hub: Hub, *, send: bool = True) -> None:
        self.engine = engine
        self.hub = hub
        #: False: only listen (another relay sends this process's messages, e.g. NATS)
        self.send = send
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        #: encoded messages waiting for the sender task, in publish order
        self._pending: list[str] = []
        self._sender: asyncio.Task[None] | None = None
        #: times the oldest waiting message was dropped (more than MAX_PENDING waiting)
        self.dropped = 0
        self._dropped_told = 0  # what the last warning counted

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
        payload = encode(tenant_id, message)
        if payload is None:
            return
        if len(self._pending) >= MAX_PENDING:  # the database is not keeping up: the feed loses its oldest
            del self._pending[: len(self._pending) - MAX_PENDING + 1]
            self.dropped += 1
        self._pending.append(payload)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_pending())

    async def _send_pending(self) -> None:
        """Send what queued, one statement at a time: one per ingest batch, or fewer under load (a task
        and a pooled connection per message cost ~10 % of the server's ingest CPU, and under load the
        pool's overflow connections were opened and closed again)."""
        while self._pending:
            if self.dropped > self._dropped_told:
                log.warning(
                    "live relay: %d messages dropped, the database is slow", self.dropped - self._dropped_told
                )
                self._dropped_told = self.dropped
            payloads, self._pending = self._pending, []
            try:
                await notify_many(self.engine, payloads)
            except Exception as exc:  # the live feed is best effort; the data is stored already
                log.warning("live relay failed (%d messages not relayed): %s", len(payloads), exc)

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
        if self.send:
            self.hub.relay = self.relay
        self._task = asyncio.create_task(self._listen(), name="live-relay")

    async def stop(self) -> None:
        if self.send:
            self.hub.relay = None
        for task in (self._task, self._sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()


LIVE_SUBJECT = "tbms.live"


def nats_publisher(nc: Any) -> Any:
    """A hub relay publishing on ``tbms.live.<tenant id>`` through the connection ``nc`` (an ingest worker's
    own JetStream connection)."""

    def relay(tenant_id: int, message: dict[str, Any]) -> None:
        payload = orjson.dumps({"o": ORIGIN, "t": tenant_id, "m": message})
        task = asyncio.get_running_loop().create_task(nc.publish(f"{LIVE_SUBJECT}.{tenant_id}", payload))
        task.add_done_callback(_log_failure)

    return relay


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("live relay over NATS failed: %s", task.exception())


class NatsRelay:
    """The live fan-out over NATS core subjects (no size cap but NATS's ``max_payload``, no database
    connection held per process): what this process publishes goes to ``tbms.live.<tenant id>``, what
    the others publish comes back into the hub. At most once, like NOTIFY: the feed is a view of data
    already stored."""

    def __init__(self, nats_url: str, hub: Hub) -> None:
        self.nats_url = nats_url
        self.hub = hub
        self._nc: Any = None
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _on_msg(self, msg: Any) -> None:
        try:
            obj = orjson.loads(msg.data)
            if obj["o"] != ORIGIN:
                self.hub.publish(int(obj["t"]), obj["m"], relay=False)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("ignoring a malformed live message on %s", msg.subject)

    def relay(self, tenant_id: int, message: dict[str, Any]) -> None:
        if self._nc is None or not self._nc.is_connected:
            return  # NATS unreachable: this message stays local (the data is stored)
        nats_publisher(self._nc)(tenant_id, message)

    async def _connect(self) -> None:
        import nats

        async def on_error(exc: Exception) -> None:
            log.warning("live relay: NATS: %s", exc)

        while True:  # the API serves without NATS meanwhile (the live feed stays in-process)
            try:
                self._nc = await nats.connect(
                    servers=self.nats_url.split(","),
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    error_cb=on_error,
                )
                await self._nc.subscribe(f"{LIVE_SUBJECT}.*", cb=self._on_msg)
                self.connected.set()
                return
            except Exception as exc:
                log.warning("live relay: cannot reach NATS at %s (%s); retrying", self.nats_url, exc)
                await asyncio.sleep(2.0)

    async def start(self) -> None:
        self.hub.relay = self.relay
        self._task = asyncio.create_task(self._connect(), name="live-relay-nats")

    async def stop(self) -> None:
        self.hub.relay = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
