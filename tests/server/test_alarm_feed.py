"""The alarm feed: every stored sample is evaluated, whichever server process stored it, by the one
process holding the alarm-feed lease; a process that takes over resumes where the last holder stopped.

- two server processes on one database (both backends): a fault stored through each raises its alarm,
  once; the holder is SIGKILLed, a fault stored meanwhile through the survivor is raised when it takes the
  lease over (from the cursor the dead holder saved);
- PostgreSQL: a segment whose transaction commits after a later one's (its id seen missing first) is
  evaluated when it turns up;
- SQLite: segment ids are never handed out twice, even once compaction emptied the table's end;
- the cursor's bookkeeping (:class:`FeedCursor`) on its own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select, text

from trackingbms.server import provisioning as p
from trackingbms.server.alarm_feed import MAX_GAPS, FeedCursor
from trackingbms.server.alarms import AlarmService
from trackingbms.server.db import make_engine, sample_segments, service_leases
from trackingbms.server.notify import Notifier
from trackingbms.server.store import DeviceRef, Store, packing

from .conftest import ServerThread, migrate, provision, sample, server_process

LEASE_S = 2.0
FAULT = {"faults": ["cell_voltage_high_l2"], "fault_code": 1}


def _start_subprocess_server(url: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    return server_process(
        url,
        tmp,
        {
            "TRACKINGBMS_ALARM_LEASE_S": str(LEASE_S),
            "TRACKINGBMS_ALARM_INTERVAL_S": "0.5",  # saves state and the feed's cursor twice a second
            "TRACKINGBMS_ONLINE_GRACE_S": "120",
        },
    )


async def _lease(url: str) -> Any:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(select(service_leases))).first()
    finally:
        await engine.dispose()


async def _faults_raised(base: str, token: str) -> dict[str, int]:
    """battery → how many alarms (any status) the fault rule has on it."""
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
        r = await c.get("/api/v1/alarms")
        r.raise_for_status()
        out: dict[str, int] = {}
        for a in r.json():
            if a["rule_id"] == "fault:cell_voltage_high_l2":
                out[a["battery_id"]] = out.get(a["battery_id"], 0) + 1
        return out


async def _until(what: str, limit_s: float, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + limit_s
    while True:
        got = await check()
        if got:
            return got
        assert time.monotonic() < deadline, f"never saw {what}"
        await asyncio.sleep(0.2)


async def _post(base: str, token: str, samples: list[dict[str, Any]]) -> None:
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
        r = await c.post("/api/v1/ingest", json={"samples": samples})
        assert r.status_code == 200 and r.json()["accepted"] == len(samples), r.text


async def test_every_process_s_samples_are_evaluated_and_a_takeover_resumes(
    start_server: Callable[..., ServerThread], database_url: str, tmp_path: Path
) -> None:
    # B (a subprocess, so that it can be killed) starts first and takes the lease; A stands by
    proc, b = await asyncio.to_thread(_start_subprocess_server, database_url, tmp_path / "b")
    try:
        await _until("B holding the lease", 20, lambda: _lease(database_url))
        a = await asyncio.to_thread(start_server, alarm_lease_s=LEASE_S, alarm_interval_s=0.5)
        async with p.open_store(database_url) as store:
            t = await provision(store, a.base_url, "acme")
        holder = (await _lease(database_url)).holder
        assert holder.split(":")[1] == str(proc.pid), "B should hold the feed"
        p1, p2, p3 = t.batteries  # p1, p2 report through gw-1, p3 through gw-2
        # a fault stored by A (not the holder) and one stored by B: both raised, each once
        await _post(a.base_url, t.device, [sample(p1, 1, **FAULT)])
        await _post(b, t.device2, [sample(p3, 1, **FAULT)])
        got = await _until(
            "both faults raised", 20, lambda: _has(_faults_raised(a.base_url, t.admin), {p1, p3})
        )
        assert got == {p1: 1, p3: 1}
        await asyncio.sleep(1.2)  # B saves its state and cursor (every 0.5 s)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # stored while the dead B still holds the lease: nobody evaluates it yet...
        await _post(a.base_url, t.device, [sample(p2, 1, **FAULT)])
        # ...until A takes the lease over (after it expires) and resumes from B's cursor
        got = await _until(
            "the fault stored during the takeover raised",
            30,
            lambda: _has(_faults_raised(a.base_url, t.admin), {p2}),
        )
        assert got == {p1: 1, p2: 1, p3: 1}  # and nothing B had evaluated raised twice
        assert (await _lease(database_url)).holder != holder
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


async def _has(got: Any, batteries: set[str]) -> dict[str, int] | None:
    raised = await got
    return raised if batteries <= raised.keys() else None


@pytest.mark.postgres
async def test_a_segment_committed_after_a_later_one_is_still_evaluated(postgres_url: str) -> None:
    async with p.open_store(postgres_url) as store:
        await p.create_tenant(store, "acme")
        await p.create_site(store, "acme", "depot")
        for bid, dev in (("late", "gw-1"), ("early", "gw-2")):  # two devices: no row both batches update
            await p.provision_device(store, "acme", dev)
            await p.create_battery(store, "acme", "depot", bid, device=dev)
    engine = make_engine(postgres_url)
    store = Store(engine)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT id, tenant_id, name FROM devices ORDER BY id"))).all()
        gw1, gw2 = (DeviceRef(r[0], r[1], r[2], 0, None, None) for r in rows)
        service = AlarmService(store, interval_s=3600, feed_poll_s=0.1, gap_wait_s=60)
        service.start()
        now = int(time.time() * 1000)
        late, _ = packing.validate_batch([sample("late", 1, **FAULT)], now, 300_000)
        # "late"'s batch takes its segment id first, but its transaction is still open...
        async with engine.connect() as held:
            await held.begin()
            await store._store_batch(held, gw1, late, now)  # ingest's own statements, uncommitted
            # ...when "early"'s batch (a later id) commits and is evaluated
            early, _ = packing.validate_batch([sample("early", 1, **FAULT)], now, 300_000)
            await store.store_samples(gw2, early, now)
            service.stored()
            await _until("early raised", 20, lambda: _active(store, "early"))
            assert not await _active(store, "late")
            await held.commit()
        service.stored()
        await _until("the late-committed fault raised", 20, lambda: _active(store, "late"))
        await service.stop()
    finally:
        await engine.dispose()


async def _active(store: Store, battery_id: str) -> bool:
    return bool(await store.tenant(1).alarms(active=True, battery_id=battery_id))


async def test_segment_ids_are_never_reused(tmp_path: Path) -> None:
    """SQLite hands out max(id) + 1 unless the table is AUTOINCREMENT: once compaction deleted the newest
    segments, new ones would get ids the feed has passed already and never be evaluated."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ids.db'}"
    await asyncio.to_thread(migrate, url, "head")
    engine = make_engine(url)
    try:
        row = {"stream_id": 1, "seq_min": 1, "seq_max": 1, "ts_min": 1, "ts_max": 1, "n": 1, "data": b"x"}
        async with engine.begin() as conn:
            for k in range(3):
                await conn.execute(sample_segments.insert().values(**{**row, "ts_min": k}))
            seen = (await conn.execute(select(sample_segments.c.id))).scalars().all()
            await conn.execute(delete(sample_segments))  # compaction took them all
            await conn.execute(sample_segments.insert().values(**{**row, "ts_min": 9}))
            new = (await conn.execute(select(sample_segments.c.id))).scalar_one()
        assert new > max(seen)
    finally:
        await engine.dispose()


def test_the_cursor_waits_for_skipped_ids_then_gives_them_up() -> None:
    c = FeedCursor(10, gap_wait_s=5)
    c.saw([11, 12, 15], now_s=100)
    assert (c.top, c.cursor, c.waiting(101)) == (15, 12, [13, 14])
    c.saw([14], now_s=102)  # a late commit fills a gap
    assert (c.cursor, c.waiting(102)) == (12, [13])
    c.saw([16], now_s=103)
    assert c.waiting(106) == []  # 13 missed since 100: a rolled-back insert, given up
    assert c.cursor == 16
    c.saw([17 + MAX_GAPS + 1], now_s=107)  # a jump is not a gap to wait for
    assert c.waiting(107) == [] and c.cursor == 17 + MAX_GAPS + 1


async def test_an_unreadable_segment_is_skipped_and_the_rest_evaluated(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bad.db'}"
    async with p.open_store(url) as store:
        await p.create_tenant(store, "acme")
        await p.create_site(store, "acme", "depot")
        await p.provision_device(store, "acme", "gw-1")
        for bid in ("damaged", "fine"):
            await p.create_battery(store, "acme", "depot", bid, device="gw-1")
    engine = make_engine(url)
    store = Store(engine)
    try:
        device = DeviceRef(1, 1, "gw-1", 0, None, None)
        now = int(time.time() * 1000)
        for bid in ("damaged", "fine"):
            batch, _ = packing.validate_batch([sample(bid, 1, **FAULT)], now, 300_000)
            await store.store_samples(device, batch, now)
        async with (
            engine.begin() as conn
        ):  # the first segment's rows cut short (a damaged page, a bad restore)
            await conn.execute(text("UPDATE sample_segments SET data = substr(data, 1, 30) WHERE id = 1"))
        service = AlarmService(store, interval_s=3600)
        service.start()
        await _until("the readable segment's fault raised", 20, lambda: _active(store, "fine"))
        await service.stop()
        assert not await _active(store, "damaged")
    finally:
        await engine.dispose()


async def test_an_alarm_acknowledged_through_another_process_sends_no_more_reminders(tmp_path: Path) -> None:
    """The API process that takes an acknowledgement may not be the one evaluating: the holder learns of it
    from the alarm row when the next reminder is due (no notification), and stops reminding."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'ack.db'}"
    async with p.open_store(url) as store:
        await p.create_tenant(store, "acme")
        await p.create_site(store, "acme", "depot")
        await p.provision_device(store, "acme", "gw-1")
        await p.create_battery(store, "acme", "depot", "pack", device="gw-1")
    engine = make_engine(url)
    store = Store(engine)
    try:
        tenant = store.tenant(1)
        await tenant.create_rule(
            {"rule_id": "soc_any", "metric": "soc_pct", "op": ">", "set": -1, "clear": -2, "repeat_s": 1}
        )
        notifier = Notifier(store)  # not run: what it would send waits in ``pending``
        service = AlarmService(store, interval_s=3600, notifier=notifier)  # not started: fed, ticked here
        for k in range(3):  # raised 60 s ago, reminders due 55 and 50 s ago (the samples' clock)
            service.submit(1, [sample("pack", k + 1, seconds_ago=60 - 5 * k)])
            await service.tick()
            if k == 0:
                (alarm,) = await tenant.alarms(active=True)
                await tenant.ack_alarm(alarm["id"], "ops@acme.test")  # through "another process"
        assert [(i["rule_id"], i["event"]) for i in notifier.pending[1]] == [("soc_any", "raised")]
        (alarm,) = await tenant.alarms(active=True)
        assert alarm["status"] == "acknowledged" and alarm["acknowledged_by"] == "ops@acme.test"
        tracks = service.batteries[(1, "pack")].samples_ev.active()
        assert [(a["rule_id"], a["status"]) for a in tracks] == [
            ("soc_any", "acknowledged")
        ]  # no more reminders
    finally:
        await engine.dispose()
