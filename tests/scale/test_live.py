"""Stateless API processes: a sample stored by one process (an API process over HTTP, or an ingest worker)
reaches the live WebSocket open on another API process on the same PostgreSQL database (LISTEN/NOTIFY)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import orjson
import pytest
import websockets

pytestmark = pytest.mark.postgres


def _sample(bid: str, seq: int) -> dict:
    now = datetime.now(UTC)
    ts = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return {"battery_id": bid, "seq": seq, "ts": ts, "voltage_v": 52.1, "cells_mv": [3300] * 4}


async def _next_sample(ws: websockets.WebSocketClientProtocol, seq: int) -> dict:
    while True:
        msg = orjson.loads(await ws.recv())
        if msg.get("type") == "sample" and msg["sample"]["seq"] == seq:
            return msg


def test_live_feed_crosses_api_processes_and_workers(cluster) -> None:
    from trackingbms.server import provisioning as p
    from trackingbms.server.db import make_engine
    from trackingbms.server.store import Store
    from trackingbms.server.worker import IngestHandler

    token = asyncio.run(p.new_device_token(cluster.db_url, "acme", "gw-1"))["token"]
    _, api_a = cluster.api()
    _, api_b = cluster.api()
    creds = {"email": cluster.EMAIL, "password": cluster.PASSWORD}
    login = httpx.post(api_b + "/api/v1/auth/login", json=creds)
    user_token = login.json()["access_token"]

    async def scenario() -> tuple[dict, dict]:
        ws_url = api_b.replace("http", "ws") + f"/api/v1/live?token={user_token}"
        async with websockets.connect(ws_url) as ws:
            await asyncio.sleep(1.0)  # the subscription is registered once the handshake is done
            # stored by API process A over HTTP ...
            async with httpx.AsyncClient() as client:
                r = await client.post(
                    api_a + "/api/v1/ingest",
                    json={"samples": [_sample("pack-1", 1)]},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert r.json()["accepted"] == 1
            via_api = await asyncio.wait_for(_next_sample(ws, 1), 30)
            # ... and by an ingest worker (the handler a worker runs per MQTT / JetStream message)
            engine = make_engine(cluster.db_url)
            try:
                handler = IngestHandler(Store(engine))
                body = orjson.dumps({"batch_id": "b1", "samples": [_sample("pack-2", 7)]})
                reply = await handler.handle("t1-gw-1", "samples", body)
                assert reply is not None and reply["accepted"] == 1 and reply["batch_id"] == "b1"
            finally:
                await engine.dispose()
            via_worker = await asyncio.wait_for(_next_sample(ws, 7), 30)
            return via_api, via_worker

    via_api, via_worker = asyncio.run(scenario())
    assert via_api["battery_id"] == "pack-1" and via_api["sample"]["voltage_v"] == 52.1
    assert via_worker["battery_id"] == "pack-2"
    assert via_worker["connectivity"] == "online"
