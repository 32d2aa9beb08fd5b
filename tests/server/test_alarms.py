"""Alarms end to end over HTTP on both backends: samples ingested → alarm raised (naming the cell) →
acknowledged (by whom) → cleared, one active per (battery, rule), history kept; rules edited by writers
only; no-data alarms from the timer; notifications to a real SMTP server and a real HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from tests.server.conftest import ServerThread, World, client, provision, sample

from trackingbms.server import provisioning as p


@pytest.fixture
async def fast_world(start_server: Callable[..., ServerThread], database_url: str) -> AsyncIterator[World]:
    """The two-tenant world with a fast alarm timer and notification grouping."""
    server = await asyncio.to_thread(start_server, alarm_interval_s=0.3, notify_group_s=0.5)
    async with p.open_store(database_url) as store:
        a = await provision(store, server.base_url, "acme")
        b = await provision(store, server.base_url, "globex")
    yield World(server.base_url, database_url, a, b, server)


async def ingest(w: World, token: str, samples: list[dict[str, Any]]) -> None:
    async with client(w.base_url, token) as c:
        r = await c.post("/api/v1/ingest", json={"samples": samples})
        assert r.status_code == 200, r.text
        assert not r.json().get("rejected"), r.text


async def wait_for(
    fetch: Callable[[], Any], ok: Callable[[Any], bool], what: str, limit_s: float = 60
) -> Any:
    """Poll until ``ok`` (evaluation runs off the request path); the limit only stops a hung test."""
    deadline = time.monotonic() + limit_s
    while True:
        value = await fetch()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {what}: {value}")
        await asyncio.sleep(0.1)


async def alarms(w: World, token: str, **params: Any) -> list[dict[str, Any]]:
    async with client(w.base_url, token) as c:
        r = await c.get("/api/v1/alarms", params=params)
        assert r.status_code == 200, r.text
        return r.json()


def cells_with(cell: int, mv: int) -> list[int]:
    cells = [3300] * 16
    cells[cell - 1] = mv
    return cells


async def test_fault_alarm_raised_acknowledged_cleared_with_history(fast_world: World) -> None:
    w, a = fast_world, fast_world.a
    bid = a.batteries[0]
    await ingest(
        w,
        a.device,
        [sample(bid, 1, cells_mv=cells_with(5, 3700), faults=["cell_voltage_high_l2"], fault_code=1)],
    )
    active = await wait_for(lambda: alarms(w, a.viewer, active="true"), lambda x: len(x) == 1, "raised")
    alarm = active[0]
    assert alarm["rule_id"] == "fault:cell_voltage_high_l2"
    assert alarm["severity"] == "critical" and alarm["status"] == "raised"
    assert alarm["cell"] == 5 and "cell 5" in alarm["message"]
    assert alarm["battery_id"] == bid and alarm["site"] == "depot"
    # the same fault again (and a re-send of the first sample) does not raise a second alarm
    await ingest(w, a.device, [sample(bid, 2, cells_mv=cells_with(5, 3710), faults=["cell_voltage_high_l2"])])
    # viewers read but may not acknowledge
    async with client(w.base_url, a.viewer) as c:
        assert (await c.post(f"/api/v1/alarms/{alarm['id']}/ack")).status_code == 403
    async with client(w.base_url, a.admin) as c:
        r = await c.post(f"/api/v1/alarms/{alarm['id']}/ack")
        assert r.status_code == 200, r.text
        acked = r.json()
        assert acked["status"] == "acknowledged" and acked["acknowledged_by"] == "admin@acme.test"
        assert acked["acknowledged_at"] is not None
    # the other tenant sees none of it
    assert await alarms(w, w.b.admin) == []
    # the fault goes away: the alarm clears and stays in the history
    await ingest(w, a.device, [sample(bid, 3, faults=[])])
    hist = await wait_for(
        lambda: alarms(w, a.viewer, active="false"), lambda x: len(x) == 1, "cleared in history"
    )
    assert hist[0]["id"] == alarm["id"] and hist[0]["status"] == "cleared"
    assert hist[0]["acknowledged_by"] == "admin@acme.test" and hist[0]["cleared_at"] is not None
    assert await alarms(w, a.viewer, active="true") == []
    # it trips again: a new alarm, the old one kept
    await ingest(w, a.device, [sample(bid, 4, faults=["cell_voltage_high_l2"])])
    every = await wait_for(lambda: alarms(w, a.viewer), lambda x: len(x) == 2, "second alarm")
    assert every[0]["active"] and not every[1]["active"]  # active first


async def test_threshold_rule_with_override_and_filters(fast_world: World) -> None:
    w, a = fast_world, fast_world.a
    p1, p2 = a.batteries[0], a.batteries[1]
    async with client(w.base_url, a.viewer) as c:
        rules = (await c.get("/api/v1/alarm-rules")).json()
        assert {r["id"] for r in rules["builtin"]} >= {"cell_spread", "offline", "link_down", "bms_asleep"}
        assert all(r["rule_id"] == r["id"] for r in rules["builtin"])  # named as an override names them
        r = await c.post("/api/v1/alarm-rules", json={"rule_id": "cell_spread", "set": 50})
        assert r.status_code == 403
    async with client(w.base_url, a.admin) as c:
        # spread alarm at 50 mV with no delay, for pack 1 only
        r = await c.post(
            "/api/v1/alarm-rules",
            json={"rule_id": "cell_spread", "battery_id": p1, "set": 50, "clear": 30, "set_delay_s": 0},
        )
        assert r.status_code == 201, r.text
        rule = r.json()
        assert rule["scope"] == "battery" and rule["battery_id"] == p1
        # clear on the wrong side of set is refused with a clear message
        bad = await c.put(f"/api/v1/alarm-rules/{rule['id']}", json={"clear": 80})
        assert bad.status_code == 422 and "safe side" in bad.text
        # a rule of one's own needs a metric
        bad = await c.post("/api/v1/alarm-rules", json={"rule_id": "mine", "set": 1})
        assert bad.status_code == 422 and "metric" in bad.text
        # another tenant's battery does not exist here
        r = await c.post(
            "/api/v1/alarm-rules", json={"rule_id": "cell_spread", "battery_id": w.b.batteries[0]}
        )
        assert r.status_code == 404
    spread = cells_with(3, 3370)  # 70 mV
    await ingest(w, a.device, [sample(p1, 1, cells_mv=spread), sample(p2, 1, cells_mv=spread)])
    got = await wait_for(lambda: alarms(w, a.viewer, active="true"), lambda x: len(x) == 1, "spread alarm")
    assert (
        got[0]["battery_id"] == p1 and got[0]["rule_id"] == "cell_spread" and got[0]["severity"] == "warning"
    )
    assert await alarms(w, a.viewer, severity="critical") == []
    assert len(await alarms(w, a.viewer, severity="warning", site="depot")) == 1
    assert await alarms(w, a.viewer, site="elsewhere") == []
    # the fleet list counts it
    async with client(w.base_url, a.viewer) as c:
        fleet = {b["battery_id"]: b for b in (await c.get("/api/v1/fleet")).json()["batteries"]}
    assert fleet[p1]["active_alarms"] == 1 and fleet[p1]["worst_severity"] == "warning"
    assert fleet[p2]["active_alarms"] == 0
    # switching the rule off for that pack clears its alarm
    async with client(w.base_url, a.admin) as c:
        r = await c.put(f"/api/v1/alarm-rules/{rule['id']}", json={"enabled": False})
        assert r.status_code == 200 and r.json()["enabled"] is False
    await wait_for(lambda: alarms(w, a.viewer, active="true"), lambda x: x == [], "alarm cleared")
    async with client(w.base_url, a.admin) as c:
        assert (await c.delete(f"/api/v1/alarm-rules/{rule['id']}")).status_code == 204
        assert (await c.delete(f"/api/v1/alarm-rules/{rule['id']}")).status_code == 404


async def test_no_data_alarm_from_the_timer_and_health(
    start_server: Callable[..., ServerThread], database_url: str
) -> None:
    server = await asyncio.to_thread(
        start_server, alarm_interval_s=0.3, offline_timeout_s=1.0, online_grace_s=0.1
    )
    async with p.open_store(database_url) as store:
        a = await provision(store, server.base_url, "acme")
    w = World(server.base_url, database_url, a, a, server)
    async with client(w.base_url, a.admin) as c:
        r = await c.post(
            "/api/v1/alarm-rules", json={"rule_id": "offline", "set": 2, "clear": 0, "severity": "critical"}
        )
        assert r.status_code == 201, r.text
    await ingest(w, a.device, [sample(a.batteries[0], 1)])
    got = await wait_for(lambda: alarms(w, a.viewer, active="true"), lambda x: len(x) == 1, "offline alarm")
    assert got[0]["rule_id"] == "offline" and "gateway offline" in got[0]["message"]
    # data again: it clears
    await ingest(w, a.device, [sample(a.batteries[0], 2)])
    await wait_for(lambda: alarms(w, a.viewer, active="true"), lambda x: x == [], "offline cleared")
    async with client(w.base_url, a.viewer) as c:
        h = await wait_for(
            lambda: c.get(f"/api/v1/batteries/{a.batteries[0]}/health"),
            lambda r: r.json()["health"] is not None,
            "health report",
        )
        body = h.json()
        assert body["health"]["samples"] >= 2 and "reasons" in body["health"]
        assert (await c.get("/api/v1/batteries/globex-p1/health")).status_code == 404


# ---- notifications -----------------------------------------------------------------------------------


class Inbox:
    def __init__(self) -> None:
        self.messages: list[str] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope.content.decode("utf-8", "replace"))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    with socket.socket() as s:  # a free port (the controller's own readiness check needs a real one)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctl = Controller(inbox, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield inbox, port
    finally:
        ctl.stop()


@pytest.fixture
def webhook() -> Iterator[tuple[list[dict[str, Any]], int]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield received, httpd.server_address[1]
    finally:
        httpd.shutdown()


#: the grouping window of the notification test: two gateways' batches evaluated on a loaded machine can be
#: more than 0.5 s apart (the test failed so at load 10-13); the product's default is 5 s
GROUP_S = 3.0


async def test_notifications_grouped_one_per_crossing_smtp_and_webhook(
    start_server: Callable[..., ServerThread],
    database_url: str,
    smtp: tuple[Inbox, int],
    webhook: tuple[list[dict[str, Any]], int],
) -> None:
    server = await asyncio.to_thread(start_server, alarm_interval_s=0.3, notify_group_s=GROUP_S)
    async with p.open_store(database_url) as store:
        a = await provision(store, server.base_url, "acme")
    w = World(server.base_url, database_url, a, a, server)
    inbox, smtp_port = smtp
    hooks, hook_port = webhook
    async with client(w.base_url, a.admin) as c:
        mail = f"mailto://127.0.0.1:{smtp_port}?from=bms@acme.test&to=ops@acme.test"
        r = await c.post("/api/v1/notify-targets", json={"url": mail, "severities": ["critical"]})
        assert r.status_code == 201, r.text
        r = await c.post(
            "/api/v1/notify-targets",
            json={"url": f"json://127.0.0.1:{hook_port}/hook", "severities": ["critical"], "recovery": False},
        )
        assert r.status_code == 201, r.text
        assert (await c.post("/api/v1/notify-targets", json={"url": "nonsense"})).status_code == 422
    async with client(w.base_url, a.viewer) as c:
        assert (await c.get("/api/v1/notify-targets")).status_code == 403  # URLs may hold credentials
    # three packs trip at once: one message per target naming all three
    fault = {"faults": ["discharge_overcurrent_l2"]}
    await ingest(w, a.device, [sample(a.batteries[0], 1, **fault), sample(a.batteries[1], 1, **fault)])
    await ingest(w, a.device2, [sample(a.batteries[2], 1, **fault)])
    await wait_for(lambda: asyncio.sleep(0, len(inbox.messages)), lambda n: n >= 1, "an e-mail")
    await wait_for(lambda: asyncio.sleep(0, len(hooks)), lambda n: n >= 1, "a webhook")
    # the fault persists in later samples: no new message (one per crossing)
    await ingest(w, a.device, [sample(a.batteries[0], 2, **fault)])
    await asyncio.sleep(GROUP_S + 1.0)  # longer than the grouping window: a message would have gone by now
    assert len(inbox.messages) == 1 and len(hooks) == 1
    text = inbox.messages[0]
    for bid in a.batteries:
        assert bid in text
    assert "3 raised on 3 packs" in text
    assert "acme-p1" in hooks[0]["message"] and "3 raised" in hooks[0]["title"]
    assert hooks[0]["type"] == "failure"  # critical: a webhook filtering on type sees it (was "info")
    # recovery of one pack: e-mail target wants recoveries, the webhook does not
    await ingest(w, a.device, [sample(a.batteries[0], 3, faults=[])])
    await wait_for(lambda: asyncio.sleep(0, len(inbox.messages)), lambda n: n >= 2, "a recovery e-mail")
    assert "cleared" in inbox.messages[1] and "acme-p1" in inbox.messages[1]
    await asyncio.sleep(1.0)  # the recovery e-mail went: its group is closed, a webhook would have gone too
    assert len(hooks) == 1


async def test_a_battery_profile_picks_the_thresholds_and_the_health_engines_capacity(
    start_server: Callable[..., ServerThread], database_url: str
) -> None:
    """Cells at 4.10-4.15 V: a full NMC pack, an LFP pack far past its limit. The pack registered as NMC
    raises nothing; the one with no chemistry (LFP thresholds) raises over-voltage; once its admin sets it to
    NMC from another process (the CLI), the server picks the change up and the alarm clears. The health
    report runs on the profile's chemistry and rated capacity."""
    server = await asyncio.to_thread(start_server, alarm_interval_s=0.3, rules_check_s=0.2)
    async with p.open_store(database_url) as store:
        a = await provision(store, server.base_url, "acme")
    w = World(server.base_url, database_url, a, a, server)
    nmc, unset = a.batteries[0], a.batteries[1]
    assert (await p.set_battery_profile(database_url, "acme", nmc, "nmc", 20.0))["chemistry"] == "nmc"
    full_nmc = [4150] * 16
    await ingest(
        w,
        a.device,
        [
            sample(b, k, seconds_ago=600 - k, cells_mv=full_nmc, soc_pct=99.0)
            for b in (nmc, unset)
            for k in range(15)
        ],
    )
    raised = await wait_for(
        lambda: alarms(w, a.viewer, active="true"),
        lambda x: any(al["battery_id"] == unset and al["rule_id"] == "cell_voltage_high" for al in x),
        "the LFP thresholds' over-voltage alarm",
    )
    assert all(al["battery_id"] != nmc for al in raised if al["rule_id"].startswith("cell_voltage")), raised

    async with client(w.base_url, a.viewer) as c:
        detail = (await c.get(f"/api/v1/batteries/{nmc}")).json()
        assert (detail["chemistry"], detail["rated_capacity_ah"]) == ("nmc", 20.0)
        assert (await c.get(f"/api/v1/batteries/{unset}")).json()["chemistry"] is None

        async def health() -> Any:
            return (await c.get(f"/api/v1/batteries/{nmc}/health")).json()["health"] or {}

        report = await wait_for(health, lambda h: h.get("samples", 0) >= 15, "the NMC pack's health report")
        assert (report["chemistry"], report["rated_capacity_ah"]) == ("nmc", 20.0)

    # the admin sets the other pack's chemistry (another process): under NMC's clear (4,120 mV) its alarm
    # clears after the rule's clear delay (60 s of samples); under LFP's it never would
    await p.set_battery_profile(database_url, "acme", unset, "nmc", None)
    k = 100
    for _ in range(20):
        await ingest(
            w,
            a.device,
            [sample(unset, k + i, seconds_ago=500 - k - i, cells_mv=[4100] * 16) for i in range(20)],
        )
        k += 20
        active = await alarms(w, a.viewer, active="true")
        if not any(al["battery_id"] == unset and al["rule_id"] == "cell_voltage_high" for al in active):
            break
        await asyncio.sleep(0.3)
    else:
        raise AssertionError(f"the over-voltage alarm stayed under NMC's thresholds: {active}")
