"""Device → server: ingest and heartbeat over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import gzip

import orjson

from trackingbms.server import provisioning as p

from .conftest import World, client, sample


async def _post(w: World, token: str, samples: list, **kw) -> tuple[int, dict]:
    async with client(w.base_url, token) as c:
        r = await c.post("/api/v1/ingest", json={"samples": samples}, **kw)
        return r.status_code, r.json()


async def _export(w: World, token: str, battery_id: str) -> list[list[str]]:
    async with client(w.base_url, token) as c:
        r = await c.get(f"/api/v1/batteries/{battery_id}/export.csv", params={"from": "2020-01-01T00:00:00Z"})
        assert r.status_code == 200, r.text
        return [line.split(",") for line in r.text.splitlines()]


async def test_batch_is_stored_once_and_duplicates_are_counted(world: World) -> None:
    a = world.a
    batch = [sample(a.batteries[0], seq, seconds_ago=10 - seq) for seq in range(5)]
    assert await _post(world, a.device, batch) == (200, {"accepted": 5, "duplicates": 0, "rejected": []})
    # the gateway re-sends after a lost reply, plus two new ones (and one twice inside the batch)
    s5, s6 = sample(a.batteries[0], 5), sample(a.batteries[0], 6)
    again = [*batch, s5, s6, s6]
    status, body = await _post(world, a.device, again)
    assert status == 200
    assert body["accepted"] == 2 and body["duplicates"] == 6 and body["rejected"] == []
    rows = await _export(world, a.admin, a.batteries[0])
    assert [r[1] for r in rows[1:]] == ["0", "1", "2", "3", "4", "5", "6"]


async def test_an_export_without_to_includes_samples_a_fast_gateway_clock_stamped_ahead(world: World) -> None:
    """Ingest accepts samples up to the clock skew ahead of the server; "everything until now" must not
    leave out what it acknowledged (a gateway clock a minute fast)."""
    a = world.a
    ahead = sample(a.batteries[0], 1, seconds_ago=-60)
    assert (await _post(world, a.device, [ahead]))[1]["accepted"] == 1
    rows = await _export(world, a.admin, a.batteries[0])
    assert [r[1] for r in rows[1:]] == ["1"]


async def test_a_ts_already_taken_by_another_sample_is_refused(world: World) -> None:
    a = world.a
    first = sample(a.batteries[0], 10)
    assert (await _post(world, a.device, [first]))[1]["accepted"] == 1
    clash = {**first, "seq": 11, "voltage_v": 40.0}  # same battery, same ts, another seq
    fresh = sample(a.batteries[0], 12)
    status, body = await _post(world, a.device, [fresh, clash, first])
    assert status == 200
    assert body["accepted"] == 1 and body["duplicates"] == 1
    assert body["rejected"] == [
        {"index": 1, "error": "ts: another sample of this battery (seq 10) has the same ts"}
    ]
    rows = await _export(world, a.admin, a.batteries[0])
    assert [(r[1], r[4]) for r in rows[1:]] == [("10", "53.2"), ("12", "53.2")]
    # the same ts for another battery is fine
    assert (await _post(world, a.device, [{**first, "battery_id": a.batteries[1]}]))[1]["accepted"] == 1


async def test_bad_samples_are_rejected_alone_and_named(world: World) -> None:
    a = world.a
    good = sample(a.batteries[0], 1)
    batch = [
        good,
        sample(a.batteries[0], "two"),
        sample(a.batteries[0], 3, cells_mv=[3300, 3301, -5]),
        {k: v for k, v in sample(a.batteries[0], 4).items() if k != "ts"},
        sample(a.batteries[0], 5, ts="yesterday"),
        sample(a.batteries[0], 6, state="exploding"),
        sample(a.batteries[0], 7, colour="red"),
        sample(world.b.batteries[0], 8),  # another tenant's battery
        sample(a.batteries[2], 9),  # this tenant's, but reported by gw-2
        sample("bad id!", 10),
        sample(a.batteries[1], 11, soc_pct=None, cells_mv=None),  # partial: fine
    ]
    status, body = await _post(world, a.device, batch)
    assert status == 200
    assert body["accepted"] == 2 and body["duplicates"] == 0
    errors = {r["index"]: r["error"] for r in body["rejected"]}
    assert sorted(errors) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert errors[1].startswith("seq:")
    assert errors[2].startswith("cells_mv.2:")
    assert errors[3].startswith("ts:")
    assert errors[4].startswith("ts:")
    assert errors[5].startswith("state:")
    assert errors[6].startswith("colour:")
    assert "not assigned to this device" in errors[7]
    assert "not assigned to this device" in errors[8]
    assert errors[9].startswith("battery_id:")
    # the partial sample stays partial: absent fields are absent, not zero
    async with client(world.base_url, a.admin) as c:
        latest = (await c.get(f"/api/v1/batteries/{a.batteries[1]}")).json()["latest"]
    assert "soc_pct" not in latest and "cells_mv" not in latest and latest["voltage_v"] == 53.2


async def test_stored_values_round_trip(world: World) -> None:
    a = world.a
    s = sample(
        a.batteries[0],
        42,
        current_a=12.345,
        temps_c=[-5.5, 61.0],
        balancing=[3, 15],
        faults=["cell_voltage_high_l1"],
        cells_mv=[3300, 3600, 2500, 3301],
        errors={"0x95": "timeout"},
    )
    assert (await _post(world, a.device, [s]))[1]["accepted"] == 1
    async with client(world.base_url, a.admin) as c:
        latest = (await c.get(f"/api/v1/batteries/{a.batteries[0]}")).json()["latest"]
    assert latest == s


async def test_gzip_body(world: World) -> None:
    a = world.a
    raw = gzip.compress(orjson.dumps({"samples": [sample(a.batteries[0], i) for i in range(100)]}))
    async with client(world.base_url, a.device) as c:
        r = await c.post(
            "/api/v1/ingest",
            content=raw,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
        assert r.status_code == 200 and r.json()["accepted"] == 100
        r = await c.post("/api/v1/ingest", content=b"not gzip", headers={"Content-Encoding": "gzip"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"]


async def test_malformed_bodies_are_422_with_the_field_path(world: World) -> None:
    async with client(world.base_url, world.a.device) as c:
        r = await c.post("/api/v1/ingest", content=b"{not json")
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"]
        r = await c.post("/api/v1/ingest", json={"sample": []})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "samples"]
        r = await c.post("/api/v1/ingest", json={"samples": {"battery_id": "x"}})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "samples"]
        r = await c.post("/api/v1/heartbeat", json={"batteries": [{"battery_id": "p", "link_state": "fine"}]})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "batteries", 0, "link_state"]
    async with client(world.base_url, world.a.admin) as c:
        r = await c.put(
            "/api/v1/devices/gw-1/config", content=b"\xff{", headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"]
        r = await c.put("/api/v1/devices/gw-1/config", json={"heartbeat_interval_s": -1})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "heartbeat_interval_s"]
    async with client(world.base_url) as c:
        r = await c.post("/api/v1/auth/login", json={"email": "x@y.z"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "password"]


async def test_oversized_bodies_are_413(world: World, start_server) -> None:
    a = world.a
    too_many = [sample(a.batteries[0], i) for i in range(5001)]
    status, body = await _post(world, a.device, too_many)
    assert status == 413 and "5000" in body["detail"]
    small = await asyncio.to_thread(start_server, max_body_bytes=10_000, max_decoded_bytes=50_000)
    big = [sample(a.batteries[0], i) for i in range(100)]
    async with client(small.base_url, a.device) as c:
        r = await c.post("/api/v1/ingest", json={"samples": big})
        assert r.status_code == 413
        # small on the wire, too large once decompressed
        bomb = gzip.compress(b'{"samples": [' + b" " * 200_000 + b"]}")
        assert len(bomb) < 10_000
        r = await c.post("/api/v1/ingest", content=bomb, headers={"Content-Encoding": "gzip"})
        assert r.status_code == 413
        # nothing of the refused bodies was stored
        r = await c.post("/api/v1/ingest", json={"samples": big[:10]})
        assert r.json() == {"accepted": 10, "duplicates": 0, "rejected": []}


async def test_wrong_missing_and_revoked_device_tokens(world: World) -> None:
    a = world.a
    batch = [sample(a.batteries[0], 1)]
    async with client(world.base_url) as c:
        r = await c.post("/api/v1/ingest", json={"samples": batch})
        assert r.status_code == 401
    for token in ("tbd_wrong", a.admin, a.device + "x"):
        assert (await _post(world, token, batch))[0] == 401
    assert (await _post(world, a.device, batch))[0] == 200
    # a second token for the same device, then revoke the first: only the new one works
    new = (await p.new_device_token(world.database_url, "acme", "gw-1"))["token"]
    assert await p.revoke_token(world.database_url, a.device)
    assert (await _post(world, a.device, batch))[0] == 401
    assert await _post(world, new, [sample(a.batteries[0], 2)]) == (
        200,
        {"accepted": 1, "duplicates": 0, "rejected": []},
    )
    assert await p.revoke_device_tokens(world.database_url, "acme", "gw-1") == 1
    assert (await _post(world, new, batch))[0] == 401
    async with client(world.base_url, a.device) as c:
        assert (await c.post("/api/v1/heartbeat", json={})).status_code == 401


async def test_rate_limit_answers_429_with_retry_after(world: World, start_server) -> None:
    limited = await asyncio.to_thread(start_server, ingest_burst=2, ingest_rate_per_s=0.01)
    async with client(limited.base_url, world.a.device) as c:
        codes = [(await c.post("/api/v1/ingest", json={"samples": []})) for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert int(codes[2].headers["retry-after"]) >= 1
    # per device: another device is not slowed down by the first
    async with client(limited.base_url, world.a.device2) as c:
        assert (await c.post("/api/v1/ingest", json={"samples": []})).status_code == 200


async def test_a_zero_rate_or_burst_means_no_limit(world: World, start_server) -> None:
    for rate, burst in ((0.0, 2), (0.01, 0), (0.0, 0)):
        unlimited = await asyncio.to_thread(start_server, ingest_burst=burst, ingest_rate_per_s=rate)
        async with client(unlimited.base_url, world.a.device) as c:
            codes = [(await c.post("/api/v1/ingest", json={"samples": []})).status_code for _ in range(5)]
        assert codes == [200] * 5, (rate, burst)


async def test_remote_config_reaches_the_gateway_once(world: World) -> None:
    a = world.a
    cfg = {
        "heartbeat_interval_s": 20,
        "batteries": {a.batteries[0]: {"poll_interval_s": 2.0, "cadences_s": {"cells": 5}}},
    }
    async with client(world.base_url, a.viewer) as c:
        assert (await c.put("/api/v1/devices/gw-1/config", json=cfg)).status_code == 403
    async with client(world.base_url, a.admin) as c:
        r = await c.put("/api/v1/devices/gw-1/config", json=cfg)
        assert r.status_code == 200 and r.json()["config_version"] == 1
    async with client(world.base_url, a.device) as c:
        r = await c.post("/api/v1/heartbeat", json={"version": "0.1.0", "config_version": 0})
        assert r.json()["config"]["config_version"] == 1
        assert r.json()["config"]["batteries"][a.batteries[0]]["poll_interval_s"] == 2.0
        r = await c.post("/api/v1/ingest", json={"samples": []}, headers={"X-Config-Version": "0"})
        assert r.json()["config"]["heartbeat_interval_s"] == 20
        r = await c.post("/api/v1/ingest", json={"samples": []}, headers={"X-Config-Version": "1"})
        assert "config" not in r.json()
        # once the gateway runs version 1, replies stop carrying it
        r = await c.post("/api/v1/heartbeat", json={"version": "0.1.0", "config_version": 1})
        assert r.json() == {"ok": True}
        r = await c.post("/api/v1/ingest", json={"samples": []})
        assert "config" not in r.json()
    async with client(world.base_url, a.admin) as c:
        dev = (await c.get("/api/v1/devices/gw-1")).json()
        detail = (await c.get(f"/api/v1/batteries/{a.batteries[0]}")).json()
    assert detail["poll_interval_s"] == 2.0
    assert dev["config_version"] == 1 and dev["reported_config_version"] == 1
    assert dev["heartbeat"]["version"] == "0.1.0" and dev["last_contact"] is not None


async def test_ingest_and_reads_take_no_trip_through_the_threadpool(world: World, monkeypatch) -> None:
    """The per-request dependencies (store, ingest service, the caller's identity) only read memory or
    await the database: none runs as a sync function in the threadpool, where each request would wait for
    a worker thread (and a saturated pool would stall ingest). A plain ``def`` dependency fails this."""
    import fastapi.dependencies.utils
    import fastapi.routing

    trips: list[str] = []
    for module in (fastapi.dependencies.utils, fastapi.routing):
        real = module.run_in_threadpool

        async def counted(func, *args, _real=real, **kwargs):  # type: ignore[no-untyped-def]
            trips.append(getattr(func, "__name__", repr(func)))
            return await _real(func, *args, **kwargs)

        monkeypatch.setattr(module, "run_in_threadpool", counted)
    a = world.a
    assert await _post(world, a.device, [sample(a.batteries[0], 1)]) == (
        200,
        {"accepted": 1, "duplicates": 0, "rejected": []},
    )
    async with client(world.base_url, a.admin) as c:
        assert (await c.get("/api/v1/fleet")).status_code == 200
    assert trips == []
