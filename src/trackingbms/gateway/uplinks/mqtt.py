"""MQTT transport (aiomqtt): the ingest batch JSON on ``tbms/<device>/samples``, QoS 1, persistent session.

A batch leaves the queue only on the server's *application* acknowledgement on ``tbms/<device>/ack``
(``{"batch_id", "accepted", "duplicates", "rejected", ...}``, published after the commit), never on the
broker's PUBACK: a broker that accepted a message may still lose it (a node dies, a worker dies mid-batch).
No acknowledgement within ``timeout_s`` → the batch is sent again later and the server counts what it
already stored as duplicates. A whole-batch refusal comes back as ``{"batch_id", "status", "error"}``
with the HTTP endpoint's status codes (413, 422, 429 + ``retry_after_s``, 401).

``url`` may list several brokers (``mqtt://n1:1883,n2:1883``, e.g. the MQTT listeners of a NATS
cluster): after a lost connection the next one is tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import orjson

from trackingbms.gateway.config import UplinkConfig
from trackingbms.gateway.uplinks.base import Failed, Outcome, Reply, TooLarge, TransportError, Wait

log = logging.getLogger("trackingbms.gateway.uplink.mqtt")

RECONNECT_MAX_S = 5.0


def parse_brokers(url: str) -> tuple[bool, list[tuple[str, int]]]:
    """``mqtts://a:8883,b`` → (tls, [(a, 8883), (b, 8883)]); default port 1883 (8883 with TLS)."""
    scheme, _, rest = url.partition("://")
    tls = scheme == "mqtts"
    rest = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    brokers = []
    for part in rest.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not port.isdigit():
            host, port = part.strip(), ""
        brokers.append((host.strip("[]"), int(port) if port else (8883 if tls else 1883)))
    return tls, brokers


def topics(device: str) -> dict[str, str]:
    """The device's topics (one definition; the broker's ACL and the ingest worker use the same)."""
    return {k: f"tbms/{device}/{k}" for k in ("samples", "heartbeat", "ack")}


class MqttTransport:
    def __init__(self, cfg: UplinkConfig, token: str):
        assert cfg.username, "config validation requires a username for MQTT"
        self.cfg = cfg
        self.name = cfg.name
        self.url = cfg.url
        self.tls, self.brokers = parse_brokers(cfg.url)
        self.username = cfg.username
        self.token = token
        self.topics = topics(cfg.username)
        self.client: aiomqtt.Client | None = None
        self.connected = asyncio.Event()
        self.waiters: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self.last_error = "not connected yet"
        self._task: asyncio.Task[None] | None = None
        #: called with a remote config the server sends unasked (its answer to a heartbeat)
        self.on_config: Callable[[Any], Awaitable[None]] | None = None
        self._applying: set[asyncio.Task[None]] = set()

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=str(self.cfg.ca_file) if self.cfg.ca_file else None)

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mqtt-{self.name}")

    async def _run(self) -> None:
        attempt = 0
        delay_s = 0.2
        while True:
            host, port = self.brokers[attempt % len(self.brokers)]
            try:
                async with aiomqtt.Client(
                    host,
                    port,
                    username=self.username,
                    password=self.token,
                    identifier=f"tbms-gw-{self.username}",
                    clean_session=False,  # acks published while we were away still reach us (Mosquitto)
                    keepalive=15,
                    timeout=self.cfg.timeout_s,
                    tls_context=self._tls_context(),
                ) as client:
                    await client.subscribe(self.topics["ack"], qos=1)
                    self.client = client
                    self.connected.set()
                    if self.last_error != "not connected yet":
                        log.info("uplink %s: connected to %s:%d", self.name, host, port)
                    self.last_error = ""
                    delay_s = 0.2
                    async for message in client.messages:
                        self._on_ack(message.payload)
            except aiomqtt.MqttError as exc:
                self.last_error = describe(exc, host, port)
            finally:
                self.client = None
                self.connected.clear()
                # the acknowledgement may never come now: the policy keeps the samples and sends them again
                for fut in self.waiters.values():
                    if not fut.done():
                        fut.set_result(None)
            attempt += 1
            await asyncio.sleep(delay_s)
            delay_s = min(RECONNECT_MAX_S, delay_s * 2)

    def _on_ack(self, payload: Any) -> None:
        try:
            reply = orjson.loads(payload)
        except (orjson.JSONDecodeError, TypeError):
            log.warning("uplink %s: ignoring an acknowledgement that is not JSON", self.name)
            return
        if not isinstance(reply, dict):
            return
        fut = self.waiters.get(str(reply.get("batch_id")))
        if fut is not None and not fut.done():
            fut.set_result(reply)
            return
        if reply.get("batch_id") is None and reply.get("config") and self.on_config is not None:
            task = asyncio.get_running_loop().create_task(self.on_config(reply["config"]))
            self._applying.add(task)
            task.add_done_callback(self._applying.discard)
        # else: the ack of a batch we stopped waiting for (timed out, or before a restart): it is sent
        # again and counted as duplicates by the server

    async def _connected_client(self) -> aiomqtt.Client | None:
        self._start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(self.cfg.timeout_s, 5.0)):
                await self.connected.wait()
        return self.client

    async def send_batch(self, body: bytes, config_version: int) -> Outcome:
        client = await self._connected_client()
        if client is None:
            return Failed(self.last_error or "not connected")
        batch_id = uuid.uuid4().hex
        payload = b'{"batch_id":"%s","config_version":%d,' % (batch_id.encode(), config_version) + body[1:]
        fut: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self.waiters[batch_id] = fut
        try:
            await client.publish(self.topics["samples"], payload, qos=1, timeout=self.cfg.timeout_s)
            async with asyncio.timeout(self.cfg.timeout_s):
                reply = await fut
        except TimeoutError:
            return Failed(f"no acknowledgement from the server within {self.cfg.timeout_s:g} s")
        except aiomqtt.MqttError as exc:
            return Failed(f"publish failed: {exc}")
        finally:
            self.waiters.pop(batch_id, None)
        if reply is None:
            return Failed("connection to the broker lost before the server's acknowledgement")
        status = reply.get("status")
        if status is None:
            return Reply(reply)
        error = str(reply.get("error", ""))[:300]
        if status == 429:
            try:
                return Wait(max(0.0, float(reply.get("retry_after_s", 5.0))))
            except (TypeError, ValueError):
                return Wait(5.0)
        if status in (413, 422):
            return TooLarge(int(status), error)
        if status in (401, 403):
            return Failed(f"device refused by the server ({status}: {error}); check device_token")
        return Failed(f"ingest: {status}: {error}")

    async def heartbeat(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Published QoS 1; delivered once the broker has it (a heartbeat is a state report, not data)."""
        client = await self._connected_client()
        if client is None:
            raise TransportError(self.last_error or "not connected")
        try:
            await client.publish(
                self.topics["heartbeat"], orjson.dumps(body), qos=1, timeout=self.cfg.timeout_s
            )
        except aiomqtt.MqttError as exc:
            raise TransportError(f"heartbeat publish failed: {exc}") from exc
        return None

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


def describe(exc: Exception, host: str, port: int) -> str:
    text = str(exc)
    low = text.lower()
    if "not authori" in low or "bad user name or password" in low or "code:5" in low or "code:4" in low:
        return f"broker {host}:{port} refused the credentials ({text}); check username and device_token"
    return f"cannot connect to broker {host}:{port} ({text})"
