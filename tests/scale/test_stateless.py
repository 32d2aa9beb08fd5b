"""Stateless API processes: two ``trackingbms server`` processes on one PostgreSQL database enforce one
per-device request budget (table ``rate_buckets``), and with a NATS URL the live feed crosses processes over
NATS subjects (``tbms.live.<tenant>``) rather than PostgreSQL NOTIFY."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
import websockets

from .conftest import _need_binary
from .harness import NATS_SERVER, NatsCluster

pytestmark = pytest.mark.postgres


def test_two_api_processes_share_one_device_budget(cluster) -> None:
    from trackingbms.server import provisioning as p

    token = asyncio.run(p.new_device_token(cluster.db_url, "acme", "gw-1"))["token"]
    budget = {"TRACKINGBMS_INGEST_RATE_PER_S": "0.01", "TRACKINGBMS_INGEST_BURST": "6"}
    _, api_a = cluster.api(**budget)
    _, api_b = cluster.api(**budget)
    headers = {"Authorization": f"Bearer {token}"}
    statuses = [
        httpx.post(url + "/api/v1/heartbeat", json={"uptime_s": 1}, headers=headers).status_code
        for _ in range(6)
        for url in (api_a, api_b)
    ]
    # one bucket of 6 for the device, whichever process answers (per-process buckets would allow all 12)
    assert statuses.count(200) == 6, statuses
    assert statuses.count(429) == 6
    r = httpx.post(api_a + "/api/v1/heartbeat", json={}, headers=headers)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    # the ingest budget is a separate bucket, shared the same way
    body = {"samples": []}
    ingest = [
        httpx.post(u + "/api/v1/ingest", json=body, headers=headers).status_code for u in (api_a, api_b) * 4
    ]
    assert ingest.count(200) == 6 and ingest.count(429) == 2, ingest


def _sample(bid: str, seq: int) -> dict:
    now = datetime.now(UTC)
    ts = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return {"battery_id": bid, "seq": seq, "ts": ts, "voltage_v": 52.1, "cells_mv": [3300] * 4}


def test_live_feed_crosses_api_processes_over_nats(cluster, tmp_path: Path) -> None:
    from trackingbms.server import provisioning as p

    _need_binary(NATS_SERVER, "nats-server")
    nats = NatsCluster(tmp_path / "nats", size=1)
    nats.start()
    try:
        token = asyncio.run(p.new_device_token(cluster.db_url, "acme", "gw-1"))["token"]
        _, api_a = cluster.api(TRACKINGBMS_NATS_URL=nats.nats_urls)
        _, api_b = cluster.api(TRACKINGBMS_NATS_URL=nats.nats_urls)
        login = httpx.post(
            api_b + "/api/v1/auth/login", json={"email": cluster.EMAIL, "password": cluster.PASSWORD}
        )
        user_token = login.json()["access_token"]

        async def scenario() -> dict:
            async with websockets.connect(
                api_b.replace("http", "ws") + f"/api/v1/live?token={user_token}"
            ) as ws:
                await asyncio.sleep(1.0)
                async with httpx.AsyncClient() as client:
                    r = await client.post(
                        api_a + "/api/v1/ingest",
                        json={"samples": [_sample("pack-1", 3)]},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    assert r.json()["accepted"] == 1
                async with asyncio.timeout(30):
                    while True:
                        msg = orjson.loads(await ws.recv())
                        if msg.get("type") == "sample" and msg["sample"]["seq"] == 3:
                            return msg

        msg = asyncio.run(scenario())
        assert msg["battery_id"] == "pack-1" and msg["sample"]["voltage_v"] == 52.1
    finally:
        nats.stop()
