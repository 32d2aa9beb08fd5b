"""Per-device token bucket for ingest requests (in process)."""

from __future__ import annotations

import time


class TokenBuckets:
    """``rate_per_s`` tokens a second up to ``burst``; a rate or a burst of 0 means no limit (a bucket
    that never refills or never holds a token would refuse a device for good, which no one means)."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.unlimited = rate_per_s <= 0 or burst <= 0
        self._buckets: dict[int, tuple[float, float]] = {}

    def take(self, key: int, now: float | None = None) -> float:
        """Take one token; 0.0 if allowed, else the seconds to wait before retrying (finite)."""
        if self.unlimited:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate
