"""In-process pub/sub for the live WebSocket: ingest and heartbeat publish, tenant-scoped subscribers read.

With several processes on one PostgreSQL database, :mod:`trackingbms.server.live` sets ``relay`` so that what
one process publishes reaches the subscribers of the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any


class Hub:
    def __init__(self, queue_size: int = 1000) -> None:
        self._subs: dict[int, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._queue_size = queue_size
        #: also hand each message to the other processes (set while a relay runs)
        self.relay: Callable[[int, dict[str, Any]], None] | None = None

    def publish(self, tenant_id: int, message: dict[str, Any], *, relay: bool = True) -> None:
        if relay and self.relay is not None:
            self.relay(tenant_id, message)
        for q in self._subs.get(tenant_id, ()):
            if q.full():
                # a slow viewer loses its oldest updates, never blocks ingest
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(message)

    def subscriber_count(self) -> int:
        """Open live connections (the metrics' live sockets)."""
        return sum(len(subs) for subs in self._subs.values())

    @contextlib.contextmanager
    def subscribe(self, tenant_id: int) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(self._queue_size)
        self._subs.setdefault(tenant_id, set()).add(q)
        try:
            yield q
        finally:
            subs = self._subs.get(tenant_id)
            if subs is not None:
                subs.discard(q)
                if not subs:
                    del self._subs[tenant_id]


class LiveSessions:
    """The live sockets open per access token (by its hash), so that a logout closes them at once.
    (A token revoked in another process is noticed by the socket's own periodic re-check.)"""

    def __init__(self) -> None:
        self._ended: dict[str, set[asyncio.Event]] = {}

    @contextlib.contextmanager
    def open(self, token_key: str) -> Iterator[asyncio.Event]:
        """An event set when the token is revoked here, for as long as the socket is open."""
        ev = asyncio.Event()
        self._ended.setdefault(token_key, set()).add(ev)
        try:
            yield ev
        finally:
            evs = self._ended.get(token_key)
            if evs is not None:
                evs.discard(ev)
                if not evs:
                    del self._ended[token_key]

    def end(self, token_key: str) -> None:
        for ev in self._ended.get(token_key, ()):
            ev.set()
