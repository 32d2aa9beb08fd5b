"""The gateway's Bluetooth service, driven from a bumble central on a virtual radio (real host stacks on
both sides, only the radio is simulated): a real gateway polls a simulated pack over TCP, its uplink is
down, and a phone-like client reads live values, pages through the history by seq and configures it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from trackingbms.gateway.ble import codec
from trackingbms.gateway.ble.pairing import PairingGuard

pytestmark = pytest.mark.usefixtures("need_bumble")


@pytest.fixture
def need_bumble() -> None:
    pytest.importorskip("bumble", reason="bumble is not installed (pip install 'trackingbms[ble]')")


def gateway_config(state_dir: Path, port: int, hci: str, wifi_log: Path) -> Any:
    from trackingbms.gateway.config import GatewayConfig

    return GatewayConfig.from_dict(
        {
            "device_token": "tbd_ble_test_token",
            "state_dir": str(state_dir),
            "heartbeat_interval_s": 3600,
            # nothing listens there: every sample stays queued, as at a site with no internet
            "uplinks": [{"name": "wifi", "url": "http://127.0.0.1:9"}],
            "bms": [
                {
                    "battery_id": "pack-1",
                    "port": f"tcp://127.0.0.1:{port}",
                    "poll_interval_s": 0.2,
                    "cadences_s": {
                        "cells": 0,
                        "temps": 0,
                        "mos": 0,
                        "balancing": 0,
                        "faults": 0,
                        "status": 0,
                    },
                }
            ],
            "local_api": {"listen": "127.0.0.1:0"},
            "ble": {
                "transport": hci,
                "device": "cabin",
                "wifi_command": [
                    sys.executable,
                    "-c",
                    f"import os; open({str(wifi_log)!r}, 'w').write(os.environ['TBMS_WIFI_SSID'])",
                ],
            },
        }
    )


async def until(what: str, check: Any, timeout_s: float = 30.0) -> Any:
    """Poll until ``check()`` is truthy (a generous ceiling, not a timing assertion)."""
    async with asyncio.timeout(timeout_s):
        while True:
            value = await check() if asyncio.iscoroutinefunction(check) else check()
            if value:
                return value
            await asyncio.sleep(0.1)
    raise AssertionError(what)  # pragma: no cover


async def test_phone_reads_live_values_history_and_configures_with_the_pairing_code(tmp_path: Path) -> None:
    from trackingbms.gateway.app import Gateway
    from trackingbms.gateway.ble.central import connect_bumble
    from trackingbms.sim import PackConfig, Quirks, SimulatedPack, serve_tcp
    from trackingbms.sim.ble import virtual_radio

    pack = SimulatedPack(
        PackConfig(pack_id="pack-1", cells=16, sensors=4, seed=3, scenario="idle"), Quirks(latency_s=0.002)
    )
    endpoint = await serve_tcp(pack, "127.0.0.1", 0)
    radio = await virtual_radio()
    state_dir = tmp_path / "state"
    wifi_log = tmp_path / "wifi.txt"
    gw = Gateway(gateway_config(state_dir, endpoint.port, radio.hci, wifi_log))
    stop = asyncio.Event()
    running = asyncio.create_task(gw.run(stop))
    phone = radio.local_device("phone", "F0:00:00:00:00:0E")
    await phone.power_on()
    sessions = []
    try:
        await until(
            "a first full sample", lambda: (gw.state.batteries["pack-1"].latest or {}).get("cells_mv")
        )
        # found by its advertised name, as Web Bluetooth's namePrefix filter does
        fast = await connect_bumble("TrackingBMS-cabin", device=phone)
        sessions.append(fast)
        assert fast.mtu > 77  # negotiated: a 16S reading is one notification
        info = await fast.info()
        assert info["device"] == "cabin" and [b["battery_id"] for b in info["batteries"]] == ["pack-1"]
        assert info["uplinks"] == [{"name": "wifi", "url": "http://127.0.0.1:9"}] and info["wifi_settable"]
        assert info["queue_depth"] > 0  # the uplink is down: samples wait in the queue

        # live: the merged reading of each new sample; the fields that sample carries are the committed ones
        live = [s async for s in _take(fast.live(), 3)]
        q = gw.queue
        for reading in live:
            assert reading["battery_id"] == "pack-1" and len(reading["cells_mv"]) == 16
            [stored], _ = await q.run(q.page_by_seq, "pack-1", reading["seq"], 1)
            assert stored["seq"] == reading["seq"]
            for field, value in stored.items():
                assert reading[field] == value, field
        # and those are the simulated pack's own values (idle: the pack does not move between reads)
        assert live[-1]["cells_mv"] == pack.battery.cells_mv()
        assert live[-1]["voltage_v"] == pytest.approx(sum(pack.battery.cells_mv()) / 1000, abs=0.15)
        assert fast.live_fragments == fast.live_messages  # one notification per reading

        # "get data": the merged latest reading on request, for a client that does not follow the live stream
        got = await fast.request(codec.CMD_GET_READING, {"battery": 0})
        assert got.ok and got.body["battery"] == 0
        assert got.body["sample"]["seq"] >= live[-1]["seq"] and len(got.body["sample"]["cells_mv"]) == 16
        [stored_now], _ = await q.run(q.page_by_seq, "pack-1", got.body["sample"]["seq"], 1)
        assert {k: got.body["sample"][k] for k in stored_now if k != "battery_id"} == {
            k: v for k, v in stored_now.items() if k != "battery_id"
        }
        missing = await fast.request(codec.CMD_GET_READING, {"battery": 7})
        assert missing.status == codec.NOT_FOUND and "no battery 7" in missing.message

        # history by seq, in small pages over a laptop that stays at the default MTU (23: fragments), while
        # the phone stays connected
        laptop = radio.local_device("laptop", "F0:00:00:00:00:0F")
        await laptop.power_on()
        slow = await connect_bumble(gw.ble.address, device=laptop, mtu=23)
        sessions.append(slow)
        await slow.info()
        assert slow.mtu == 23
        paged: list[dict[str, Any]] = []
        async for page in slow.history("pack-1", from_seq=0, page=7):
            assert 0 < len(page) <= 7
            paged += page
        stored, _ = await q.run(q.page_by_seq, "pack-1", 0, 100_000)
        upto = [s for s in stored if s["seq"] <= paged[-1]["seq"]]
        assert [{k: v for k, v in s.items() if k != "via"} for s in paged] == upto
        assert len(paged) >= 10 and all(s["via"] == "ble" for s in paged)
        # a page from the middle starts at the seq asked for
        mid = paged[len(paged) // 2]["seq"]
        first_page = await anext(slow.history("pack-1", from_seq=mid, page=3))
        assert [s["seq"] for s in first_page] == [s["seq"] for s in upto if s["seq"] >= mid][:3]

        # configuration: refused without the code and with a wrong one, applied with it
        code = (state_dir / "ble-pairing-code").read_text().strip()
        poll = {"battery": 0, "interval_ms": 2500}
        refused = await slow.request(codec.CMD_SET_POLL, poll)
        assert refused.status == codec.PAIRING_REQUIRED and "pairing code" in refused.message
        wrong = await slow.request(
            codec.CMD_SET_POLL, poll, pairing_code="000000" if code != "000000" else "1"
        )
        assert wrong.status == codec.PAIRING_REQUIRED and gw.state.batteries["pack-1"].poll_interval_s == 0.2
        done = await slow.request(codec.CMD_SET_POLL, poll, pairing_code=code)
        assert done.ok and gw.state.batteries["pack-1"].poll_interval_s == 2.5

        bad = await slow.request(codec.CMD_SET_UPLINK, {"name": "wifi", "url": "ftp://x"}, pairing_code=code)
        assert bad.status == codec.INVALID_VALUE and "http://" in bad.message
        moved = await slow.request(
            codec.CMD_SET_UPLINK, {"name": "", "url": "https://tbms.example.net/"}, pairing_code=code
        )
        assert moved.ok and gw.uplinks.uplinks[0].cfg.url == "https://tbms.example.net"
        assert (await slow.info())["uplinks"][0]["url"] == "https://tbms.example.net"

        wifi = await slow.request(codec.CMD_SET_WIFI, {"ssid": "cabin-net", "psk": "pw"}, pairing_code=code)
        assert wifi.ok and wifi_log.read_text() == "cabin-net"
        assert slow.live_fragments > slow.live_messages > 0  # live readings in fragments at MTU 23
        assert fast.live_messages > 3 and fast.live_fragments == fast.live_messages  # the phone still hears

        # the LAN API shows the name and the pairing code
        async with httpx.AsyncClient() as http:
            state = (await http.get(f"http://127.0.0.1:{gw.local.port}/local/v1/state")).json()  # type: ignore[union-attr]
        assert state["gateway"]["ble"] == {
            "name": "TrackingBMS-cabin",
            "address": gw.ble.address,
            "pairing_code": code,
        }
    finally:
        for s in sessions:
            await s.close()
        stop.set()
        await asyncio.wait_for(running, 30)
        await endpoint.close()
        await radio.close()

    # the changes are the gateway's configuration now: kept for the next start, over gateway.toml
    saved = json.loads((state_dir / "local-settings.json").read_text())
    assert saved == {"uplinks": {"wifi": "https://tbms.example.net"}, "poll_interval_s": {"pack-1": 2.5}}
    again = Gateway(gateway_config(state_dir, endpoint.port, radio.hci, wifi_log))
    try:
        assert again.uplinks.uplinks[0].cfg.url == "https://tbms.example.net"
        assert again.state.batteries["pack-1"].poll_interval_s == 2.5
    finally:
        await again.uplinks.aclose()
        again.queue.close()


async def _take(it: Any, n: int) -> Any:
    got = 0
    async for item in it:
        yield item
        got += 1
        if got >= n:
            return


def test_wrong_codes_lock_configuration_out_for_longer_each_time() -> None:
    now = [0.0]
    guard = PairingGuard("123456", clock=lambda: now[0])
    for _ in range(4):
        assert not guard.check("000000")
    assert guard.locked_for_s() == 0
    assert not guard.check("000000")  # the fifth
    assert guard.locked_for_s() == 30
    assert not guard.check("123456")  # even the right code while locked out
    now[0] += 31
    for _ in range(5):
        assert not guard.check("111111")
    assert guard.locked_for_s() == 60  # the second round of five waits twice as long
    now[0] += 61
    assert guard.check("123456") and guard.failures == 0


def test_bumble_loads_only_when_the_service_starts() -> None:
    """A gateway without [ble] (and one with it, until start) pays nothing for bumble (RSS, start-up)."""
    import subprocess

    code = (
        "import sys, trackingbms.gateway.app, trackingbms.gateway.ble.service, trackingbms.cli.direct; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('bumble', 'bleak')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


async def test_a_missing_bluetooth_controller_is_one_log_line_and_the_gateway_runs_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from trackingbms.gateway.app import Gateway
    from trackingbms.sim import PackConfig, Quirks, SimulatedPack, serve_tcp

    pack = SimulatedPack(PackConfig(pack_id="pack-1", cells=4, sensors=1, scenario="idle"), Quirks())
    endpoint = await serve_tcp(pack, "127.0.0.1", 0)
    gw = Gateway(gateway_config(tmp_path, endpoint.port, "tcp-client:127.0.0.1:9", tmp_path / "w"))
    stop = asyncio.Event()
    running = asyncio.create_task(gw.run(stop))
    try:
        await until("samples despite no Bluetooth", lambda: gw.state.batteries["pack-1"].latest)
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert any(m.startswith("Bluetooth off: [ble] cannot open the Bluetooth controller") for m in errors)
        async with httpx.AsyncClient() as http:
            state = (await http.get(f"http://127.0.0.1:{gw.local.port}/local/v1/state")).json()  # type: ignore[union-attr]
        assert "ble" not in state["gateway"]
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
        await endpoint.close()
