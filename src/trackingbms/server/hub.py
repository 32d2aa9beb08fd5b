"""In-process pub/sub for the live WebSocket: ingest and heartbeat publish, tenant-scoped subscribers read."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any


class Hub:
    def __init__(self, queue_size: int = 1000) -> None:
        self._subs: dict[int, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._queue_size = queue_size

    def publish(self, tenant_id: int, message: dict[str, Any]) -> None:
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
