"""User-facing reads over real HTTP: fleet, detail, history, export, devices, live; tenancy on each."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets

from trackingbms.server import provisioning as p
from trackingbms.server.store import RAW_HISTORY_MAX_ROWS

from .conftest import World, client, sample, ts


async def _ingest(w: World, token: str, samples: list) -> dict:
    async with client(w.base_url, token) as c:
        r = await c.post("/api/v1/ingest", json={"samples": samples})
        assert r.status_code == 200, r.text
        return r.json()


def _read_paths(battery_id: str, device_id: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"/api/v1/batteries/{battery_id}"),
        ("GET", f"/api/v1/batteries/{battery_id}/history"),
        ("GET", f"/api/v1/batteries/{battery_id}/export.csv"),
        ("GET", f"/api/v1/devices/{device_id}"),
        ("PUT", f"/api/v1/devices/{device_id}/config"),
    ]


async def test_login_me_and_wrong_credentials(world: World) -> None:
    async with client(world.base_url) as c:
        r = await c.post("/api/v1/auth/login", json={"email": "admin@acme.test", "password": "admin-pass-1"})
        assert r.status_code == 200
        body = r.json()
        assert body["token_type"] == "bearer"
        assert body["user"] == {"email": "admin@acme.test", "role": "admin", "tenant": "acme"}
        r = await c.post("/api/v1/auth/login", json={"email": "admin@acme.test", "password": "wrong-pass"})
        assert r.status_code == 401
        r = await c.post("/api/v1/auth/login", json={"email": "nobody@acme.test", "password": "admin-pass-1"})
        assert r.status_code == 401
        for token in (None, "tbu_nonsense", world.a.device):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            assert (await c.get("/api/v1/me", headers=headers)).status_code == 401
            assert (await c.get("/api/v1/fleet", headers=headers)).status_code == 401
        r = await c.get("/api/v1/me", headers={"Authorization": f"Bearer {world.a.viewer}"})
        assert r.json() == {"email": "viewer@acme.test", "role": "viewer", "tenant": "acme"}
        token = body["access_token"]
        r = await c.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert (await c.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})).status_code == 401


async def test_cross_tenant_matrix_never_shows_data(world: World) -> None:
    a, b = world.a, world.b
    await _ingest(world, a.device, [sample(a.batteries[0], 1)])
    await _ingest(world, b.device, [sample(b.batteries[0], 1, voltage_v=99.9)])
    async with client(world.base_url, b.device) as c:
        await c.post("/api/v1/heartbeat", json={"version": "9.9.9", "batteries": []})
    for token in (a.admin, a.viewer):
        async with client(world.base_url, token) as c:
            # B's ids through A's token: 404 (never 200 with B's data)
            for method, path in _read_paths(b.batteries[0], "gw-x-of-globex"):
                r = await c.request(method, path, json={} if method == "PUT" else None)
                assert r.status_code in (403, 404), (method, path, r.status_code)
            # A's lists contain only A
            fleet = (await c.get("/api/v1/fleet")).json()["batteries"]
            assert sorted(x["battery_id"] for x in fleet) == sorted(a.batteries)
            assert all("99.9" not in orjson.dumps(x).decode() for x in fleet)
            devices = (await c.get("/api/v1/devices")).json()
            assert all(d["heartbeat"] is None or d["heartbeat"]["version"] != "9.9.9" for d in devices)
            sites = (await c.get("/api/v1/sites")).json()
            assert len(sites) == 1
    # same names exist in both tenants (gw-1, depot): each token sees its own
    async with client(world.base_url, a.admin) as c:
        r = await c.get(f"/api/v1/batteries/{b.batteries[0]}")
        assert r.status_code == 404
        r = await c.get("/api/v1/devices/gw-1")
        assert r.status_code == 200 and r.json()["heartbeat"] is None
        r = await c.put("/api/v1/devices/gw-1/config", json={"heartbeat_interval_s": 10})
        assert r.status_code == 200
    async with client(world.base_url, b.admin) as c:
        assert (await c.get("/api/v1/devices/gw-1")).json()["config_version"] == 0
        r = await c.get(f"/api/v1/batteries/{a.batteries[0]}/export.csv")
        assert r.status_code == 404
    # a device token of A cannot read, and cannot write B's batteries
    async with client(world.base_url, a.device) as c:
        for method, path in _read_paths(a.batteries[0], "gw-1"):
            assert (await c.request(method, path)).status_code == 401
    res = await _ingest(world, a.device, [sample(b.batteries[0], 2)])
    assert res["accepted"] == 0 and "not assigned" in res["rejected"][0]["error"]


async def test_viewer_reads_but_cannot_write(world: World) -> None:
    async with client(world.base_url, world.a.viewer) as c:
        assert (await c.get("/api/v1/fleet")).status_code == 200
        r = await c.put("/api/v1/devices/gw-1/config", json={"heartbeat_interval_s": 10})
        assert r.status_code == 403


async def test_fleet_connectivity_states(world: World) -> None:
    a, b = world.a, world.b
    p1, p2, p3 = a.batteries
    # p1: a fresh sample → online
    await _ingest(world, a.device, [sample(p1, 1)])
    # p2: samples arriving now, but taken an hour ago → backfilling
    await _ingest(world, a.device, [sample(p2, 1, seconds_ago=3600)])
    # gw-2 says p3's BMS is asleep and sends nothing for it → asleep
    async with client(world.base_url, a.device2) as c:
        await c.post("/api/v1/heartbeat", json={"batteries": [{"battery_id": p3, "link_state": "asleep"}]})
    # in the other tenant: a link the gateway reports disconnected → link-down; silence → offline
    async with client(world.base_url, b.device) as c:
        await c.post(
            "/api/v1/heartbeat",
            json={
                "batteries": [
                    {"battery_id": b.batteries[0], "link_state": "disconnected", "last_error": "timeout"},
                    {"battery_id": b.batteries[1], "link_state": "ok"},
                ]
            },
        )
    async with client(world.base_url, a.admin) as c:
        fleet = {x["battery_id"]: x for x in (await c.get("/api/v1/fleet")).json()["batteries"]}
    assert fleet[p1]["connectivity"] == "online"
    assert fleet[p1]["latest"]["seq"] == 1 and fleet[p1]["last_seen"] is not None
    assert fleet[p1]["cell_min_mv"] == 3320 and fleet[p1]["cell_delta_mv"] == 15
    assert fleet[p1]["power_w"] == pytest.approx(53.2 * -4.5)
    assert fleet[p2]["connectivity"] == "backfilling"
    assert fleet[p3]["connectivity"] == "asleep" and fleet[p3]["latest"] is None
    assert fleet[p3]["link_state"] == "asleep"
    async with client(world.base_url, b.admin) as c:
        fleet = {x["battery_id"]: x for x in (await c.get("/api/v1/fleet")).json()["batteries"]}
    assert fleet[b.batteries[0]]["connectivity"] == "link-down"
    # the gateway is alive and says the link is ok, but no sample came: a keep-alive is not "online"
    assert fleet[b.batteries[1]]["connectivity"] == "link-down"
    assert fleet[b.batteries[2]]["connectivity"] == "offline"


async def test_history_is_downsampled_and_keeps_spikes(world: World) -> None:
    a = world.a
    bid = a.batteries[0]
    n = 1200
    samples = [sample(bid, i, seconds_ago=n - i, voltage_v=52.0 + (i % 7) * 0.01) for i in range(n)]
    samples[600]["voltage_v"] = 58.8  # one-sample spike
    samples[900]["cells_mv"] = [3320] * 15 + [2700]  # one sagging cell, once
    del samples[300]["current_a"]  # a partial sample: no invented value
    await _ingest(world, a.device, samples)
    async with client(world.base_url, a.viewer) as c:
        r = await c.get(
            f"/api/v1/batteries/{bid}/history",
            params={"from": samples[0]["ts"], "to": samples[-1]["ts"][:-1] + "9Z", "points": 50},
        )
    h = r.json()
    assert r.status_code == 200
    assert 0 < len(h["t"]) <= 50 and h["bucket_s"] >= n // 50
    v = h["series"]["voltage_v"]
    assert max(v["max"]) == 58.8 and max(v["mean"]) < 58.8
    assert min(v["min"]) == 52.0
    assert min(h["series"]["cell_min_mv"]["min"]) == 2700
    assert max(h["series"]["cell_delta_mv"]["max"]) == 620
    assert len(h["series"]["soc_pct"]["mean"]) == len(h["t"])
    assert h["t"] == sorted(h["t"])
    # a range without samples: no buckets at all (nothing invented)
    async with client(world.base_url, a.viewer) as c:
        r = await c.get(
            f"/api/v1/batteries/{bid}/history",
            params={"from": "2021-01-01T00:00:00Z", "to": "2021-01-02T00:00:00Z"},
        )
        assert r.json()["t"] == [] and r.json()["series"]["voltage_v"]["max"] == []
        r = await c.get(f"/api/v1/batteries/{bid}/history", params={"from": "garbage"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "from"]
        r = await c.get(f"/api/v1/batteries/{bid}/history", params={"points": 0})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "points"]


async def test_long_range_history_comes_from_rollups_and_counts_each_sample_once(world: World) -> None:
    a = world.a
    bid = a.batteries[1]
    n = 1800  # 30 minutes at 1 Hz
    samples = [sample(bid, i, seconds_ago=n - i, voltage_v=52.0 + (i % 5) * 0.1) for i in range(n)]
    samples[1000]["voltage_v"] = 61.5
    samples[1500]["temps_c"] = [-12.5, 24.0]
    for s in samples[200:260]:  # a minute of partial samples: no current, so no power either
        del s["current_a"]
    params = {"from": samples[0]["ts"], "to": ts(), "points": 6}  # 5-minute buckets → rollups

    async def history() -> dict:
        async with client(world.base_url, a.viewer) as c:
            r = await c.get(f"/api/v1/batteries/{bid}/history", params=params)
            assert r.status_code == 200, r.text
            return r.json()

    for start in range(0, n, 500):
        await _ingest(world, a.device, samples[start : start + 500])
    h = await history()
    assert h["bucket_s"] % 60 == 0 and h["bucket_s"] >= 300 and 0 < len(h["t"]) <= 6
    assert all(t % h["bucket_s"] == 0 for t in h["t"])
    v = h["series"]["voltage_v"]
    assert max(v["max"]) == 61.5 and min(v["min"]) == 52.0
    assert min(h["series"]["temp_min_c"]["min"]) == -12.5
    assert all(m is not None for m in h["series"]["power_w"]["mean"])
    # the gateway re-sends half of it: nothing changes
    assert (await _ingest(world, a.device, samples[:900]))["duplicates"] == 900
    assert await history() == h


async def test_year_long_history_answers_in_at_most_points_buckets(world: World) -> None:
    a = world.a
    bid = a.batteries[2]
    year = 365 * 86400
    # a year at one sample every 4 hours, with one spike and one cold sensor somewhere in it
    samples = [sample(bid, i, seconds_ago=year - 60 - i * 4 * 3600) for i in range(365 * 6)]
    samples[1000]["voltage_v"] = 60.25
    samples[1700]["temps_c"] = [-20.5, 24.0]
    for start in range(0, len(samples), 1000):
        await _ingest(world, a.device2, samples[start : start + 1000])
    async with client(world.base_url, a.viewer) as c:
        for points in (1, 100, 5000):
            r = await c.get(
                f"/api/v1/batteries/{bid}/history", params={"from": ts(year), "to": ts(), "points": points}
            )
            assert r.status_code == 200, r.text
            h = r.json()
            assert 0 < len(h["t"]) <= points and h["bucket_s"] % 60 == 0
            assert h["t"] == sorted(h["t"]) and h["t"][-1] - h["t"][0] < year
            assert max(h["series"]["voltage_v"]["max"]) == 60.25
            assert min(h["series"]["voltage_v"]["min"]) == 53.2
            assert min(h["series"]["temp_min_c"]["min"]) == -20.5
            assert all(len(s[k]) == len(h["t"]) for s in h["series"].values() for k in ("min", "max", "mean"))
        # absurd requests are refused, naming the parameter
        for params, loc in (
            ({"from": ts(60), "to": ts(120)}, "from"),
            ({"from": ts(3 * year), "to": ts()}, "from"),
            ({"points": 5001}, "points"),
        ):
            r = await c.get(f"/api/v1/batteries/{bid}/history", params=params)
            assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", loc], r.text


async def test_short_buckets_over_dense_raw_data_come_from_the_rollups(world: World) -> None:
    """Asking 1-second buckets over more raw samples than the server decodes per request: the
    minute rollups answer instead (bucket_s 60), still at most `points` buckets."""
    a = world.a
    bid = a.batteries[0]
    n = RAW_HISTORY_MAX_ROWS + 1200  # 1 Hz
    samples = [sample(bid, i, seconds_ago=n + 5 - i) for i in range(n)]
    samples[n // 2]["voltage_v"] = 59.5
    for start in range(0, n, 5000):
        await _ingest(world, a.device, samples[start : start + 5000])
    async with client(world.base_url, a.viewer) as c:
        r = await c.get(
            f"/api/v1/batteries/{bid}/history",
            params={"from": samples[0]["ts"], "to": ts(), "points": 5000},
        )
    h = r.json()
    assert r.status_code == 200 and h["bucket_s"] == 60 and 0 < len(h["t"]) <= 5000
    assert max(h["series"]["voltage_v"]["max"]) == 59.5


async def test_csv_export_header_and_rows(world: World) -> None:
    a = world.a
    bid = a.batteries[0]
    rows_in = [sample(bid, i, seconds_ago=100 - i) for i in range(3)]
    rows_in[1] = sample(
        bid,
        1,
        seconds_ago=99,
        cells_mv=[3300, 3301],
        temps_c=[20.5, 21.0, 22.5],
        faults=["cell_voltage_low_l1", "temp_high_l2"],
        balancing=[1, 2],
        charge_mos=False,
        errors={"0x95": "frame(s) 6 of 6 never arrived intact"},
    )
    del rows_in[2]["soc_pct"]
    await _ingest(world, a.device, rows_in)
    async with client(world.base_url, a.viewer) as c:
        r = await c.get(f"/api/v1/batteries/{bid}/export.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(r.text)))
    header = table[0]
    assert header[:16] == [
        "ts",
        "seq",
        "source",
        "via",
        "voltage_v",
        "current_a",
        "soc_pct",
        "remaining_ah",
        "cycles",
        "state",
        "charge_mos",
        "discharge_mos",
        "charger_connected",
        "load_connected",
        "fault_code",
        "faults",
    ]
    assert header[16:32] == [f"cell_{i}_mv" for i in range(1, 17)]
    assert header[32:] == ["temp_1_c", "temp_2_c", "temp_3_c", "balancing", "errors"]
    rows = [dict(zip(header, row, strict=True)) for row in table[1:]]
    assert [r["seq"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["ts"] == rows_in[0]["ts"] and rows[0]["cell_16_mv"] == "3335" and rows[0]["temp_3_c"] == ""
    assert rows[1]["faults"] == "cell_voltage_low_l1;temp_high_l2" and rows[1]["balancing"] == "1;2"
    assert rows[1]["cell_2_mv"] == "3301" and rows[1]["cell_3_mv"] == "" and rows[1]["temp_3_c"] == "22.5"
    assert rows[1]["charge_mos"] == "false" and rows[0]["state"] == "discharging"
    assert rows[2]["soc_pct"] == "" and rows[0]["soc_pct"] == "80.5"
    assert json.loads(rows[1]["errors"]) == {"0x95": "frame(s) 6 of 6 never arrived intact"}
    assert rows[0]["errors"] == ""


async def _heartbeat(w: World, token: str, version: str) -> None:
    async with client(w.base_url, token) as c:
        assert (await c.post("/api/v1/heartbeat", json={"version": version})).status_code == 200


async def _until_subscribed(w: World, ws: Any) -> None:
    """The server subscribes just after the handshake: probe with heartbeats until one comes through,
    then read up to a marker so that nothing of the probing is left in the socket."""
    while True:
        await _heartbeat(w, w.a.device2, "probe")
        try:
            await asyncio.wait_for(ws.recv(), 1)
            break
        except TimeoutError:
            continue
    await _heartbeat(w, w.a.device2, "marker")
    while orjson.loads(await asyncio.wait_for(ws.recv(), 30))["heartbeat"]["version"] != "marker":
        pass


async def test_live_feed_is_tenant_scoped(world: World) -> None:
    a, b = world.a, world.b
    url = world.base_url.replace("http", "ws") + "/api/v1/live"
    with pytest.raises(websockets.exceptions.InvalidStatus):
        async with websockets.connect(f"{url}?token=wrong"):
            pass
    async with websockets.connect(f"{url}?token={a.viewer}") as ws:
        await _until_subscribed(world, ws)
        # the other tenant's traffic first: it must never arrive here
        await _ingest(world, b.device, [sample(b.batteries[0], 1)])
        async with client(world.base_url, b.device) as c:
            await c.post("/api/v1/heartbeat", json={"version": "b"})
        await _ingest(world, a.device, [sample(a.batteries[0], 7), sample(a.batteries[0], 8)])
        async with client(world.base_url, a.device2) as c:
            await c.post("/api/v1/heartbeat", json={"version": "a"})
        first = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
        second = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
    assert first["type"] == "sample" and first["battery_id"] == a.batteries[0]
    assert first["sample"]["seq"] == 8 and first["connectivity"] == "online"
    assert second == {"type": "heartbeat", "device_id": "gw-2", "heartbeat": second["heartbeat"]}
    assert second["heartbeat"]["version"] == "a"


async def test_openapi_documents_every_endpoint(world: World) -> None:
    async with httpx.AsyncClient(base_url=world.base_url) as c:
        doc = (await c.get("/openapi.json")).json()
        assert (await c.get("/docs")).status_code == 200
    paths = doc["paths"]
    for path in (
        "/api/v1/ingest",
        "/api/v1/heartbeat",
        "/api/v1/auth/login",
        "/api/v1/fleet",
        "/api/v1/batteries/{battery_id}/history",
        "/api/v1/batteries/{battery_id}/export.csv",
        "/api/v1/devices/{device_id}/config",
    ):
        assert path in paths
    ingest = paths["/api/v1/ingest"]["post"]
    assert ingest["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("IngestBatch")
    assert "examples" in doc["components"]["schemas"]["IngestBatch"]
    assert {"401", "413", "422", "429"} <= set(ingest["responses"])


def _schemathesis(base_url: str, token: str, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{base_url}/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance",
            "--max-examples",
            "30",
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "1",
            "--seed",
            "1",
            "--no-color",
            "--generation-database",
            "none",
            "--suppress-health-check",
            "all",
            "-H",
            f"Authorization: Bearer {token}",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,  # it keeps a cache directory in the working directory
    )


async def test_schemathesis_finds_no_server_errors(world: World, tmp_path: Path) -> None:
    a = world.a
    await _ingest(world, a.device, [sample(a.batteries[0], 1)])
    # user endpoints with a user token, device endpoints with a device token
    for token, tag in ((a.admin, "fleet,devices,user,alarms"), (a.device, "device")):
        args = [arg for t in tag.split(",") for arg in ("--include-tag", t)]
        args += ["--exclude-path", "/api/v1/auth/logout"]  # it would end the run's own session
        r = await asyncio.to_thread(_schemathesis, world.base_url, token, tmp_path, *args)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


async def test_retention_drops_old_raw_samples_of_that_tenant_only(world: World) -> None:
    a, b = world.a, world.b
    old_a = [sample(a.batteries[0], i, seconds_ago=3 * 86400 - i) for i in range(120)]
    new_a = [sample(a.batteries[0], 1000 + i, seconds_ago=120 - i) for i in range(10)]
    old_b = [sample(b.batteries[0], i, seconds_ago=3 * 86400 - i) for i in range(120)]
    await _ingest(world, a.device, old_a + new_a)
    await _ingest(world, b.device, old_b)
    assert await p.set_retention(world.database_url, "acme", 1) == {"tenant": "acme", "retention_days": 1}
    assert await p.apply_retention(world.database_url) == 120

    async def export(token: str, battery_id: str) -> list[str]:
        async with client(world.base_url, token) as c:
            r = await c.get(f"/api/v1/batteries/{battery_id}/export.csv", params={"from": ts(4 * 86400)})
            return [line.split(",")[1] for line in r.text.splitlines()[1:]]

    assert await export(a.admin, a.batteries[0]) == [str(1000 + i) for i in range(10)]
    assert len(await export(b.admin, b.batteries[0])) == 120
    # the long view still shows the old days: it is served from the rollups, which stay
    async with client(world.base_url, a.admin) as c:
        h = (
            await c.get(
                f"/api/v1/batteries/{a.batteries[0]}/history", params={"from": ts(4 * 86400), "points": 100}
            )
        ).json()
    assert h["t"][0] < datetime.now(UTC).timestamp() - 2 * 86400
    assert await p.set_retention(world.database_url, "acme", 0) == {"tenant": "acme", "retention_days": None}


async def test_every_endpoint_refuses_other_tenants_and_missing_tokens(world: World) -> None:
    """Driven by the OpenAPI document, so a new endpoint is covered the day it appears."""
    a, b = world.a, world.b
    await p.provision_device(world.database_url, "globex", "gw-globex")
    await _ingest(world, b.device, [sample(b.batteries[0], 1, voltage_v=77.7, faults=["soc_low_l2"])])
    # one of each of the other tenant's numbered things: an alarm, a rules override, a notification target
    async with client(world.base_url, b.admin) as c:
        rule = (
            await c.post("/api/v1/alarm-rules", json={"rule_id": "soc_low", "set": 7.7, "clear": 9})
        ).json()
        target = (await c.post("/api/v1/notify-targets", json={"url": "json://127.0.0.1:9/x"})).json()
        for _ in range(600):  # alarms are evaluated just after the ingest reply
            b_alarms = (await c.get("/api/v1/alarms")).json()
            if b_alarms:
                break
            await asyncio.sleep(0.1)
    async with httpx.AsyncClient(base_url=world.base_url) as c:
        doc = (await c.get("/openapi.json")).json()
    public = {"/api/v1/auth/login", "/healthz"}
    async with p.open_store(world.database_url) as store:  # an API token of the other tenant
        globex = store.tenant(await store.tenant_by_name("globex"))
        token_id = (await globex.create_api_token("admin@globex.test", "ci", "read", 30))["id"]
    ids = {
        "battery_id": b.batteries[0],
        "device_id": "gw-globex",
        "alarm_id": str(b_alarms[0]["id"]),
        "rule_pk": str(rule["id"]),
        "target_id": str(target["id"]),
        "token_id": str(token_id),
    }
    ghosts = {
        "battery_id": "no-such-pack",
        "device_id": "no-such-gw",
        "alarm_id": "987654",
        "rule_pk": "987654",
        "target_id": "987654",
        "token_id": "987654",
    }
    checked = 0
    for path, ops in doc["paths"].items():
        if not path.startswith("/api/") or path in public:
            continue
        url = path.format(**ids)
        for method in ops:
            body = {} if method in ("post", "put") else None
            async with client(world.base_url) as c:
                r = await c.request(method, url, json=body)
                assert r.status_code == 401, (method, path, r.status_code)
            if "{" not in path:
                continue
            ghost_url = path.format(**ghosts)
            for token in (a.admin, a.viewer, a.device):
                async with client(world.base_url, token) as c:
                    r = await c.request(method, url, json=body)
                    ghost = await c.request(method, ghost_url, json=body)
                assert r.status_code in (401, 403, 404), (method, path, r.status_code)
                # another tenant's id answers exactly like an id that exists nowhere
                seen, ghost_seen = r.text, ghost.text
                for name in ids:
                    seen, ghost_seen = seen.replace(ids[name], "X"), ghost_seen.replace(ghosts[name], "X")
                assert r.status_code == ghost.status_code
                assert seen == ghost_seen
                assert "77.7" not in r.text
                checked += 1
    assert checked >= 15
