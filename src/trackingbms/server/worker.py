"""``trackingbms ingest-worker``: store batches that arrive over MQTT or NATS JetStream, then acknowledge.

Gateways publish the ingest API's batch JSON on ``tbms/<device key>/samples`` (plus ``batch_id`` and
``config_version``) and heartbeats on ``tbms/<device key>/heartbeat``. A worker:

- **MQTT** (Mosquitto): subscribes with a shared subscription (``$share/<group>/tbms/+/samples``) so
  that several workers split the load; the broker's ACL guarantees the key in the topic is the
  publisher's own.
- **JetStream** (NATS, e.g. its MQTT listener, where the same topics become subjects ``tbms.<key>.…``):
  the samples land in a replicated stream; workers share one durable pull consumer and ack each message
  explicitly, only after the commit. A worker killed mid-batch leaves its messages unacked: JetStream
  redelivers them to another worker after ``ack_wait`` (30 s; a few messages are fetched at a time so that a
  slow database does not make healthy workers' messages look abandoned).

Each batch goes through the same :class:`~trackingbms.server.ingest.IngestService` as
``POST /api/v1/ingest`` (one validation, one dedup, one storage path, and, with ``alarms_enabled``, the same
alarm service evaluating the accepted samples off the ack path); the reply ``{"batch_id", "accepted",
"duplicates", "rejected", "config"?}`` is published on ``tbms/<key>/ack`` *after* the commit. A
redelivered or re-sent batch is answered with its samples counted as duplicates, so the gateway can always
delete what the server has.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import select

from trackingbms.server.brokers import parse_device_key, parse_topic
from trackingbms.server.db import devices
from trackingbms.server.hub import Hub
from trackingbms.server.ingest import IngestService
from trackingbms.server.live import PgRelay, nats_publisher
from trackingbms.server.store import DeviceRef, Store, now_ms
from trackingbms.server.store.base import DEVICE_REF_COLUMNS

if TYPE_CHECKING:
    from trackingbms.server.alarms import AlarmService

log = logging.getLogger("trackingbms.server.worker")

STREAM = "TBMS_SAMPLES"
STREAM_SUBJECTS = ["tbms.*.samples", "tbms.*.heartbeat"]
CONSUMER = "ingest"
SHARE_GROUP = "tbms-ingest"


@dataclass
class WorkerStats:
    batches: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    heartbeats: int = 0
    refused: int = 0


class IngestHandler:
    """Transport-independent: (device key, kind, payload) → the acknowledgement to publish, or None."""

    def __init__(
        self,
        store: Store,
        max_batch_samples: int = 5000,
        max_future_ms: int | None = None,
        transport: str = "mqtt",
        alarms: AlarmService | None = None,
    ) -> None:
        self.store = store
        self.max_batch_samples = max_batch_samples
        self.stats = WorkerStats()
        # the same ingest service as POST /api/v1/ingest; its live messages reach the API processes'
        # WebSockets through PostgreSQL NOTIFY (a worker has no WebSockets of its own)
        self.hub = Hub()
        if not store.sqlite:
            self.hub.relay = PgRelay(store.engine, self.hub).relay
        self.transport = transport  # the ingest metrics' label
        # the same alarm path as HTTP ingest: accepted samples go to the alarm service after the commit
        # (None when ``alarms_enabled`` is off: storage only)
        self.alarms = alarms
        self.service = (
            IngestService(store, self.hub, alarms=alarms)
            if max_future_ms is None
            else IngestService(store, self.hub, max_future_ms=max_future_ms, alarms=alarms)
        )

    async def device(self, key: str) -> DeviceRef | None:
        parsed = parse_device_key(key)
        if parsed is None:
            return None
        tenant_id, name = parsed
        q = select(*DEVICE_REF_COLUMNS).where(devices.c.tenant_id == tenant_id, devices.c.name == name)
        async with self.store.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return DeviceRef(*row) if row else None

    async def handle(self, key: str, kind: str, payload: bytes) -> dict[str, Any] | None:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError as e:
            self.stats.refused += 1
            log.warning("device %s: %s is not JSON (%s); dropped", key, kind, e)
            return None  # no batch_id to answer: the gateway times out and sends again
        batch_id = obj.get("batch_id") if isinstance(obj, dict) else None
        device = await self.device(key)
        if device is None:
            self.stats.refused += 1
            log.warning("no device for MQTT identity %r; %s dropped", key, kind)
            return {"batch_id": batch_id, "status": 401, "error": f"unknown device {key!r}"}
        if kind == "heartbeat":
            return await self._heartbeat(device, obj)
        if not isinstance(obj, dict) or not isinstance(obj.get("samples"), list):
            self.stats.refused += 1
            return {"batch_id": batch_id, "status": 422, "error": 'the body is {"samples": [...]}'}
        batch = obj["samples"]
        if len(batch) > self.max_batch_samples:
            self.stats.refused += 1
            return {
                "batch_id": batch_id,
                "status": 413,
                "error": f"at most {self.max_batch_samples} samples per batch, got {len(batch)}",
            }
        res = await self.service.ingest(device, batch, now_ms(), self.transport)  # returns after the commit
        self.stats.batches += 1
        self.stats.accepted += res.accepted
        self.stats.duplicates += res.duplicates
        self.stats.rejected += len(res.rejected)
        reply: dict[str, Any] = {
            "batch_id": batch_id,
            "accepted": res.accepted,
            "duplicates": res.duplicates,
            "rejected": res.rejected,
        }
        reported = obj.get("config_version")
        reported = reported if isinstance(reported, int) and 0 <= reported < 2**31 else None
        if reported is not None and reported != device.reported_config_version:
            await self.store.note_config_version(device, reported)
        cfg = device.pending_config(reported)
        if cfg is not None:
            reply["config"] = cfg
        return reply

    async def _heartbeat(self, device: DeviceRef, obj: Any) -> dict[str, Any] | None:
        """Stored like ``POST /api/v1/heartbeat``; a newer remote config than the one the gateway reports
        is answered on its ack topic (``{"batch_id": null, "config": …}``), as the HTTP reply carries it."""
        from pydantic import ValidationError

        from trackingbms.server.schemas import Heartbeat

        try:
            data = Heartbeat.model_validate(obj).model_dump(mode="json")
        except ValidationError as e:
            log.warning("device %s: invalid heartbeat dropped: %s", device.name, e.errors()[0].get("msg"))
            return None
        await self.store.heartbeat(device, data)
        self.stats.heartbeats += 1
        self.hub.publish(device.tenant_id, {"type": "heartbeat", "device_id": device.name, "heartbeat": data})
        reported = data.get("config_version")
        cfg = device.pending_config(reported if reported is not None else -1)
        return {"batch_id": None, "config": cfg} if cfg is not None else None


# -------------------------------------------------------------------------------------------- MQTT


def parse_mqtt_url(url: str) -> tuple[bool, str, int, str | None, str | None]:
    """``mqtt[s]://[user[:password]@]host[:port]`` → (tls, host, port, user, password)."""
    from urllib.parse import unquote, urlsplit

    u = urlsplit(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ValueError(f"{url!r}: expected mqtt://[user[:password]@]host[:port] (or mqtts://)")
    tls = u.scheme == "mqtts"
    return (
        tls,
        u.hostname,
        u.port or (8883 if tls else 1883),
        unquote(u.username) if u.username else None,
        unquote(u.password) if u.password else None,
    )


async def run_mqtt(
    handler: IngestHandler,
    url: str,
    *,
    password: str | None = None,
    group: str = SHARE_GROUP,
    concurrency: int = 4,
    stop: asyncio.Event | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Consume ``$share/<group>/tbms/+/{samples,heartbeat}`` until ``stop``; reconnects on its own."""
    import ssl

    import aiomqtt

    tls, host, port, user, url_password = parse_mqtt_url(url)
    stop = stop or asyncio.Event()
    delay_s = 0.2
    while not stop.is_set():
        try:
            async with aiomqtt.Client(
                host,
                port,
                username=user,
                password=password or url_password,
                identifier=f"tbms-worker-{uuid.uuid4().hex[:12]}",
                clean_session=True,
                keepalive=15,
                tls_context=ssl.create_default_context() if tls else None,
            ) as client:
                for kind in ("samples", "heartbeat"):
                    await client.subscribe(f"$share/{group}/tbms/+/{kind}", qos=1)
                log.info("ingest worker consuming MQTT %s:%d (shared group %s)", host, port, group)
                if ready:
                    ready()
                delay_s = 0.2

                async def answer(key: str, reply: dict[str, Any], client: Any = client) -> None:
                    await client.publish(f"tbms/{key}/ack", orjson.dumps(reply), qos=1)

                await _consume(handler, client.messages, answer, concurrency, stop)
        except aiomqtt.MqttError as exc:
            log.warning("ingest worker: MQTT broker %s:%d: %s; reconnecting", host, port, exc)
        await _sleep_or_stop(stop, delay_s)
        delay_s = min(5.0, delay_s * 2)


async def _consume(
    handler: IngestHandler,
    messages: Any,
    answer: Callable[[str, dict[str, Any]], Awaitable[None]],
    concurrency: int,
    stop: asyncio.Event,
) -> None:
    sem = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async def one(key: str, kind: str, payload: bytes) -> None:
        try:
            reply = await handler.handle(key, kind, payload)
            if reply is not None:
                await answer(key, reply)
        except Exception:  # one bad batch must not stop the worker: its gateway sends it again
            log.exception("ingest worker: batch from %s failed; not acknowledged", key)
        finally:
            sem.release()

    stopper = asyncio.ensure_future(stop.wait())
    it = messages.__aiter__()
    try:
        while True:
            nxt = asyncio.ensure_future(it.__anext__())
            done, _ = await asyncio.wait([nxt, stopper], return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                nxt.cancel()
                break
            message = nxt.result()
            parsed = parse_topic(str(message.topic))
            if parsed is None:
                continue
            await sem.acquire()
            task = asyncio.create_task(one(parsed[0], parsed[1], bytes(message.payload)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        stopper.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


# --------------------------------------------------------------------------------------- JetStream


async def ensure_stream(js: Any, replicas: int) -> None:
    """Create the samples stream if missing: work-queue retention (a message is gone once a worker acked
    it), ``replicas`` copies on different nodes, file storage."""
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(STREAM)
        return
    except NotFoundError:
        pass
    await js.add_stream(
        StreamConfig(
            name=STREAM,
            subjects=STREAM_SUBJECTS,
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=7 * 24 * 3600,
        )
    )
    log.info("created JetStream stream %s (R%d)", STREAM, replicas)


async def run_jetstream(
    handler: IngestHandler,
    servers: list[str],
    *,
    password: str | None = None,
    replicas: int = 3,
    batch: int = 8,
    ack_wait_s: float = 30.0,
    stop: asyncio.Event | None = None,
    ready: Callable[[], None] | None = None,
) -> None:
    """Pull from the durable consumer ``ingest`` and ack each message after its commit, until ``stop``."""
    from urllib.parse import unquote, urlsplit

    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig

    stop = stop or asyncio.Event()
    user = urlsplit(servers[0]).username
    credentials = {"user": unquote(user), "password": password or ""} if user and password else {}
    if credentials:  # the password comes from the environment, not the command line
        servers = [s.split("://", 1)[0] + "://" + s.split("://", 1)[1].rsplit("@", 1)[-1] for s in servers]

    async def on_error(exc: Exception) -> None:
        log.warning("ingest worker: NATS: %s", exc)

    while True:  # the first connection too: a worker may start before its cluster
        try:
            nc = await nats.connect(
                servers=servers,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                error_cb=on_error,
                name=f"tbms-worker-{uuid.uuid4().hex[:8]}",
                **credentials,
            )
            break
        except Exception as exc:  # NoServersError, DNS, refused: say so once a try, keep trying
            log.warning("ingest worker: cannot reach NATS at %s (%s); retrying", ", ".join(servers), exc)
            await _sleep_or_stop(stop, 2.0)
            if stop.is_set():
                return
    # the live feed goes where the API processes of a NATS deployment listen (tbms.live.<tenant>), on this
    # connection, rather than through PostgreSQL NOTIFY
    handler.hub.relay = nats_publisher(nc)
    try:
        js = nc.jetstream(timeout=5)
        while True:  # the cluster may still be electing its meta leader
            try:
                await ensure_stream(js, replicas)
                sub = await js.pull_subscribe(
                    "tbms.*.*",
                    durable=CONSUMER,
                    stream=STREAM,
                    config=ConsumerConfig(
                        ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait_s, max_ack_pending=10_000
                    ),
                )
                break
            except Exception as exc:
                if stop.is_set():
                    return
                log.warning("ingest worker: JetStream not ready (%s); retrying", exc)
                await _sleep_or_stop(stop, 1.0)
        log.info("ingest worker consuming JetStream stream %s via %s", STREAM, ", ".join(servers))
        if ready:
            ready()
        while not stop.is_set():
            try:
                msgs = await sub.fetch(batch, timeout=1)
            except NatsTimeout:
                continue
            except Exception as exc:  # node lost, leader election: the consumer survives, try again
                log.warning("ingest worker: fetch failed (%s); retrying", exc)
                await _sleep_or_stop(stop, 0.5)
                continue
            await asyncio.gather(*(_one_js(handler, nc, m) for m in msgs))
    finally:
        with contextlib.suppress(Exception):
            await nc.drain()


async def _one_js(handler: IngestHandler, nc: Any, msg: Any) -> None:
    parsed = parse_topic(msg.subject)
    if parsed is None:
        await msg.term()  # can never be processed
        return
    key, kind = parsed
    try:
        reply = await handler.handle(key, kind, msg.data)
        if reply is not None:
            await nc.publish(f"tbms.{key}.ack", orjson.dumps(reply))
        await msg.ack()  # after the commit: a worker killed before this point leaves it for another
    except Exception:
        log.exception("ingest worker: message from %s failed; left for redelivery", key)
        with contextlib.suppress(Exception):
            await msg.nak(delay=1)
