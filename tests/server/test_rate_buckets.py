"""The shared per-device token buckets (server/ratelimit.py) on a real PostgreSQL database, with a clock the
test moves: a bucket refills at its rate up to its burst, says how long to wait when empty, and is kept
per device and per limiter. The same figures as the in-process buckets."""

from __future__ import annotations

import pytest

from trackingbms.server.db import make_engine, migrate
from trackingbms.server.ratelimit import PgTokenBuckets, TokenBuckets

pytestmark = pytest.mark.postgres


async def test_buckets_refill_at_their_rate_up_to_their_burst(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        await migrate(engine)
        now = [1_000_000.0]  # epoch seconds
        shared = PgTokenBuckets(engine, "ingest", rate_per_s=2.0, burst=3, clock=lambda: now[0])
        other = PgTokenBuckets(engine, "heartbeat", rate_per_s=2.0, burst=3, clock=lambda: now[0])
        local = TokenBuckets(rate_per_s=2.0, burst=3)
        steps: list[tuple[float, int]] = [(0.0, 1)] * 4 + [(0.25, 1), (0.25, 1), (0.5, 1)] + [(100.0, 1)] * 4
        for advance_s, device in steps:
            now[0] += advance_s
            expect = local.take(device, now[0])
            assert await shared.acquire(device) == pytest.approx(expect), (advance_s, device)
        # another device, another limiter: full buckets of their own
        assert await shared.acquire(2) == 0.0
        assert [await other.acquire(1) for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.5)]
    finally:
        await engine.dispose()
