"""What the gateway knows right now: per-battery link state and latest sample, and who listens for changes.

Shared by the pollers (writers), the heartbeat and the local API (readers).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from trackingbms.model import LinkState, format_ts


def now_ts() -> str:
    return format_ts(datetime.now(UTC))


#: per-sample fields: they describe one sample only, so they are never carried over from an older one
_PER_SAMPLE = ("errors",)


def merge_latest(latest: dict[str, Any] | None, sample: dict[str, Any]) -> dict[str, Any]:
    """The newest value of each field, given the previous merged state and a new (maybe partial) wire sample.

    Most polls read only "pack" (cells, temps, faults come every few seconds), so replacing the state with
    each sample would make those fields blink. A field present in ``sample`` wins, even when empty (an
    explicit ``faults: []`` clears the faults); ``battery_id``, ``seq``, ``ts`` come from the newest sample.
    """
    merged = {k: v for k, v in (latest or {}).items() if k not in _PER_SAMPLE}
    merged.update(sample)
    return merged


#: upper bounds of the poll-duration histogram (seconds); a 9600-baud A5 command takes ~30 ms at best
POLL_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Timings:
    """A cumulative histogram of durations (exported as a Prometheus histogram by the local API)."""

    bounds_s: tuple[float, ...] = POLL_BUCKETS_S
    counts: list[int] = field(default_factory=lambda: [0] * len(POLL_BUCKETS_S))
    count: int = 0
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.sum_s += seconds
        for i, bound in enumerate(self.bounds_s):
            if seconds <= bound:
                self.counts[i] += 1


@dataclass
class BatteryStatus:
    battery_id: str
    port: str
    poll_interval_s: float
    cadences_s: dict[str, float]
    link_state: LinkState = "disconnected"
    since: str = field(default_factory=now_ts)
    frames_good: int = 0
    frames_bad: int = 0
    last_error: str | None = None
    latest: dict[str, Any] | None = None
    last_reply_ts: str | None = None
    poll_times: Timings = field(default_factory=Timings)

    def heartbeat_entry(self) -> dict[str, Any]:
        return {
            "battery_id": self.battery_id,
            "link_state": self.link_state,
            "since": self.since,
            "frames_good": self.frames_good,
            "frames_bad": self.frames_bad,
            "last_error": self.last_error,
        }


class GatewayState:
    def __init__(self) -> None:
        self.started_mono = time.monotonic()
        self.batteries: dict[str, BatteryStatus] = {}
        self.uplink: str | None = None
        #: the path the data took last (an uplink's name, or "phone" when a phone carried it: the relay)
        #: and when the server acknowledged it; reported by the heartbeat and the local API
        self.last_via: str | None = None
        self.last_delivery_ts: str | None = None
        self.link_changed = asyncio.Event()  # the heartbeat sends at once when set
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()

    def uptime_s(self) -> float:
        return round(time.monotonic() - self.started_mono, 1)

    def set_link_state(self, battery_id: str, state: LinkState, error: str | None = None) -> bool:
        """Returns True when the state changed (then the heartbeat fires and listeners hear of it)."""
        st = self.batteries[battery_id]
        if error is not None:
            st.last_error = error
        if st.link_state == state:
            return False
        st.link_state = state
        st.since = now_ts()
        self.link_changed.set()
        self.publish({"type": "link", "battery_id": battery_id, "status": st.heartbeat_entry()})
        return True

    def note_delivery(self, via: str) -> None:
        """The server acknowledged samples that went by ``via`` (the uplink's name, or "phone")."""
        changed = via != self.last_via
        self.last_via = via
        self.last_delivery_ts = now_ts()
        if changed:
            self.publish({"type": "via", "via": via, "ts": self.last_delivery_ts})

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=200)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(q)

    def publish(self, event: dict[str, Any]) -> None:
        for q in self._subscribers:
            if q.full():  # a slow listener loses its oldest events, never blocks the poller
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(event)
