"""The PostgreSQL live relay (server/live.py) on a real database: what a process publishes reaches a listener
on the channel, every message once and in publish order, also when many are published at once (they are
sent together, one statement for what queued); when the database does not keep up, the oldest waiting
messages are the ones dropped."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
import orjson
import pytest

from trackingbms.server import live
from trackingbms.server.db import make_engine
from trackingbms.server.hub import Hub

pytestmark = pytest.mark.postgres


async def _received(
    postgres_url: str, publish: Any, expect: int, timeout_s: float = 10.0
) -> tuple[list[dict], live.PgRelay]:
    """The relayed messages a listener on the channel gets while ``publish(hub)`` runs (until ``expect``),
    and the relay that sent them."""
    got: list[dict] = []
    done = asyncio.Event()

    def on_notify(_c: Any, _pid: int, _channel: str, payload: str) -> None:
        got.append(orjson.loads(payload))
        if len(got) >= expect:
            done.set()

    conn = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
    engine = make_engine(postgres_url)
    relay = live.PgRelay(engine, Hub())
    try:
        await conn.add_listener(live.CHANNEL, on_notify)
        relay.hub.relay = relay.relay  # sending only: no listener task of its own needed here
        publish(relay.hub)
        await asyncio.wait_for(done.wait(), timeout_s)
        await asyncio.sleep(0.2)  # nothing more comes
        return got, relay
    finally:
        await conn.close()
        await relay.stop()
        await engine.dispose()


async def test_a_burst_is_relayed_whole_and_in_order(postgres_url: str) -> None:
    def publish(hub: Hub) -> None:  # one ingest batch's messages, published without a pause
        for k in range(40):
            hub.publish(7 if k % 2 else 8, {"type": "sample", "k": k})

    got, _ = await _received(postgres_url, publish, expect=40)
    assert [(m["t"], m["m"]["k"]) for m in got] == [(7 if k % 2 else 8, k) for k in range(40)]
    assert {m["o"] for m in got} == {live.ORIGIN}  # the listeners of this process skip them


async def test_later_messages_go_in_a_later_statement(postgres_url: str) -> None:
    def publish(hub: Hub) -> None:
        hub.publish(1, {"k": 0})
        # published once the sender task has started on the first (it waits for a connection): queued,
        # then sent by the same task in a statement of their own
        asyncio.get_running_loop().call_soon(lambda: [hub.publish(1, {"k": k}) for k in (1, 2)])

    got, _ = await _received(postgres_url, publish, expect=3)
    assert [m["m"]["k"] for m in got] == [0, 1, 2]


async def test_the_oldest_waiting_messages_are_dropped_first(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(live, "MAX_PENDING", 5)

    def publish(hub: Hub) -> None:  # 8 at once: the sender has not run yet, only 5 may wait
        for k in range(8):
            hub.publish(1, {"k": k})

    with caplog.at_level(logging.WARNING, logger="trackingbms.server.live"):
        got, relay = await _received(postgres_url, publish, expect=5)
    assert [m["m"]["k"] for m in got] == [3, 4, 5, 6, 7]
    assert relay.dropped == 3
    assert "3 messages dropped" in caplog.text
