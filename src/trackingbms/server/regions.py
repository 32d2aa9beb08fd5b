"""Regions: a tenant has a home region; a device or user that reaches another region is told where to go.

Each region (Montreal, Paris, …) is a complete deployment: its own database, API processes, brokers and NATS
cluster. Only the **tenant directory** crosses regions (never telemetry): which region each tenant, user
(by a hash of the e-mail) and region URL belongs to. It lives in a JetStream stream ``TBMS_DIRECTORY`` in
each region's NATS; a region writes only its own subjects ``tbms.dir.<region>.…`` and *sources* the other
regions' subjects from their streams over a leaf-node connection between the clusters (each cluster is its
own JetStream domain, named after the region: ``$JS.<region>.API``). Why not one super-cluster joined by
gateways: JetStream's meta group would span the regions, and losing one of two regions would lose its
quorum, i.e. one region's outage would stop the other's JetStream. With domains and sourcing, a region
that is down only stops sending its updates; the others keep their copy, and the source catches up when
it is back. Every server process watches its region's stream into memory, so a lookup is a dict read and a
NATS outage leaves the last known directory in place.

Routing (docs/scaling.md, "Regions"):

* a device token issued for a tenant with a home region carries it (``tbd_<region>.<random>``): another
  region answers **421** with that region's URL without a database lookup;
* a login for an e-mail this region does not know, but the directory places in another region, gets 421
  with that region's URL (the password never crosses; the e-mail crosses only as a SHA-256 prefix);
* a tenant whose home region was changed (``trackingbms admin tenant acme --region paris``) is refused
  here for every device and user, in the same words.

The 421 body is ``{"detail", "region", "url"}`` plus a ``Location`` header; the gateway follows it
(``gateway/uplinks/http.py``). Hand-written on nats-py's JetStream API: nats-server 2.9 (Debian's) has no
KV sources with subject transforms, so the directory is a plain stream with one message per subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

import orjson

from trackingbms.server import security

log = logging.getLogger("trackingbms.server.regions")

REGION_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
STREAM = "TBMS_DIRECTORY"
SUBJECT_ROOT = "tbms.dir"


def check_region(name: str) -> str:
    """``name`` if it can name a region (it becomes a NATS subject token and a JetStream domain)."""
    if not REGION_NAME.match(name):
        raise ValueError(
            f"region {name!r}: use lower-case letters, digits and '-', starting with a letter (e.g. paris)"
        )
    return name


def device_token_prefix(region: str | None) -> str:
    """A device token's prefix: ``tbd_`` then, for a tenant with a home region, ``<region>.``."""
    return security.DEVICE_TOKEN_PREFIX + (f"{region}." if region else "")


def token_region(token: str) -> str | None:
    """The home region a device token names, if any (``tbd_paris.xxxx`` → ``paris``)."""
    if not token.startswith(security.DEVICE_TOKEN_PREFIX):
        return None
    head, dot, _ = token[len(security.DEVICE_TOKEN_PREFIX) :].partition(".")
    return head if dot and REGION_NAME.match(head) else None


def _key(text: str) -> str:
    # 128 bits of SHA-256: a subject token for any name, and e-mails do not cross regions in clear
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def email_key(email: str) -> str:
    return _key(email.strip().lower())


def tenant_key(name: str) -> str:
    return _key(name)


class Misdirected(Exception):
    """This request belongs to another region: answered 421 with that region's URL."""

    def __init__(self, what: str, region: str, url: str | None):
        self.region = region
        self.url = url
        where = f": use {url}" if url else " (its address is not known here yet)"
        super().__init__(f"{what} lives in region {region}{where}")

    def body(self) -> dict[str, Any]:
        return {"detail": str(self), "region": self.region, "url": self.url}


@dataclass(frozen=True)
class Entry:
    origin: str  # the region that wrote it
    kind: str  # "region", "tenant", "user"
    key: str
    value: dict[str, Any]


class Directory:
    """This region's view of the tenant directory (in memory, kept current by watching the stream), and
    the writer of this region's own entries."""

    def __init__(
        self, nats_url: str, region: str, peers: list[str], *, connect_options: dict[str, Any] | None = None
    ) -> None:
        self.nats_url = nats_url
        self.region = region
        self.peers = [p for p in peers if p != region]
        self.connect_options = connect_options or {}
        self.entries: dict[str, Entry] = {}  # subject → entry
        self._by_key: dict[tuple[str, str], dict[str, Entry]] = {}  # (kind, key) → origin → entry
        self.ready = asyncio.Event()  # connected and the stream exists
        self._nc: Any = None
        self._js: Any = None
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------------------- lookups
    def _find(self, kind: str, key: str) -> Entry | None:
        found = list(self._by_key.get((kind, key), {}).values())
        # the entry written by the region it names is authoritative (a moved tenant's old region may
        # still publish a pointer)
        for e in found:
            if e.value.get("region") == e.origin:
                return e
        return found[0] if found else None

    def region_url(self, region: str) -> str | None:
        e = self.entries.get(f"{SUBJECT_ROOT}.{region}.region")
        url = e.value.get("url") if e else None
        return url if isinstance(url, str) else None

    def user_home(self, email: str) -> tuple[str, str] | None:
        """(tenant name, region) of a user the directory knows."""
        e = self._find("user", email_key(email))
        return (str(e.value.get("tenant")), str(e.value.get("region"))) if e else None

    def tenant_home(self, name: str) -> str | None:
        e = self._find("tenant", tenant_key(name))
        return str(e.value.get("region")) if e else None

    def regions(self) -> dict[str, str | None]:
        return {e.origin: e.value.get("url") for e in self.entries.values() if e.kind == "region"}

    # ------------------------------------------------------------------------------------------ plumbing
    def _stream_config(self) -> Any:
        from nats.js.api import ExternalStream, StreamConfig, StreamSource

        return StreamConfig(
            name=STREAM,
            subjects=[f"{SUBJECT_ROOT}.{self.region}.>"],
            max_msgs_per_subject=1,  # a key-value store: the last value of each subject
            sources=[
                StreamSource(
                    name=STREAM,
                    filter_subject=f"{SUBJECT_ROOT}.{peer}.>",
                    external=ExternalStream(api=f"$JS.{peer}.API"),
                )
                for peer in self.peers
            ]
            or None,
        )

    async def _ensure_stream(self) -> None:
        """Create the stream, or bring its sources up to date when the peers changed. An existing stream
        with the right sources is left alone: nats-server 2.9 re-validates a sourced filter against the
        local stream of the same name when the configuration is sent again, and refuses it. Should an
        update be refused, the stream is re-created: it is a cache (this region's entries are published
        again by the next sync, the peers' are sourced again from their start)."""
        from nats.js.errors import NotFoundError

        cfg = self._stream_config()
        try:
            info = await self._js.stream_info(STREAM)
        except NotFoundError:
            await self._js.add_stream(cfg)
            return
        if _sources(info.config) == _sources(cfg) and list(info.config.subjects or []) == cfg.subjects:
            return
        try:
            await self._js.update_stream(cfg)
        except Exception as exc:
            log.warning("tenant directory: cannot update %s (%s); re-creating it", STREAM, exc)
            await self._js.delete_stream(STREAM)
            self.entries.clear()
            self._by_key.clear()
            await self._js.add_stream(cfg)

    def _on_msg(self, subject: str, data: bytes) -> None:
        parts = subject.split(".")
        if len(parts) < 4:
            return
        origin, kind, key = parts[2], parts[3], ".".join(parts[4:])
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("directory: ignoring a malformed entry on %s", subject)
            return
        if not isinstance(value, dict) or value.get("deleted"):
            self.entries.pop(subject, None)
            self._by_key.get((kind, key), {}).pop(origin, None)
        else:
            entry = Entry(origin, kind, key, value)
            self.entries[subject] = entry
            self._by_key.setdefault((kind, key), {})[origin] = entry

    async def _run(self) -> None:
        import nats
        from nats.js.api import DeliverPolicy

        async def on_error(exc: Exception) -> None:  # one line, not nats-py's default traceback
            log.warning("tenant directory: NATS: %s", exc or type(exc).__name__)

        while True:
            try:
                self._nc = await nats.connect(
                    servers=self.nats_url.split(","),
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1.0,
                    connect_timeout=3,
                    error_cb=on_error,
                    **self.connect_options,
                )
                self._js = self._nc.jetstream(timeout=5)
                await self._ensure_stream()
                sub = await self._js.subscribe(
                    f"{SUBJECT_ROOT}.>",
                    stream=STREAM,
                    ordered_consumer=True,
                    deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                    idle_heartbeat=2.0,
                )
                self.ready.set()
                log.info(
                    "tenant directory: watching %s (region %s, peers %s)", STREAM, self.region, self.peers
                )
                async for msg in sub.messages:
                    self._on_msg(msg.subject, msg.data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS down or unreachable: keep the last known directory, retry
                self.ready.clear()
                log.warning("tenant directory: %s; retrying in 2 s", exc or exc.__class__.__name__)
                if self._nc is not None:
                    with contextlib.suppress(Exception):
                        await self._nc.close()
                    self._nc = None
                await asyncio.sleep(2.0)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tenant-directory")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    async def publish(self, entries: dict[str, dict[str, Any]]) -> int:
        """Make this region's entries (``"<kind>.<key>"`` → value) exactly ``entries``: publish what
        changed and a tombstone for what is gone. Returns how many messages were published."""
        if not self.ready.is_set():
            return 0
        prefix = f"{SUBJECT_ROOT}.{self.region}."
        sent = 0
        for suffix, value in entries.items():
            subject = prefix + suffix
            current = self.entries.get(subject)
            if current is None or current.value != value:
                await self._js.publish(subject, orjson.dumps(value))
                sent += 1
        for subject in [s for s in self.entries if s.startswith(prefix)]:
            if subject[len(prefix) :] not in entries:
                await self._js.publish(subject, b'{"deleted": true}')
                sent += 1
        return sent


def _sources(cfg: Any) -> set[tuple[str, str | None, str | None]]:
    return {
        (src.name, src.filter_subject, src.external.api if src.external is not None else None)
        for src in cfg.sources or []
    }


class RegionRouter:
    """What an API process of region ``region`` needs to send requests to their home region."""

    def __init__(
        self,
        store: Any,
        region: str,
        public_url: str | None,
        directory: Directory | None,
        *,
        sync_s: float = 30.0,
    ) -> None:
        self.store = store
        self.region = region
        self.public_url = public_url
        self.directory = directory
        self.sync_s = sync_s
        #: tenant id → home region, for the tenants of this database homed in another region
        self.elsewhere: dict[int, tuple[str, str]] = {}
        self._task: asyncio.Task[None] | None = None

    def url_of(self, region: str) -> str | None:
        return self.directory.region_url(region) if self.directory is not None else None

    def check_tenant(self, tenant_id: int) -> None:
        moved = self.elsewhere.get(tenant_id)
        if moved is not None:
            name, region = moved
            raise Misdirected(f"tenant {name}", region, self.url_of(region))

    def check_device_token(self, token: str) -> None:
        region = token_region(token)
        if region is not None and region != self.region:
            raise Misdirected("this device's tenant", region, self.url_of(region))

    def check_email(self, email: str) -> None:
        """After a failed local login: is this e-mail a user of another region?"""
        if self.directory is None:
            return
        home = self.directory.user_home(email)
        if home is not None and home[1] != self.region:
            raise Misdirected(f"tenant {home[0]}", home[1], self.url_of(home[1]))

    async def sync(self) -> int:
        """Reload which tenants live elsewhere, then publish this region's directory entries."""
        homes = await self.store.tenant_homes()
        self.elsewhere = {tid: (name, r) for tid, name, r in homes if r and r != self.region}
        if self.directory is None:
            return 0
        entries: dict[str, dict[str, Any]] = {"region": {"region": self.region, "url": self.public_url}}
        for _tid, name, region in homes:
            entries[f"tenant.{tenant_key(name)}"] = {"tenant": name, "region": region or self.region}
        for email, name, region in await self.store.directory_users():
            entries[f"user.{email_key(email)}"] = {"tenant": name, "region": region or self.region}
        return await self.directory.publish(entries)

    async def _loop(self) -> None:
        while True:
            try:
                if self.directory is not None and not self.directory.ready.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.sync_s):
                            await self.directory.ready.wait()
                sent = await self.sync()
                if sent:
                    log.info("tenant directory: published %d entries of region %s", sent, self.region)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next pass retries; requests keep being served meanwhile
                log.warning("tenant directory sync failed: %s", exc)
            await asyncio.sleep(self.sync_s)

    async def start(self) -> None:
        with contextlib.suppress(Exception):  # the database may be slow to answer: the loop retries
            await self.sync()
        if self.directory is not None:
            await self.directory.start()
        self._task = asyncio.create_task(self._loop(), name="region-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.directory is not None:
            await self.directory.stop()
