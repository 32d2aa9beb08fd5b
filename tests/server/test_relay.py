"""The phone relay at the server (issue 12, item 4) over real HTTP on SQLite and PostgreSQL: a user relays a
gateway's unsent samples for its device, exactly once, and gets a receipt only that gateway believes."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from typing import Any

import orjson

from trackingbms.model import relay_key, relay_key_id, relay_signature_ok
from trackingbms.server import provisioning as p

from .conftest import ServerThread, World, client, sample


def key_of(device_token: str) -> str:
    """The relay key a gateway configured with ``device_token`` hands the phone (GET /local/v1/relay)."""
    return relay_key_id(relay_key(device_token))


async def _relay(w: World, token: str | None, device_key: str, samples: list, **kw: Any) -> tuple[int, Any]:
    async with client(w.base_url, token) as c:
        r = await c.post("/api/v1/relay", json={"device_key": device_key, "samples": samples}, **kw)
        return r.status_code, r.json()


async def _export(w: World, token: str, battery_id: str) -> list[dict[str, str]]:
    async with client(w.base_url, token) as c:
        r = await c.get(f"/api/v1/batteries/{battery_id}/export.csv", params={"from": "2020-01-01T00:00:00Z"})
        assert r.status_code == 200, r.text
        return list(csv.DictReader(io.StringIO(r.text)))


def _receipt_runs(device_token: str, receipt: dict) -> dict[str, list[list[int]]]:
    """What the receipt says the server has, after checking it the way the gateway does."""
    assert receipt["v"] == 1
    assert relay_signature_ok(relay_key(device_token), receipt["payload"], receipt["sig"])
    body = orjson.loads(receipt["payload"])
    assert body["key_id"] == key_of(device_token)
    return body["batteries"]


async def test_relay_is_stored_once_as_phone_and_the_receipt_is_for_that_gateway(world: World) -> None:
    a = world.a
    b1, b2 = a.batteries[0], a.batteries[1]
    batch = [sample(b1, seq, seconds_ago=200 - seq, via="wifi") for seq in range(100, 110)]
    batch += [sample(b2, seq, seconds_ago=50 - seq) for seq in (7, 8, 10)]
    status, body = await _relay(world, a.admin, key_of(a.device), batch)
    assert status == 200, body
    assert (body["device"], body["accepted"], body["duplicates"], body["rejected"]) == ("gw-1", 13, 0, [])
    assert _receipt_runs(a.device, body["receipt"]) == {b1: [[100, 109]], b2: [[7, 8], [10, 10]]}
    # another gateway (even of the same tenant) does not take this receipt for its own
    assert not relay_signature_ok(relay_key(a.device2), body["receipt"]["payload"], body["receipt"]["sig"])
    rows = await _export(world, a.admin, b1)
    assert [int(r["seq"]) for r in rows] == list(range(100, 110))
    assert {r["via"] for r in rows} == {"phone"}  # whatever the page said

    # the phone relays again (its reply was lost): duplicates, and a receipt for the same runs
    status, again = await _relay(world, a.admin, key_of(a.device), batch)
    assert (status, again["accepted"], again["duplicates"]) == (200, 0, 13)
    assert _receipt_runs(a.device, again["receipt"]) == {b1: [[100, 109]], b2: [[7, 8], [10, 10]]}

    # the gateway's own later upload of the same samples: duplicates, no new rows, via stays phone
    async with client(world.base_url, a.device) as c:
        r = await c.post("/api/v1/ingest", json={"samples": [{**s, "via": "wifi"} for s in batch]})
    assert r.status_code == 200 and r.json() == {"accepted": 0, "duplicates": 13, "rejected": []}
    rows = await _export(world, a.admin, b1)
    assert [(int(r["seq"]), r["via"]) for r in rows] == [(s, "phone") for s in range(100, 110)]
    assert len(await _export(world, a.admin, b2)) == 3


async def test_the_receipt_never_covers_a_rejected_sample(world: World) -> None:
    a = world.a
    b1 = a.batteries[0]
    batch = [
        sample(b1, 1, seconds_ago=30),
        sample(b1, 2, seconds_ago=29, cells_mv=[3300, -5]),  # invalid: rejected alone
        sample(b1, 3, seconds_ago=28),
        sample(a.batteries[2], 4, seconds_ago=27),  # a battery of gw-2, not of this gateway
        "not a sample",
    ]
    status, body = await _relay(world, a.admin, key_of(a.device), batch)
    assert status == 200 and body["accepted"] == 2
    assert sorted(r["index"] for r in body["rejected"]) == [1, 3, 4]
    # 2 is not on the server: the gateway must keep it (and learn why from its own upload)
    assert _receipt_runs(a.device, body["receipt"]) == {b1: [[1, 1], [3, 3]]}


async def test_who_may_relay(world: World) -> None:
    a, b = world.a, world.b
    batch = [sample(a.batteries[0], 1)]
    key = key_of(a.device)
    status, body = await _relay(world, a.viewer, key, batch)
    assert status == 403 and "may not change" in body["detail"]
    status, body = await _relay(world, b.admin, key, batch)  # another tenant's gateway
    assert status == 404 and "no device of your tenant" in body["detail"]
    status, body = await _relay(world, "tbu_wrong", key, batch)
    assert status == 401 and "unknown, expired or revoked" in body["detail"]
    status, body = await _relay(world, None, key, batch)
    assert status == 401 and "missing access token" in body["detail"]
    status, body = await _relay(world, a.device, key, batch)  # a device token is not a user's login
    assert status == 401
    status, body = await _relay(world, a.admin, "0" * 32, batch)  # a key no gateway has
    assert status == 404
    # a revoked device token's key names nothing any more
    await p.revoke_device_tokens(world.database_url, "acme", "gw-2")
    status, body = await _relay(world, a.admin, key_of(a.device2), [sample(a.batteries[2], 1)])
    assert status == 404
    # nothing of all that was stored
    assert await _export(world, a.admin, a.batteries[0]) == []
    assert await _export(world, a.admin, a.batteries[2]) == []


async def test_bad_relay_bodies_get_a_clear_4xx(world: World) -> None:
    a = world.a
    key = key_of(a.device)
    async with client(world.base_url, a.admin) as c:
        r = await c.post("/api/v1/relay", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "invalid JSON" in r.json()["detail"][0]["msg"]
        r = await c.post("/api/v1/relay", json={"samples": []})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "device_key"]
        r = await c.post("/api/v1/relay", json={"device_key": key, "samples": {}})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "samples"]
        too_many = [sample(a.batteries[0], s, seconds_ago=5000 - s) for s in range(1001)]
        r = await c.post("/api/v1/relay", json={"device_key": key, "samples": too_many})
        assert r.status_code == 413 and "at most 1000" in r.json()["detail"]
    assert await _export(world, a.admin, a.batteries[0]) == []


async def test_cors_allows_exactly_the_relay_origins(
    world: World, start_server: Callable[..., ServerThread]
) -> None:
    """The gateway-served app (another origin) may call the API only when its origin is listed."""
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    # the default: no cross-origin calls at all
    async with client(world.base_url) as c:
        r = await c.options("/api/v1/relay", headers={"Origin": "http://192.168.1.20:8081", **preflight})
        assert "access-control-allow-origin" not in r.headers
    server = await asyncio.to_thread(
        start_server, relay_origins="http://192.168.1.*:8081,http://gw.boat.lan:8081"
    )
    async with client(server.base_url) as c:
        for origin in ("http://192.168.1.20:8081", "http://gw.boat.lan:8081"):
            r = await c.options("/api/v1/relay", headers={"Origin": origin, **preflight})
            assert r.status_code == 200 and r.headers["access-control-allow-origin"] == origin
            assert "authorization" in r.headers["access-control-allow-headers"].lower()
            assert "access-control-allow-credentials" not in r.headers
        for origin in (
            "http://192.168.2.20:8081",  # another subnet
            "http://192.168.1.20:8082",  # another port
            "https://192.168.1.20:8081",  # another scheme
            "http://evil.192.168.1.20:8081",  # '*' is one label, not a suffix
            "http://gw.boat.lan.evil.com:8081",
        ):
            r = await c.options("/api/v1/relay", headers={"Origin": origin, **preflight})
            assert r.status_code == 400 and "access-control-allow-origin" not in r.headers, origin
        # the actual request from an allowed origin carries the header the browser checks
        r = await c.post(
            "/api/v1/auth/login",
            json={"email": "admin@acme.test", "password": "admin-pass-1"},
            headers={"Origin": "http://192.168.1.20:8081"},
        )
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "http://192.168.1.20:8081"
