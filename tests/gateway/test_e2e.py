"""End to end: simulated packs → ``trackingbms gateway`` process → ``trackingbms server`` process over HTTP.

What a user would notice: every sample arrives exactly once whatever happens to the server, the uplink or
the gateway process; link problems with the BMS are reported, not fatal; the budget policy is visible.
Waits have generous ceilings; nothing asserts how fast something happened.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.sync.client import connect as ws_connect

from trackingbms.bms import COMMANDS

from .harness import gateway_config, gateway_seqs, wait_for

BATTERIES = ["pack-1", "pack-2", "pack-3"]


def bms_entries(packs, poll_interval_s: float, **extra) -> list[dict]:
    return [
        {
            "battery_id": bid,
            "port": packs.url(bid),
            "source": "sim",
            "poll_interval_s": poll_interval_s,
            "cadences_s": {"mos": 0, "cells": 2, "temps": 5, "status": 10, "faults": 2},
            "asleep_after_s": 2.0,
            "reconnect_max_s": 1.0,
            **extra,
        }
        for bid in packs.packs
    ]


def assert_exactly_once(srv, state_dir: Path, battery_ids: list[str]) -> dict[str, int]:
    """The server holds every seq the gateway ever took, once, and nothing else; seqs are contiguous."""
    taken = gateway_seqs(state_dir)
    counts = {}
    for bid in battery_ids:
        mine = taken.get(bid, [])
        assert mine, f"the gateway took no sample of {bid}"
        assert mine == list(range(mine[0], mine[0] + len(mine))), f"{bid}: gap or reuse in the gateway's seqs"
        at_server = srv.seqs(bid)
        assert len(at_server) == len(set(at_server)), f"{bid}: a seq is stored twice at the server"
        missing = sorted(set(mine) - set(at_server))
        extra = sorted(set(at_server) - set(mine))
        assert not missing, f"{bid}: {len(missing)} seqs never reached the server, e.g. {missing[:5]}"
        assert not extra, f"{bid}: the server holds seqs the gateway never took: {extra[:5]}"
        counts[bid] = len(mine)
    return counts


def drained(gw) -> bool:
    return gw.state()["gateway"]["queue_depth"] == 0


@pytest.mark.slow
def test_outage_two_minutes_every_seq_arrives_once(tmp_path, server, packs, gateway) -> None:
    sims = packs(BATTERIES)
    srv = server(BATTERIES)
    state_dir = tmp_path / "gw-state"
    gw = gateway(
        gateway_config(
            srv.device_token,
            state_dir,
            [{"name": "wifi", "url": srv.url, "batch_max_age_s": 0.5}],
            bms_entries(sims, 1.0),
        )
    )
    gw.start()
    wait_for("samples at the server", lambda: all(srv.seqs(b) for b in BATTERIES))
    srv.stop()
    outage_end = time.monotonic() + 120
    while time.monotonic() < outage_end:  # the packs keep being polled; the queue grows
        time.sleep(5)
        assert gw.proc.poll() is None, gw.log()
    queued = gw.state()["gateway"]["queue_depth"]
    assert queued >= 3 * 100, f"only {queued} samples queued during a 2 minute outage"
    assert "unreachable" in gw.log()
    srv.start()
    wait_for("the backlog to drain", lambda: drained(gw), timeout_s=120)
    time.sleep(1.5)
    assert gw.stop() == 0
    counts = assert_exactly_once(srv, state_dir, BATTERIES)
    assert all(n >= 120 for n in counts.values()), counts


#: both backends; PostgreSQL's run is marked slow (the same test again, on the backend keyed (stream, ts))
SQLITE_AND_SLOW_POSTGRES = pytest.mark.parametrize(
    "database",
    ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.slow])],
    indirect=True,
)


def readings_given(sims) -> dict[str, int]:
    """Per pack, the 0x90 readings the simulated BMS gave out (replies to a client's retry not counted)."""

    def count() -> dict[str, int]:
        return {
            bid: p.replies_by_id.get("0x90", 0) - p.repeats_by_id.get("0x90", 0)
            for bid, p in sims.packs.items()
        }

    return sims.loop.call(count)


def queue_rows(state_dir: Path) -> list[tuple[str, int, int, bool]]:
    """(battery_id, seq, acked state, carries 0x90's fields) of every sample in the gateway's queue file."""
    db = sqlite3.connect(state_dir / "queue.sqlite3")
    try:
        return [
            (bid, seq, acked, b'"voltage_v"' in body)
            for bid, seq, acked, body in db.execute("SELECT battery_id, seq, acked, body FROM samples")
        ]
    finally:
        db.close()


KILLS = 12


@pytest.mark.timeout(600)  # twelve gateway lifetimes on a loaded 2-core machine
@SQLITE_AND_SLOW_POSTGRES
def test_crash_sigkill_12_times_no_reading_lost_or_duplicated(
    tmp_path, database, server, packs, gateway
) -> None:
    """SIGKILLs of the gateway while it polls and uploads. Counted against what the simulated BMS
    actually answered, not only against the gateway's own seqs: a reading taken from the BMS and held in
    memory would be invisible in the seqs. At most the one reading in flight per pack may die with a kill."""
    sims = packs(BATTERIES)
    srv = server(BATTERIES, db_url=database)
    state_dir = tmp_path / "gw-state"
    cfg = gateway_config(
        srv.device_token,
        state_dir,
        [{"name": "wifi", "url": srv.url, "batch_max_age_s": 0.2, "batch_max_samples": 20}],
        # every command on every poll: 0x90 is asked second, so most kills land with a reading in flight,
        # and a held reading on top of it shows
        bms_entries(sims, 0.2, cadences_s={c: 0 for c in COMMANDS if c != "pack"}),
    )
    rng = random.Random(20)
    gw = gateway(cfg)
    newest = dict.fromkeys(BATTERIES, -1)  # the newest seq committed before this lifetime
    given_before = readings_given(sims)
    interrupted = 0  # kills that found samples not yet acknowledged by the server
    report = []

    def lifetime_ends(stop) -> None:
        nonlocal given_before, interrupted
        stop()
        # the simulator has read the dead gateway's last request once its connections are closed
        wait_for(
            "the simulator to see the gateway gone",
            lambda: not any(sims.loop.call(lambda e=e: e.connections) for e in sims.endpoints.values()),
        )
        given = readings_given(sims)
        rows = queue_rows(state_dir)
        interrupted += any(acked == 0 for *_, acked, _ in rows)
        for bid in BATTERIES:
            mine = [(seq, full) for b, seq, _, full in rows if b == bid and seq > newest[bid]]
            assert mine, f"lifetime {len(report)}: nothing committed for {bid}"
            committed = sum(full for _, full in mine)
            lost = given[bid] - given_before[bid] - committed
            report.append((bid, given[bid] - given_before[bid], committed))
            assert 0 <= lost <= 1, (
                f"lifetime {len(report)}: {bid}: the BMS gave {given[bid] - given_before[bid]} readings, "
                f"{committed} were committed: {lost} lost (at most the one in flight may be)"
            )
            newest[bid] = max(seq for seq, _ in mine)
        given_before = given

    for _ in range(KILLS):
        gw.start()
        wait_for(  # each lifetime polls for real before it dies: the kill never lands in start-up only
            "this lifetime's first sample of every pack",
            lambda: all(
                (b["latest"] or {}).get("seq", -1) > newest[b["battery_id"]] for b in gw.state()["batteries"]
            ),
        )
        time.sleep(rng.uniform(0.0, 1.5))
        lifetime_ends(gw.kill)
    assert interrupted >= 5, (
        f"only {interrupted} of 20 kills found unsent samples: the kills missed the uploads"
    )
    gw.start()
    wait_for("the gateway's local API", lambda: gw.state(), timeout_s=30)
    time.sleep(2)  # a few live polls after the last restart
    wait_for("the queue to drain", lambda: drained(gw), timeout_s=60)
    lifetime_ends(lambda: gw.stop() == 0 or pytest.fail(gw.log()))
    counts = assert_exactly_once(srv, state_dir, BATTERIES)
    assert sum(counts.values()) > 30, counts


@pytest.mark.timeout(600)  # three server restarts on a loaded 2-core machine
@SQLITE_AND_SLOW_POSTGRES
def test_server_sigkilled_during_uploads_keeps_every_sample_it_acknowledged(
    tmp_path, database, server, packs, gateway
) -> None:
    """docs/api.md: the ingest reply is sent after the commit. SIGKILL the server (no shutdown code runs)
    while batches are in flight, 3 times: every sample the gateway holds as acknowledged is at the server."""
    sims = packs(BATTERIES)
    srv = server(BATTERIES, db_url=database)
    state_dir = tmp_path / "gw-state"
    gw = gateway(
        gateway_config(
            srv.device_token,
            state_dir,
            [{"name": "wifi", "url": srv.url, "batch_max_age_s": 0.1, "batch_max_samples": 10}],
            bms_entries(sims, 0.1),
        )
    )
    gw.start()
    rng = random.Random(3)
    checked = 0
    for _ in range(3):
        before = checked
        wait_for(
            "new acknowledged samples",
            lambda: sum(st == 1 for *_, st, _ in queue_rows(state_dir)) > before + 20,  # noqa: B023
        )
        time.sleep(rng.uniform(0.0, 0.5))
        srv.kill()
        # nothing answers the gateway now: what it holds as acknowledged can only have been acked before
        acked = {(bid, seq) for bid, seq, st, _ in queue_rows(state_dir) if st == 1}
        srv.start()
        at_server = {(bid, seq) for bid in BATTERIES for seq in srv.seqs(bid)}
        lost = sorted(acked - at_server)
        assert not lost, f"{len(lost)} acknowledged samples gone after a SIGKILL of the server: {lost[:5]}"
        checked = len(acked)
    assert "unreachable" in gw.log()  # the kills did cut uploads
    wait_for("the queue to drain", lambda: drained(gw), timeout_s=120)
    assert gw.stop() == 0
    assert_exactly_once(srv, state_dir, BATTERIES)


def test_failover_to_cellular_and_failback(loop_thread, tmp_path, server, packs, gateway) -> None:
    from .harness import TcpProxy

    sims = packs(["pack-1"])
    srv = server(["pack-1"])
    wifi = TcpProxy(loop_thread, srv.port)  # the wifi route to the server; cut() drops it
    state_dir = tmp_path / "gw-state"
    gw = gateway(
        gateway_config(
            srv.device_token,
            state_dir,
            [
                {"name": "wifi", "url": wifi.url, "batch_max_age_s": 0.3, "timeout_s": 2},
                {"name": "cellular", "url": srv.url, "batch_max_age_s": 2.0, "batch_max_samples": 5000},
            ],
            bms_entries(sims, 0.25),
            failover={"after_s": 2.0, "probe_interval_s": 1.0},
        )
    )
    gw.start()

    def vias() -> list[str]:
        return [row["via"] for row in srv.export("pack-1")]

    wait_for("samples via wifi", lambda: "wifi" in vias())
    wifi.cut()
    wait_for("the gateway to fail over", lambda: gw.state()["gateway"]["uplink"] == "cellular")
    wait_for("samples via cellular", lambda: "cellular" in vias())
    wait_for(
        "the server to hear the uplink changed",
        lambda: (srv.device_info().get("heartbeat") or {}).get("uplink") == "cellular",
    )
    before = len(vias())
    wifi.restore()
    wait_for("the gateway to fail back", lambda: gw.state()["gateway"]["uplink"] == "wifi")
    wait_for("new samples via wifi again", lambda: "wifi" in vias()[before:])
    assert "switching from wifi to cellular" in gw.log()
    assert "switching from cellular to wifi" in gw.log()
    wait_for("the queue to drain", lambda: drained(gw))
    assert gw.stop() == 0
    assert_exactly_once(srv, state_dir, ["pack-1"])


def test_bms_asleep_and_unplugged_are_reported_and_recover(tmp_path, server, packs, gateway) -> None:
    sims = packs(["pack-1", "pack-2"])
    srv = server(["pack-1", "pack-2"])
    gw = gateway(
        gateway_config(
            srv.device_token,
            tmp_path / "gw-state",
            [{"name": "wifi", "url": srv.url, "batch_max_age_s": 0.3}],
            bms_entries(sims, 0.25),
        )
    )
    gw.start()

    def link(bid: str) -> str:
        return next(b for b in gw.state()["batteries"] if b["battery_id"] == bid)["link_state"]

    def server_link(bid: str) -> str | None:
        hb = srv.device_info().get("heartbeat") or {}
        return next((b["link_state"] for b in hb.get("batteries", []) if b["battery_id"] == bid), None)

    wait_for("both links ok", lambda: link("pack-1") == "ok" and link("pack-2") == "ok")
    sims.sleep("pack-1")
    sims.unplug("pack-2")
    wait_for("pack-1 asleep", lambda: link("pack-1") == "asleep")
    wait_for("pack-2 disconnected", lambda: link("pack-2") == "disconnected")
    wait_for(
        "the server told",
        lambda: server_link("pack-1") == "asleep" and server_link("pack-2") == "disconnected",
    )
    state = gw.state()["batteries"]
    assert "no reply" in next(b for b in state if b["battery_id"] == "pack-1")["last_error"]
    assert "cannot connect" in next(b for b in state if b["battery_id"] == "pack-2")["last_error"]
    assert gw.proc.poll() is None  # no crash
    n1, n2 = len(srv.seqs("pack-1")), len(srv.seqs("pack-2"))
    sims.wake("pack-1")
    sims.plug("pack-2")
    wait_for("both links ok again", lambda: link("pack-1") == "ok" and link("pack-2") == "ok", timeout_s=60)
    wait_for("the server told", lambda: server_link("pack-1") == "ok" and server_link("pack-2") == "ok")
    wait_for("new samples from both", lambda: len(srv.seqs("pack-1")) > n1 and len(srv.seqs("pack-2")) > n2)
    assert gw.stop() == 0


def test_disk_budget_policy_applied_and_reported(tmp_path, server, packs, gateway) -> None:
    sims = packs(BATTERIES)
    srv = server(BATTERIES)
    srv.stop()  # the server is away: the queue grows until the budget bites
    gw = gateway(
        gateway_config(
            srv.device_token,
            tmp_path / "gw-state",
            [{"name": "wifi", "url": srv.url}],
            bms_entries(sims, 0.1, cadences_s={"cells": 0, "mos": 0, "temps": 0}),
            disk_budget_mb=0.07,
        )
    )
    gw.start()
    wait_for("samples to be thinned", lambda: gw.state()["gateway"]["thinned_total"] > 0, timeout_s=120)
    assert "disk budget reached" in gw.log()
    assert gw.state()["gateway"]["disk_used_pct"] >= 80
    newest = {b["battery_id"]: b["latest"]["seq"] for b in gw.state()["batteries"]}
    srv.start()
    wait_for(
        "the heartbeat to report the budget",
        lambda: (srv.device_info().get("heartbeat") or {}).get("thinned_total", 0) > 0,
    )
    hb = srv.device_info()["heartbeat"]
    assert hb["disk_used_pct"] > 0
    # the newest samples are never the ones dropped: what was newest when the budget bit reaches the
    # server, or (when the budget bit again while the server came back and that sample had become one of
    # the oldest) a newer one does, and the server ends up with everything the gateway reads from now on
    wait_for(
        "the newest samples at the server",
        lambda: all(max(srv.seqs(b), default=-1) >= newest[b] for b in BATTERIES),
    )
    wait_for("the queue to drain", lambda: gw.state()["gateway"]["queue_depth"] <= len(BATTERIES) * 2)
    assert gw.stop() == 0


def test_unreachable_server_and_bad_token_give_clear_messages(tmp_path, server, packs, gateway) -> None:
    from .harness import free_port

    sims = packs(["pack-1"])
    dead_url = f"http://127.0.0.1:{free_port()}"
    gw = gateway(
        gateway_config(
            "tbms-not-a-token", tmp_path / "a", [{"name": "wifi", "url": dead_url}], bms_entries(sims, 0.5)
        )
    )
    gw.start()
    wait_for(
        "the unreachable message", lambda: f"uplink wifi ({dead_url}) unreachable: cannot connect" in gw.log()
    )
    wait_for("samples kept", lambda: gw.state()["gateway"]["queue_depth"] > 0)
    assert gw.stop() == 0

    srv = server(["pack-1"])
    gw2 = gateway(
        gateway_config(
            "tbms-not-a-token", tmp_path / "b", [{"name": "wifi", "url": srv.url}], bms_entries(sims, 0.5)
        )
    )
    gw2.start()
    wait_for("the bad token message", lambda: "device token refused (401" in gw2.log())
    assert "check device_token" in gw2.log()
    assert gw2.stop() == 0


def test_local_api_state_history_live_page_token_and_remote_config(tmp_path, server, packs, gateway) -> None:
    sims = packs(["pack-1"])
    srv = server(["pack-1"])
    state_dir = tmp_path / "gw-state"
    cfg = gateway_config(
        srv.device_token,
        state_dir,
        [{"name": "wifi", "url": srv.url, "batch_max_age_s": 0.3}],
        bms_entries(sims, 0.5),
    )
    cfg["local_api"]["token"] = "lan-secret"
    gw = gateway(cfg)
    gw.start()
    base = gw.local_url
    auth = {"Authorization": "Bearer lan-secret"}
    wait_for("the local API", lambda: httpx.get(base + "/local/v1/state", headers=auth).status_code == 200)
    assert httpx.get(base + "/local/v1/state").status_code == 401
    assert httpx.get(base + "/local/v1/state?token=wrong").status_code == 401

    page = httpx.get(base + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    # the web app itself (direct mode), with every asset from the gateway: works with no internet
    assert 'src="/static/js/app.js"' in page.text and "https://" not in page.text
    assert httpx.get(base + "/static/js/app.js").status_code == 200  # the files carry no data: no token
    status = httpx.get(base + "/local/v1/state", headers=auth).json()["gateway"]
    assert status["server_urls"] == [srv.url]
    assert [u["name"] for u in status["uplinks"]] == ["wifi", "phone"]  # the phone: the last resort

    wait_for(
        "a sample", lambda: httpx.get(base + "/local/v1/state", headers=auth).json()["batteries"][0]["latest"]
    )
    state = httpx.get(base + "/local/v1/state", headers=auth).json()
    pack = state["batteries"][0]
    assert pack["battery_id"] == "pack-1" and pack["link_state"] == "ok"
    assert pack["latest"]["voltage_v"] > 0 and pack["latest"]["source"] == "sim"
    # which path the data took: the server acknowledged samples sent over wifi
    gateway_via = lambda: httpx.get(base + "/local/v1/state", headers=auth).json()["gateway"]["via"]  # noqa: E731
    wait_for("via = wifi", lambda: gateway_via() == "wifi")
    # and the server hears it in the heartbeat (the paths in priority order, the phone last)
    beat = wait_for(
        "a heartbeat with via",
        lambda: (srv.device_info().get("heartbeat") or {}).get("via") and srv.device_info()["heartbeat"],
    )
    assert beat["via"] == "wifi" and [u["name"] for u in beat["uplinks"]] == ["wifi", "phone"]

    with ws_connect(base.replace("http", "ws") + "/local/v1/live?token=lan-secret") as ws:
        first = orjson.loads(ws.recv(timeout=10))
        assert first["type"] == "state"
        seen = orjson.loads(ws.recv(timeout=10))
        while seen["type"] != "sample":
            seen = orjson.loads(ws.recv(timeout=10))
        assert seen["battery_id"] == "pack-1" and seen["sample"]["seq"] > pack["latest"]["seq"] - 1
    since = pack["latest"]["ts"]
    whole_second = since[:19] + "Z"  # no milliseconds: still compared as a time
    older = httpx.get(base + "/local/v1/history", params={"since": whole_second}, headers=auth).json()
    assert pack["latest"]["seq"] in [s["seq"] for s in older["samples"]]
    wait_for(
        "history after since",
        lambda: (
            len(
                httpx.get(base + "/local/v1/history", params={"since": since}, headers=auth).json()["samples"]
            )
            >= 2
        ),
    )
    hist = httpx.get(base + "/local/v1/history", params={"since": since}, headers=auth).json()["samples"]
    assert all(s["ts"] >= since for s in hist)
    assert [s["seq"] for s in hist] == sorted(s["seq"] for s in hist)
    assert (
        httpx.get(base + "/local/v1/history", params={"since": "yesterday"}, headers=auth).status_code == 400
    )

    # remote configuration: the server hands new cadences; the gateway applies, persists and echoes them
    version = srv.set_config(
        {
            "heartbeat_interval_s": 1.0,
            "batteries": {"pack-1": {"poll_interval_s": 0.3, "cadences_s": {"cells": 1}}},
        }
    )["config_version"]

    def applied() -> bool:
        st = httpx.get(base + "/local/v1/state", headers=auth).json()
        return st["gateway"]["config_version"] == version and st["batteries"][0]["poll_interval_s"] == 0.3

    wait_for("the remote config applied", applied)
    wait_for("the version echoed", lambda: srv.device_info().get("reported_config_version") == version)
    assert gw.stop() == 0
    gw.start()  # persisted: the restarted gateway runs the remote config before hearing from the server
    wait_for("restart", lambda: httpx.get(base + "/local/v1/state", headers=auth).status_code == 200)
    assert applied()
    assert gw.stop() == 0


def test_unassigned_battery_parked_then_delivered_invalid_sample_dead_lettered(
    tmp_path, server, packs, gateway
) -> None:
    import sqlite3
    from datetime import UTC, datetime, timedelta

    from trackingbms.gateway.queue import DurableQueue
    from trackingbms.model import Reading
    from trackingbms.server import provisioning as p

    sims = packs(["pack-1", "pack-x"])
    srv = server(["pack-1"])  # pack-x is not assigned to this device yet: the server rejects its samples
    state_dir = tmp_path / "gw-state"
    # a sample that can never be valid (ts beyond what the server accepts), taken before this start
    q = DurableQueue(state_dir)
    bad_seq = q.put("pack-1", Reading(ts=datetime.now(UTC) + timedelta(days=3), voltage_v=52.0)).seq
    q.close()
    gw = gateway(
        gateway_config(
            srv.device_token,
            state_dir,
            [{"name": "wifi", "url": srv.url, "batch_max_age_s": 0.3}],
            bms_entries(sims, 0.5),
            parked_retry_s=1.0,
        )
    )
    gw.start()
    wait_for("parked samples", lambda: gw.state()["gateway"]["parked_count"] >= 3)
    wait_for("pack-1 samples at the server", lambda: len(srv.seqs("pack-1")) >= 3)
    wait_for("the queue to drain", lambda: drained(gw))  # parked samples do not block the queue
    wait_for(
        "the heartbeat to report them", lambda: (srv.device_info().get("heartbeat") or {}).get("parked_count")
    )
    assert gw.state()["gateway"]["dead_letter_count"] == 1
    assert "server rejected pack-x: battery_id: 'pack-x' is not assigned" in gw.log()
    assert "parked" in gw.log()

    # the operator assigns the battery while the gateway runs: every parked sample arrives
    asyncio.run(p.create_battery(srv.db_url, "acme", "depot", "pack-x", device=srv.device))
    wait_for("parked samples delivered", lambda: gw.state()["gateway"]["parked_count"] == 0)
    wait_for("pack-x samples at the server", lambda: len(srv.seqs("pack-x")) >= 3)
    wait_for("the queue to drain", lambda: drained(gw))
    assert gw.stop() == 0
    db = sqlite3.connect(state_dir / "queue.sqlite3")
    rows = db.execute("SELECT battery_id, seq, reason FROM dead_letter").fetchall()
    db.close()
    assert [(bid, seq) for bid, seq, _ in rows] == [("pack-1", bad_seq)]
    assert rows[0][2].startswith("ts:"), rows
    assert f"server rejected pack-1 seq {bad_seq}: ts:" in gw.log()
    assert_exactly_once(srv, state_dir, ["pack-1", "pack-x"])


def test_replay_dead_letters_sends_them_exactly_once(tmp_path, server, packs, gateway) -> None:
    import subprocess
    from datetime import UTC, datetime, timedelta

    from trackingbms.gateway.queue import DurableQueue
    from trackingbms.model import Reading

    from .harness import CLI

    sims = packs(["pack-1"])
    srv = server(["pack-1"])
    state_dir = tmp_path / "gw-state"
    # what an older gateway did with samples taken before the battery was assigned: dead letters
    q = DurableQueue(state_dir)
    start = datetime.now(UTC) - timedelta(seconds=10)
    seqs = [q.put("pack-1", Reading(ts=start + timedelta(seconds=i), voltage_v=52.0)).seq for i in range(3)]
    reason = "battery_id: 'pack-1' is not assigned to this device"
    q.dead_letter([(r, reason) for r in q.fetch(newest=0, oldest=10)])
    q.close()
    gw = gateway(
        gateway_config(
            srv.device_token,
            state_dir,
            [{"name": "wifi", "url": srv.url, "batch_max_age_s": 0.3}],
            bms_entries(sims, 0.5),
        )
    )
    replay = [*CLI, "gateway", "-c", str(gw.config_path), "--replay-dead-letters"]
    out = subprocess.run(replay, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "3 dead-letter samples moved back to the queue" in out.stdout
    gw.start()
    wait_for("the replayed samples at the server", lambda: set(seqs) <= set(srv.seqs("pack-1")))
    wait_for("the queue to drain", lambda: drained(gw))
    assert gw.state()["gateway"]["dead_letter_count"] == 0
    busy = subprocess.run(replay, capture_output=True, text=True, timeout=60)  # not under a running gateway
    assert busy.returncode == 1 and "another gateway is running" in busy.stderr
    assert gw.stop() == 0
    assert_exactly_once(srv, state_dir, ["pack-1"])


def test_rate_limited_429_retry_after_honoured_nothing_lost(tmp_path, server, packs, gateway) -> None:
    sims = packs(BATTERIES)
    srv = server(BATTERIES, TRACKINGBMS_INGEST_RATE_PER_S="2", TRACKINGBMS_INGEST_BURST="2")
    state_dir = tmp_path / "gw-state"
    gw = gateway(
        gateway_config(
            srv.device_token,
            state_dir,
            [{"name": "wifi", "url": srv.url, "batch_max_age_s": 0.0, "batch_max_samples": 10}],
            bms_entries(sims, 0.1),
        )
    )
    gw.start()
    wait_for("rate limiting", lambda: "rate limited" in gw.log())
    wait_for("samples still arriving", lambda: all(len(srv.seqs(b)) > 5 for b in BATTERIES))
    for bid in BATTERIES:  # no new samples: the queue can empty at the pace the server allows
        sims.unplug(bid)
    wait_for("the queue to drain under rate limiting", lambda: drained(gw), timeout_s=120)
    assert gw.stop() == 0
    assert_exactly_once(srv, state_dir, BATTERIES)


def test_serial_port_pty(tmp_path, server, packs, gateway) -> None:
    sims = packs(["pack-1"])
    sims.unplug("pack-1")
    path = sims.plug_pty("pack-1")
    srv = server(["pack-1"])
    entries = bms_entries(sims, 0.3)
    entries[0]["port"] = path
    entries[0]["source"] = "a5-uart"
    gw = gateway(
        gateway_config(
            srv.device_token,
            tmp_path / "gw",
            [{"name": "wifi", "url": srv.url, "batch_max_age_s": 0.3}],
            entries,
        )
    )
    gw.start()
    wait_for("samples over the pty", lambda: len(srv.seqs("pack-1")) >= 3)
    rows = srv.export("pack-1")
    assert rows[-1]["source"] == "a5-uart" and float(rows[-1]["voltage_v"]) > 0
    assert gw.stop() == 0


def test_local_state_keeps_every_field_between_full_readings(tmp_path, server, packs, gateway) -> None:
    """Most polls read only "pack"; the local state must still show the newest cells, temps and faults."""
    sims = packs(["pack-1"])
    srv = server(["pack-1"])
    gw = gateway(
        gateway_config(
            srv.device_token,
            tmp_path / "gw-state",
            [{"name": "wifi", "url": srv.url, "batch_max_age_s": 0.3}],
            bms_entries(sims, 0.2, cadences_s={"cells": 2, "temps": 2, "faults": 2}),
        )
    )
    gw.start()
    base = gw.local_url

    def latest() -> dict:
        return gw.state()["batteries"][0]["latest"] or {}

    wait_for("a full reading", lambda: "cells_mv" in latest() and "faults" in latest())
    seen = []
    for _ in range(20):  # spans several partial polls between two full readings
        state = latest()
        assert len(state["cells_mv"]) == 8 and state["temps_c"] and state["faults"] == [], state
        seen.append(state)
        time.sleep(0.15)
    history = httpx.get(base + "/local/v1/history", params={"limit": 10000}).json()["samples"]
    by_seq = {s["seq"]: s for s in history}
    # the polls in between really were partial: without merging, the state would have lost these fields
    assert any("cells_mv" not in by_seq[s["seq"]] for s in seen if s["seq"] in by_seq)
    for s in seen:  # ts (and seq) are the newest sample's
        assert by_seq[s["seq"]]["ts"] == s["ts"]
    with ws_connect(base.replace("http", "ws") + "/local/v1/live") as ws:
        event = orjson.loads(ws.recv(timeout=10))
        while event["type"] != "sample" or "cells_mv" in event["sample"]:
            event = orjson.loads(ws.recv(timeout=10))
        assert event["latest"]["seq"] == event["sample"]["seq"] and len(event["latest"]["cells_mv"]) == 8
    assert gw.stop() == 0
