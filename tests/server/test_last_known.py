"""The fleet's last known state over real HTTP: gateways poll field groups on their own cadences, so most
samples are partial; the fleet and the battery detail show each field from the newest sample that carried
it, with its ts, and old samples arriving late never overwrite newer values."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import websockets
from alembic import command
from sqlalchemy import insert

from trackingbms.server import db
from trackingbms.server import provisioning as p
from trackingbms.server.store import packing

from .conftest import ServerThread, World, client, login, sample, ts
from .test_reads import _until_subscribed


async def _ingest(w: World, token: str, samples: list[dict[str, Any]]) -> None:
    async with client(w.base_url, token) as c:
        r = await c.post("/api/v1/ingest", json={"samples": samples})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["accepted"] == len(samples) and not body["rejected"], body


async def _fleet_item(w: World, battery_id: str) -> dict[str, Any]:
    async with client(w.base_url, w.a.admin) as c:
        fleet = {x["battery_id"]: x for x in (await c.get("/api/v1/fleet")).json()["batteries"]}
    return fleet[battery_id]


async def _detail(w: World, battery_id: str) -> dict[str, Any]:
    async with client(w.base_url, w.a.admin) as c:
        r = await c.get(f"/api/v1/batteries/{battery_id}")
        assert r.status_code == 200, r.text
        return r.json()


def _pack(battery_id: str, seq: int, when: str, voltage_v: float, current_a: float) -> dict[str, Any]:
    """What the gateway sends every second: the 0x90 pack values only."""
    return {
        "battery_id": battery_id,
        "seq": seq,
        "ts": when,
        "source": "sim",
        "via": "lan",
        "voltage_v": voltage_v,
        "current_a": current_a,
        "soc_pct": 75.0,
    }


async def test_partial_samples_keep_the_last_known_cells_temps_and_alarms(world: World) -> None:
    a = world.a
    p1 = a.batteries[0]
    cells = [3300 + 2 * i for i in range(16)]
    t_full = ts(30)
    full = sample(p1, 1, cells_mv=cells, temps_c=[31.5, 33.0], faults=["cell_voltage_high_l1"], fault_code=1)
    full["ts"] = t_full
    await _ingest(world, a.device, [full])
    t2, t3, t4 = ts(20), ts(10), ts(1)
    await _ingest(world, a.device, [_pack(p1, 2, t2, 53.0, -4.0), _pack(p1, 3, t3, 53.1, -5.0)])
    await _ingest(world, a.device, [_pack(p1, 4, t4, 53.3, -6.0)])

    for item in (await _fleet_item(world, p1), await _detail(world, p1)):
        latest = item["latest"]
        # the newest sample's own identity and pack values...
        assert latest["seq"] == 4 and latest["ts"] == t4
        assert latest["voltage_v"] == 53.3 and latest["current_a"] == -6.0
        assert item["power_w"] == pytest.approx(53.3 * -6.0)
        # ...and what only the older full reading carried, still there
        assert latest["cells_mv"] == cells and latest["temps_c"] == [31.5, 33.0]
        assert latest["state"] == "discharging" and latest["fault_code"] == 1
        assert item["alarms"] == ["cell_voltage_high_l1"]
        assert (item["cell_min_mv"], item["cell_max_mv"], item["cell_delta_mv"]) == (3300, 3330, 30)
        # how old each value is
        assert item["latest_ts"]["voltage_v"] == t4 and item["latest_ts"]["soc_pct"] == t4
        assert item["latest_ts"]["cells_mv"] == t_full and item["latest_ts"]["faults"] == t_full
        assert set(item["latest_ts"]) == set(latest) - {"battery_id", "seq", "ts", "source", "via"}
        assert item["last_seen"] == t4

    # the faults group read again, now with nothing active: an explicit empty list clears the alarms
    t5 = ts(0.5)
    await _ingest(
        world,
        a.device,
        [{"battery_id": p1, "seq": 5, "ts": t5, "source": "sim", "faults": [], "fault_code": 0}],
    )
    item = await _fleet_item(world, p1)
    assert item["alarms"] == [] and item["latest"]["faults"] == [] and item["latest_ts"]["faults"] == t5
    assert item["latest"]["cells_mv"] == cells and item["latest"]["voltage_v"] == 53.3
    assert item["latest"]["seq"] == 5 and item["last_seen"] == t5
    # a later pack-only sample says nothing about faults: they stay cleared, not unknown
    await _ingest(world, a.device, [_pack(p1, 6, ts(), 53.4, -6.5)])
    item = await _fleet_item(world, p1)
    assert item["alarms"] == [] and item["latest"]["faults"] == [] and item["cell_delta_mv"] == 30


async def test_fields_of_one_batch_merge_by_ts_whatever_their_order(world: World) -> None:
    a = world.a
    p2 = a.batteries[1]
    t_old, t_mid, t_new = ts(40), ts(20), ts(2)
    older = sample(p2, 1, cells_mv=[3400] * 16, faults=["cell_temp_high_l1"])
    older["ts"] = t_old
    mid = sample(p2, 2, cells_mv=[3350] * 15 + [3360], faults=[])
    mid["ts"] = t_mid
    # newest first, the full readings after it: order in the batch must not matter
    await _ingest(world, a.device, [_pack(p2, 3, t_new, 52.0, 10.0), older, mid])
    item = await _fleet_item(world, p2)
    assert item["latest"]["seq"] == 3 and item["latest"]["voltage_v"] == 52.0
    assert item["latest"]["cells_mv"] == [3350] * 15 + [3360] and item["cell_delta_mv"] == 10
    assert item["alarms"] == []
    assert item["latest_ts"]["cells_mv"] == t_mid and item["latest_ts"]["current_a"] == t_new


async def test_backfill_never_overwrites_newer_values_nor_moves_last_seen_back(world: World) -> None:
    a = world.a
    p1, p2 = a.batteries[0], a.batteries[1]
    t_live = ts()
    live = sample(p1, 100, voltage_v=54.0, cells_mv=[3330] * 16, faults=[])
    live["ts"] = t_live
    await _ingest(world, a.device, [live])
    # yesterday's readings, drained from a gateway's queue after the live one
    day = 86_400
    backlog = [
        sample(p1, 10 + i, day + 60 - i, voltage_v=48.0, cells_mv=[3100] * 16, faults=["cell_voltage_low_l2"])
        for i in range(5)
    ]
    await _ingest(world, a.device, backlog)
    item = await _fleet_item(world, p1)
    assert item["last_seen"] == t_live and item["latest"]["seq"] == 100 and item["latest"]["ts"] == t_live
    assert item["latest"]["voltage_v"] == 54.0 and item["latest"]["cells_mv"] == [3330] * 16
    assert item["alarms"] == [] and item["cell_min_mv"] == 3330
    assert all(v == t_live for v in item["latest_ts"].values())
    # samples arrive now but were taken long ago (design.md "Connectivity")
    assert item["connectivity"] == "backfilling"

    # a field the newer samples never carried is still worth showing, with its real age
    t_pack = ts()
    await _ingest(world, a.device, [_pack(p2, 50, t_pack, 53.0, -1.0)])
    old = sample(p2, 7, day, temps_c=[12.5], voltage_v=47.0)
    await _ingest(world, a.device, [old])
    item = await _fleet_item(world, p2)
    assert item["latest"]["voltage_v"] == 53.0 and item["latest_ts"]["voltage_v"] == t_pack
    assert item["latest"]["temps_c"] == [12.5] and item["latest_ts"]["temps_c"] == old["ts"]
    assert item["last_seen"] == t_pack


async def test_last_seen_is_the_sample_ts_not_the_arrival(world: World) -> None:
    a = world.a
    p3 = a.batteries[2]
    s = sample(p3, 1, 3600)
    await _ingest(world, a.device2, [s])
    item = await _detail(world, p3)
    assert item["last_seen"] == s["ts"]
    # the arrival is kept apart: it is what connectivity judges "samples arrive" by
    assert item["last_received"] is not None and item["last_received"] > s["ts"]
    assert item["connectivity"] == "backfilling"


async def test_live_feed_does_not_push_a_backfill_over_newer_data(world: World) -> None:
    a = world.a
    p1 = a.batteries[0]
    url = world.base_url.replace("http", "ws") + f"/api/v1/live?token={a.viewer}"
    async with websockets.connect(url) as ws:
        await _until_subscribed(world, ws)
        await _ingest(world, a.device, [sample(p1, 20)])
        await _ingest(world, a.device, [sample(p1, 3, 86_400, voltage_v=48.0)])  # yesterday's, late
        await _ingest(world, a.device, [sample(p1, 21)])
        got = [orjson.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(2)]
    # a live page merges each pushed sample over what it shows: yesterday's must not reach it
    assert [m["sample"]["seq"] for m in got] == [20, 21]


async def test_migration_seeds_the_state_from_the_newest_stored_sample(
    database_url: str, start_server: Callable[..., ServerThread]
) -> None:
    # a database as the previous release left it: schema at 0002, the newest sample kept per battery
    engine = db.make_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.upgrade(db._alembic_config(c), "0002"))
            s = sample("old-1", 9, 60, faults=["cell_voltage_high_l1"])
            del s["temps_c"]
            _, seq, ts_ms, data, _ = packing.validate_and_pack(s)
            tid = (
                await conn.execute(
                    insert(db.tenants).values(name="legacy", created_ms=0).returning(db.tenants.c.id)
                )
            ).scalar_one()
            sid = (
                await conn.execute(
                    insert(db.sites).values(tenant_id=tid, name="yard").returning(db.sites.c.id)
                )
            ).scalar_one()
            await conn.execute(
                insert(db.batteries).values(
                    tenant_id=tid,
                    site_id=sid,
                    battery_id="old-1",
                    name="Old 1",
                    poll_interval_s=5.0,
                    cell_count=16,
                    temp_count=0,
                    last_seq=seq,
                    last_ts_ms=ts_ms,
                    last_data=data,
                    last_received_ms=ts_ms,
                    received_ts_ms=ts_ms,
                )
            )
    finally:
        await engine.dispose()
    server = await asyncio.to_thread(start_server)  # migrates to head at start
    async with p.open_store(database_url) as store:
        await p.create_user(store, "legacy", "ops@legacy.test", "ops-pass-123", "viewer")
    token = await login(server.base_url, "ops@legacy.test", "ops-pass-123")
    async with client(server.base_url, token) as c:
        item = (await c.get("/api/v1/batteries/old-1")).json()
    assert item["latest"] == s and item["alarms"] == ["cell_voltage_high_l1"]
    assert item["latest_ts"]["cells_mv"] == s["ts"] and "temps_c" not in item["latest_ts"]
    assert item["last_seen"] == s["ts"]
