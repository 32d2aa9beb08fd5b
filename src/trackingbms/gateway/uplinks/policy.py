"""Uplink policy: batches from the durable queue to the server, heartbeat, failover, remote config.

The policy is the same whatever carries the batches: a transport (:mod:`.http`, :mod:`.mqtt`) moves them
and reports an outcome (:mod:`.base`); everything below is decided here, once.

Sending: each batch holds a *live lane* (the newest pending samples) and a *backlog lane* (the oldest
pending samples), so a backlog drains at full speed (``max_in_flight`` concurrent requests of
``batch_max_samples``) while live samples still go out with the next request. A batch leaves when it is
full or its oldest sample is ``batch_max_age_s`` old (the secondary uplink uses larger, older batches).

Replies: accepted and duplicate samples are acknowledged (they leave the queue). Rejected ones are *parked*
when an operator can fix the cause (the server's error starts with ``battery_id:``, e.g. the battery is not
assigned to this device yet): every ``parked_retry_s`` the oldest parked sample of each battery is sent again,
and once the server takes one, the rest of that battery's parked samples follow at once. Any other rejection
(``ts: …``, ``cells_mv: …``) means the sample can never be valid: it goes to the dead-letter table with the
server's reason. A batch refused whole (413, 422) is halved; rate limiting (429) waits ``Retry-After``;
network errors, 5xx and a missing acknowledgement back off exponentially with jitter. A sample leaves the
queue only on the server's reply, which comes after its commit (over MQTT: the application
acknowledgement on ``tbms/<device>/ack``, never the broker's PUBACK). When the active uplink has failed for
``failover.after_s``, the next one takes over; while failed over, the primary is probed with a heartbeat every
``failover.probe_interval_s`` and takes back over on success.

Priorities (what the heartbeat and the local API report as ``uplinks``): the configured uplinks in order, then
the *phone* as the last resort. The phone is not a transport of ours: when every uplink fails, samples wait in
the queue until an app served by this gateway carries them to the server (the phone relay, ``via = "phone"``).
``via`` says which path the last acknowledged samples took.

Only the wire contract (docs/api.md) couples this to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from trackingbms import __version__
from trackingbms.gateway.config import SLOW_COMMANDS, GatewayConfig, UplinkConfig
from trackingbms.gateway.queue import DurableQueue, QueuedSample
from trackingbms.gateway.state import GatewayState
from trackingbms.gateway.uplinks.base import Failed, Reply, TooLarge, Transport, TransportError, Wait
from trackingbms.model import format_ts

log = logging.getLogger("trackingbms.gateway.uplink")

LIVE_LANE = 100  # newest samples in every batch
HEARTBEAT_MIN_SPACING_S = 1.0
#: rejections an operator can fix (assign the battery): the server's errors start with the field path
FIXABLE_FIELDS = ("battery_id:",)


def fixable(reason: str) -> bool:
    return reason.startswith(FIXABLE_FIELDS)


async def wait_event(event: asyncio.Event, timeout_s: float | None) -> None:
    """Wait for ``event`` at most ``timeout_s``. (Not ``asyncio.wait_for``: on Python 3.11 it can swallow a
    cancellation that arrives as the event fires, and the task then never stops.)"""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()


class RemoteConfig:
    """Configuration handed down by the server (`config` in ingest / heartbeat replies), persisted."""

    KEY = "remote_config"

    def __init__(self, queue: DurableQueue, state: GatewayState, config: GatewayConfig):
        self.queue = queue
        self.state = state
        self.heartbeat_interval_s = config.heartbeat_interval_s
        self.version = 0
        self.changed = asyncio.Event()
        stored = queue.get_kv(self.KEY)
        if stored:
            with contextlib.suppress(ValueError, TypeError):
                self._apply(orjson.loads(stored))

    async def apply(self, cfg: Any) -> None:
        if not isinstance(cfg, dict):
            return
        try:
            version = int(cfg.get("config_version", 0))
        except (TypeError, ValueError):
            log.warning("ignoring remote config without a valid config_version: %r", cfg)
            return
        if version <= self.version:
            return
        self._apply(cfg)
        await self.queue.aset_kv(self.KEY, orjson.dumps(cfg).decode())
        log.info("applied remote config version %d", self.version)

    def _apply(self, cfg: dict[str, Any]) -> None:
        hb = cfg.get("heartbeat_interval_s")
        if isinstance(hb, int | float) and hb > 0:
            self.heartbeat_interval_s = float(hb)
        for bid, bcfg in (cfg.get("batteries") or {}).items():
            st = self.state.batteries.get(bid)
            if st is None or not isinstance(bcfg, dict):
                log.warning("remote config names battery %r, which this gateway does not poll", bid)
                continue
            poll = bcfg.get("poll_interval_s")
            if isinstance(poll, int | float) and poll > 0:
                st.poll_interval_s = float(poll)
            cadences = bcfg.get("cadences_s")
            if isinstance(cadences, dict):
                for name, every_s in cadences.items():
                    if name in SLOW_COMMANDS and isinstance(every_s, int | float) and every_s >= 0:
                        st.cadences_s[name] = float(every_s)
                    else:
                        log.warning("remote config: ignoring cadence %r=%r for %s", name, every_s, bid)
        self.version = int(cfg.get("config_version", 0))
        self.changed.set()


def make_transport(cfg: UplinkConfig, token: str) -> Transport:
    if cfg.is_mqtt:
        from trackingbms.gateway.uplinks.mqtt import MqttTransport

        return MqttTransport(cfg, token)
    from trackingbms.gateway.uplinks.http import HttpTransport

    return HttpTransport(cfg, token)


class Uplink:
    """One configured uplink: its transport and its health (backoff, failing since)."""

    def __init__(self, cfg: UplinkConfig, token: str):
        self.cfg = cfg
        self.name = cfg.name
        self.batch_limit = cfg.batch_max_samples
        self.failing_since: float | None = None
        self.failures = 0
        self.next_attempt_at = 0.0
        self.last_error: str | None = None
        self._last_logged = 0.0
        self.transport = make_transport(cfg, token)

    def ok(self) -> None:
        if self.failing_since is not None:
            log.info("uplink %s (%s) reachable again", self.name, self.cfg.url)
        self.failing_since = None
        self.failures = 0
        self.next_attempt_at = 0.0
        self.last_error = None

    def failed(self, error: str, backoff_initial_s: float, backoff_max_s: float, queued: int) -> None:
        now = time.monotonic()
        first = self.failing_since is None
        if first:
            self.failing_since = now
        self.failures += 1
        changed = error != self.last_error
        self.last_error = error
        delay = min(backoff_max_s, backoff_initial_s * 2 ** min(self.failures - 1, 16))
        self.next_attempt_at = now + delay * random.uniform(0.5, 1.0)
        if first or changed or now - self._last_logged > 60:
            self._last_logged = now
            log.warning(
                "uplink %s (%s) unreachable: %s; %d samples kept in the queue, retrying with backoff",
                self.name,
                self.cfg.url,
                error,
                queued,
            )

    def failed_for_s(self) -> float:
        return 0.0 if self.failing_since is None else time.monotonic() - self.failing_since


class UplinkManager:
    def __init__(self, config: GatewayConfig, queue: DurableQueue, state: GatewayState, remote: RemoteConfig):
        self.config = config
        self.queue = queue
        self.state = state
        self.remote = remote
        self.uplinks = [Uplink(u, config.device_token) for u in config.uplinks]
        for up in self.uplinks:
            if hasattr(up.transport, "on_config"):  # MQTT: config answers a heartbeat on the ack topic
                up.transport.on_config = remote.apply
        self.active = 0
        self.state.uplink = self.uplinks[0].name
        self.wake = asyncio.Event()
        self.inflight: set[int] = set()
        self.sent_total = 0
        self.acked_total = 0
        #: stopping: send what is queued now, whatever its age
        self.flushing = False
        #: batteries with parked samples (a sample of one of them taken by the server unparks the rest)
        self.parked_batteries = queue.parked_batteries()

    @property
    def current(self) -> Uplink:
        return self.uplinks[self.active]

    def notify(self) -> None:
        """A new sample is queued."""
        self.wake.set()

    async def aclose(self) -> None:
        for up in self.uplinks:
            await up.transport.aclose()

    async def set_url(self, name: str, url: str) -> UplinkConfig:
        """Point uplink ``name`` at another server (or broker) now: a new transport replaces the old one
        (a batch in flight on the old one fails and stays queued). Raises KeyError for an unknown name,
        pydantic's ValidationError for a bad URL."""
        for i, old in enumerate(self.uplinks):
            if old.name != name:
                continue
            cfg = UplinkConfig.model_validate({**old.cfg.model_dump(), "url": url})
            new = Uplink(cfg, self.config.device_token)
            if hasattr(new.transport, "on_config"):
                new.transport.on_config = self.remote.apply
            self.uplinks[i] = new
            await old.transport.aclose()
            log.info("uplink %s now points at %s (was %s)", name, cfg.url, old.cfg.url)
            self.wake.set()
            self.state.link_changed.set()  # a heartbeat at once tells the new server about us
            return cfg
        raise KeyError(name)

    # -- failover -------------------------------------------------------------------------------------

    def _switch(self, index: int, why: str) -> None:
        if index == self.active:
            return
        old = self.current
        self.active = index
        self.state.uplink = self.current.name
        log.warning("uplink: switching from %s to %s (%s)", old.name, self.current.name, why)
        self.state.publish({"type": "uplink", "uplink": self.current.name})
        self.state.link_changed.set()  # tell the server at once which uplink is in use
        self.wake.set()

    def _after_failure(self, up: Uplink) -> None:
        failover = self.config.failover
        if (
            up is self.current
            and up.failed_for_s() >= failover.after_s
            and self.active + 1 < len(self.uplinks)
        ):
            self._switch(self.active + 1, f"{up.name} failing for {up.failed_for_s():.0f} s: {up.last_error}")

    async def run_failback_probe(self) -> None:
        """While failed over, try the higher-priority uplinks with a heartbeat; fail back on success."""
        while True:
            await asyncio.sleep(self.config.failover.probe_interval_s)
            for index in range(self.active):
                up = self.uplinks[index]
                try:
                    await self._heartbeat_on(up)
                except TransportError as exc:
                    up.failed(str(exc), 1.0, 1.0, await self.queue.apending_count())
                    continue
                up.ok()
                self._switch(index, f"{up.name} answers again")
                break

    # -- samples --------------------------------------------------------------------------------------

    async def run_sender(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                self.wake.clear()
                up = self.current
                now = time.monotonic()
                timeout: float | None = None
                if now < up.next_attempt_at:
                    timeout = up.next_attempt_at - now
                elif len(tasks) < up.cfg.max_in_flight:
                    limit = up.batch_limit
                    live = min(LIVE_LANE, max(1, limit // 10))
                    batch = await self.queue.afetch(newest=live, oldest=limit - live, exclude=self.inflight)
                    if batch:
                        oldest = min(q.ts for q in batch)
                        age_s = (datetime.now(UTC) - datetime.fromisoformat(oldest)).total_seconds()
                        # age < 0: the clock was stepped back; send rather than wait for the clock to catch up
                        ready = age_s >= up.cfg.batch_max_age_s or age_s < 0 or self.flushing
                        if len(batch) >= limit or ready:
                            self.inflight.update(q.id for q in batch)
                            task = asyncio.create_task(self._send(up, batch))
                            tasks.add(task)
                            task.add_done_callback(tasks.discard)
                            task.add_done_callback(lambda _t: self.wake.set())
                            continue
                        timeout = up.cfg.batch_max_age_s - age_s
                await wait_event(self.wake, timeout)
        finally:
            for task in tasks:
                task.cancel()

    async def _note_parked(
        self,
        parked: list[QueuedSample],
        rejected: dict[int, str],
        batch: list[QueuedSample],
        acked: list[QueuedSample],
    ) -> None:
        for q in parked:
            if q.battery_id not in self.parked_batteries:  # log once per battery, not per sample
                self.parked_batteries.add(q.battery_id)
                reason = rejected[batch.index(q)]
                log.warning(
                    "server rejected %s: %s; its samples are kept (parked) and retried every %.0f s",
                    q.battery_id,
                    reason,
                    self.config.parked_retry_s,
                )
        # the server takes this battery's samples now (e.g. it was just assigned): its parked ones follow
        for bid in {q.battery_id for q in acked} & self.parked_batteries:
            self.parked_batteries.discard(bid)
            n = await self.queue.aunpark(bid)
            if n:
                log.info("server accepts %s now: %d parked samples queued again", bid, n)
                self.wake.set()

    async def run_parked_retry(self) -> None:
        """Every ``parked_retry_s``, send the oldest parked sample of each battery again (a probe)."""
        while True:
            await asyncio.sleep(self.config.parked_retry_s)
            if self.parked_batteries and await self.queue.aunpark(probe=True):
                self.wake.set()

    async def flush(self, timeout_s: float) -> int:
        """On a clean stop (pollers already stopped): give the queue ``timeout_s`` to reach the server while
        the uplink works. What is left stays on disk for the next start. Returns the samples left."""
        self.flushing = True
        self.wake.set()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            left = await self.queue.apending_count()
            if left == 0 or self.current.failing_since is not None:
                return left
            await asyncio.sleep(0.05)
        return await self.queue.apending_count()

    async def _send(self, up: Uplink, batch: list[QueuedSample]) -> None:
        try:
            await self._send_batch(up, batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep the sender alive whatever happens; samples stay queued
            log.exception("uplink %s: unexpected error sending a batch", up.name)
            up.failed(f"{exc.__class__.__name__}: {exc}", 1.0, 5.0, await self.queue.apending_count())
        finally:
            self.inflight.difference_update(q.id for q in batch)

    @staticmethod
    def _body(up: Uplink, batch: list[QueuedSample]) -> bytes:
        via = b'{"via":"' + up.name.encode() + b'",'
        return b'{"samples":[' + b",".join(via + q.body[1:] for q in batch) + b"]}"

    async def _send_batch(self, up: Uplink, batch: list[QueuedSample]) -> None:
        retry = self.config.retry
        body = self._body(up, batch)
        self.sent_total += len(batch)
        outcome = await up.transport.send_batch(body, self.remote.version)
        if isinstance(outcome, Reply):
            await self._settle(up, batch, outcome.body)
        elif isinstance(outcome, Wait):
            up.next_attempt_at = time.monotonic() + outcome.seconds
            log.info("uplink %s: rate limited, waiting %.1f s (Retry-After)", up.name, outcome.seconds)
        elif isinstance(outcome, TooLarge) and len(batch) > 1:
            up.batch_limit = max(1, len(batch) // 2)
            log.warning(
                "uplink %s: server answered %d (%s); batch size now %d",
                up.name,
                outcome.status,
                outcome.detail,
                up.batch_limit,
            )
        elif isinstance(outcome, TooLarge):  # one sample the server cannot parse as a batch: never succeeds
            await self.queue.asettle(dead=[(batch[0], f"{outcome.status}: {outcome.detail}")])
        else:
            assert isinstance(outcome, Failed)
            up.failed(
                outcome.error, retry.backoff_initial_s, retry.backoff_max_s, await self.queue.apending_count()
            )
            self._after_failure(up)

    async def _settle(self, up: Uplink, batch: list[QueuedSample], reply: dict[str, Any]) -> None:
        """The server committed the batch: acknowledge, park or dead-letter each sample by its verdict."""
        rejected: dict[int, str] = {}
        for item in reply.get("rejected") or []:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                rejected[int(item["index"])] = str(item.get("error", "rejected"))
        parked = [q for i, q in enumerate(batch) if i in rejected and fixable(rejected[i])]
        dead = [(q, rejected[i]) for i, q in enumerate(batch) if i in rejected and not fixable(rejected[i])]
        acked = [q for i, q in enumerate(batch) if i not in rejected]
        await self.queue.asettle(acked=[q.id for q in acked], parked=parked, dead=dead)
        self.acked_total += len(acked)
        if acked:
            self.state.note_delivery(up.name)
        await self._note_parked(parked, rejected, batch, acked)
        up.ok()
        if up.batch_limit < up.cfg.batch_max_samples:
            up.batch_limit = min(up.cfg.batch_max_samples, up.batch_limit * 2)
        if reply.get("config"):
            await self.remote.apply(reply["config"])

    # -- heartbeat ------------------------------------------------------------------------------------

    async def heartbeat_body(self) -> dict[str, Any]:
        # one trip to the queue's thread: depth, oldest ts, disk use, dead-letter and parked counts
        queue = await self.queue.astatus()
        return {
            "version": __version__,
            "ts": format_ts(datetime.now(UTC)),  # the server measures this clock's offset from it
            "uptime_s": self.state.uptime_s(),
            "queue_depth": queue["queue_depth"],
            "oldest_queued_ts": queue["oldest_queued_ts"],
            "disk_used_pct": queue["disk_used_pct"],
            "uplink": self.current.name,
            # which path the data took last, and every path in priority order with its health
            "via": self.state.last_via,
            "delivered_ts": self.state.last_delivery_ts,
            "uplinks": self.priorities(),
            "config_version": self.remote.version,
            # beyond the contract (the server keeps extra keys): the budget policy's effect, dead letters,
            # samples parked until the server takes them (battery not assigned yet)
            "disk_budget_mb": round(self.queue.budget_bytes / 1048576, 3),
            "thinned_total": self.queue.thinned_total,
            "dead_letter_count": queue["dead_letter_count"],
            "parked_count": queue["parked_count"],
            "batteries": [b.heartbeat_entry() for b in self.state.batteries.values()],
        }

    def priorities(self) -> list[dict[str, Any]]:
        """The paths in priority order: each uplink (``active``, ``failing`` or ``standby``), then the phone,
        the last resort, ``active`` when every uplink fails (samples wait for a phone to relay them)."""
        out: list[dict[str, Any]] = []
        for index, up in enumerate(self.uplinks):
            state = "active" if index == self.active else "standby"
            if up.failing_since is not None:
                state = "failing"
            out.append({"name": up.name, "priority": index + 1, "state": state, "last_error": up.last_error})
        all_failing = all(up.failing_since is not None for up in self.uplinks)
        out.append(
            {
                "name": "phone",
                "priority": len(self.uplinks) + 1,
                "state": "active" if all_failing else "standby",
                "last_error": None,
            }
        )
        return out

    async def _heartbeat_on(self, up: Uplink) -> None:
        reply = await up.transport.heartbeat(await self.heartbeat_body())
        if reply and reply.get("config"):
            await self.remote.apply(reply["config"])

    async def run_heartbeat(self) -> None:
        retry = self.config.retry
        while True:
            up = self.current
            wait_s = self.remote.heartbeat_interval_s
            try:
                await self._heartbeat_on(up)
                up.ok()
            except TransportError as exc:
                up.failed(
                    str(exc), retry.backoff_initial_s, retry.backoff_max_s, await self.queue.apending_count()
                )
                self._after_failure(up)
                # retry sooner than the interval: the server should learn of us as soon as it is back
                wait_s = min(wait_s, max(0.5, up.next_attempt_at - time.monotonic()))
            await wait_event(self.state.link_changed, wait_s)
            # a flapping link must not turn into a heartbeat per poll: changes are batched a moment
            await asyncio.sleep(min(HEARTBEAT_MIN_SPACING_S, self.remote.heartbeat_interval_s))
            self.state.link_changed.clear()
