"""Per-device token buckets for ingest and heartbeat requests: in this process, or shared through PostgreSQL.

:class:`TokenBuckets` keeps the buckets in memory (the embedded SQLite server is one process).
:class:`PgTokenBuckets` keeps them in the table ``rate_buckets`` so that N API processes behind one address
enforce one budget per device, not N: one upsert per request, whose ``RETURNING`` says whether a token was
taken (the ``granted`` column holds that statement's decision; the row lock of the upsert makes concurrent
requests from several processes take tokens one after the other). Hand-written like the login throttle: the
limiter libraries around (limits, slowapi) count fixed windows in Redis or memory, and we have PostgreSQL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from trackingbms.server.store.base import pg_fetch

log = logging.getLogger("trackingbms.server.ratelimit")


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

    async def acquire(self, key: int) -> float:
        """:meth:`take`, with the signature of the shared limiter."""
        return self.take(key)


_REFILLED = "LEAST(:burst, rate_buckets.tokens + GREATEST(0, :now - rate_buckets.updated) * :rate)"
_TAKE = text(
    "INSERT INTO rate_buckets (key, tokens, updated, granted) VALUES (:key, :burst - 1, :now, true) "
    "ON CONFLICT (key) DO UPDATE SET "
    f"tokens = CASE WHEN {_REFILLED} >= 1 THEN {_REFILLED} - 1 ELSE {_REFILLED} END, "
    f"updated = :now, granted = {_REFILLED} >= 1 "
    "RETURNING tokens, granted"
)
#: _TAKE with asyncpg's parameters ($1 key, $2 burst, $3 rate, $4 now), run on its own (one round trip)
_PG_TAKE = (
    _TAKE.text.replace(":key", "$1::text")
    .replace(":burst", "$2::float8")
    .replace(":rate", "$3::float8")
    .replace(":now", "$4::float8")
)


class PgTokenBuckets:
    """The same buckets in PostgreSQL (wall-clock seconds: the processes share no monotonic clock).
    ``name`` separates limiters ("ingest", "heartbeat") in the one table."""

    def __init__(
        self,
        engine: AsyncEngine,
        name: str,
        rate_per_s: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.name = name
        self.rate = rate_per_s
        self.burst = burst
        self.unlimited = rate_per_s <= 0 or burst <= 0
        self.clock = clock

    async def acquire(self, key: int) -> float:
        if self.unlimited:
            return 0.0
        params = {
            "key": f"{self.name}:{key}",
            "burst": float(self.burst),
            "rate": self.rate,
            "now": self.clock(),
        }
        try:
            ((tokens, granted),) = await pg_fetch(
                self.engine, _PG_TAKE, params["key"], params["burst"], params["rate"], params["now"]
            )
        except Exception as exc:  # the limiter protects the server; it must not take ingest down with it
            log.warning("shared rate limiter unavailable (%s); letting the request through", exc)
            return 0.0
        return 0.0 if granted else (1.0 - float(tokens)) / self.rate
