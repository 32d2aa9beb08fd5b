"""Cluster mode for ``POST /api/v1/ingest``: hand the batch to JetStream and answer with the worker's reply.

With ``ingest_via_jetstream`` (and ``nats_url``), an API process writes no samples itself. It checks what only
it can check (device token, rate limit, body size, batch shape), publishes the batch on the device's subject
``tbms.<device key>.samples`` exactly as a gateway over MQTT would (``{"batch_id", "config_version",
"samples"}``), waits for the stream's acknowledgement (the batch is now replicated: a killed API process loses
nothing) and then for the ingest worker's reply on ``tbms.<key>.ack``, published after its commit. That reply
is the HTTP reply, so the contract of docs/api.md holds: what is counted ``accepted`` is durable.

No reply within ``ingest_jetstream_timeout_s`` (no worker running, the database slow): **503** with
``Retry-After``. The batch stays in the stream and a worker stores it later; the gateway sends it again and
the repeat is counted as duplicates, as for any retry. The worker runs the same
:class:`~trackingbms.server.ingest.IngestService` (validation, dedup, live feed, alarms), so an API process in
this mode holds no ingest state at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import orjson

from trackingbms.server.brokers import device_key

log = logging.getLogger("trackingbms.server.handoff")


class NotCommitted(Exception):
    """The batch may be queued but no commit was confirmed in time: the client must send it again."""


class TooLargeForQueue(Exception):
    """The batch is larger than the NATS server's ``max_payload``: the client must split it (413)."""


class JetStreamIngest:
    def __init__(self, nats_url: str, timeout_s: float) -> None:
        self.nats_url = nats_url
        self.timeout_s = timeout_s
        self._nc: Any = None
        self._js: Any = None
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # in the background, so that an API process can start before its cluster; until it is connected,
        # ingest requests are answered 503 (the gateways keep their samples)
        self._task = asyncio.create_task(self._connect(), name="ingest-handoff")

    async def _connect(self) -> None:
        import nats

        async def on_error(exc: Exception) -> None:
            log.warning("ingest hand-off: NATS: %s", exc)

        while True:
            try:
                nc = await nats.connect(
                    servers=self.nats_url.split(","),
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    error_cb=on_error,
                )
                await nc.subscribe("tbms.*.ack", cb=self._on_ack)
                self._nc, self._js = nc, nc.jetstream(timeout=self.timeout_s)
                log.info("ingest hand-off: batches go to JetStream via %s", self.nats_url)
                return
            except Exception as exc:
                log.warning("ingest hand-off: cannot reach NATS at %s (%s); retrying", self.nats_url, exc)
                await asyncio.sleep(2.0)

    async def _on_ack(self, msg: Any) -> None:
        try:
            reply = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return
        if isinstance(reply, dict):
            fut = self._waiters.get(str(reply.get("batch_id")))
            if fut is not None and not fut.done():
                fut.set_result(reply)

    @staticmethod
    def can_carry(tenant_id: int, device_name: str) -> bool:
        """Whether this device has a subject (names outside [A-Za-z0-9_-] have none: stored directly)."""
        try:
            device_key(tenant_id, device_name)
        except ValueError:
            return False
        return True

    async def ingest(
        self, tenant_id: int, device_name: str, samples: list[Any], config_version: int | None
    ) -> dict[str, Any]:
        """The worker's reply: accepted, duplicates, rejected, config?; or status and error."""
        if self._js is None or not self._nc.is_connected:
            raise NotCommitted("the ingest queue (NATS) is not reachable from this server")
        key = device_key(tenant_id, device_name)
        batch_id = "http-" + uuid.uuid4().hex
        body = {"batch_id": batch_id, "config_version": config_version, "samples": samples}
        data = orjson.dumps(body)
        if len(data) > self._nc.max_payload:
            raise TooLargeForQueue(
                f"batch of {len(data)} bytes; the ingest queue takes {self._nc.max_payload}"
            )
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[batch_id] = fut
        try:
            try:
                await self._js.publish(f"tbms.{key}.samples", data, timeout=self.timeout_s)
            except Exception as exc:  # no stream yet, no quorum, timeout: not queued for sure
                raise NotCommitted(
                    f"the ingest queue did not take the batch ({exc or type(exc).__name__})"
                ) from None
            try:
                async with asyncio.timeout(self.timeout_s):
                    reply = await fut
            except TimeoutError:
                raise NotCommitted("queued, but no ingest worker confirmed storing it in time") from None
        finally:
            self._waiters.pop(batch_id, None)
        reply.pop("batch_id", None)
        return reply

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
