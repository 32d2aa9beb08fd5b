"""ble.js's Web Bluetooth code (connect, requests, history paging, live readings) in Chromium against the real
gateway service. Headless Chromium has no Bluetooth adapter, so the page gets a ``navigator.bluetooth`` whose
characteristics are a thin bridge: each write goes to a bumble central connected to the gateway on a virtual
radio, and each notification that central receives is handed to the page, byte for byte. Everything above
the radio (the gateway, its GATT service, the simulated pack, ble.js) is the real code."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.harness import LoopThread, wait_for  # tests/ is on sys.path (pytest rootdir)
from gateway.test_ble_service import gateway_config
from trackingbms.gateway.ble import codec
from trackingbms.webapp import STATIC_DIR

from .conftest import CHROMIUM, CHROMIUM_ARGS, _need_browser

pytestmark = pytest.mark.browser
ORIGIN = "http://localhost:9"  # never contacted (routed below); localhost is a secure context

FAKE_BLUETOOTH = """
window.fakeBluetooth = () => {
  const listeners = {};
  const chars = {};
  const characteristic = (uuid) => chars[uuid] || (chars[uuid] = {
    uuid,
    addEventListener: (type, fn) => (listeners[uuid] = fn),
    async startNotifications() {
      (async () => {
        for (;;) {
          for (const bytes of await window.blePoll(uuid)) {
            const u8 = new Uint8Array(bytes);
            listeners[uuid] && listeners[uuid]({ target: { value: new DataView(u8.buffer) } });
          }
        }
      })();
    },
    writeValueWithResponse: (u8) => window.bleWrite(uuid, Array.from(u8)),
  });
  const device = {
    name: "TrackingBMS-cabin",
    addEventListener() {},
    gatt: {
      connect: async () => ({
        getPrimaryService: async (uuid) => ({ getCharacteristic: async (c) => characteristic(c) }),
      }),
      disconnect() {},
    },
  };
  const requestDevice = async (options) => {
    window.asked = options;
    return device;
  };
  return { userAgent: "Chrome", bluetooth: { requestDevice } };
};
"""


class Bridge:
    """A bumble central on the gateway's service, driven from the page's fake characteristics."""

    def __init__(self, lt: LoopThread, tmp_path: Path) -> None:
        self.lt = lt
        self.notes: dict[str, queue.Queue[bytes]] = {
            codec.LIVE_UUID: queue.Queue(),
            codec.RESPONSE_UUID: queue.Queue(),
        }
        lt.run(self._start(tmp_path), timeout_s=60)

    async def _start(self, tmp_path: Path) -> None:
        from bumble.core import UUID
        from bumble.device import Peer

        from trackingbms.gateway.app import Gateway
        from trackingbms.sim import PackConfig, Quirks, SimulatedPack, serve_tcp
        from trackingbms.sim.ble import virtual_radio

        pack = SimulatedPack(
            PackConfig(pack_id="pack-1", cells=16, sensors=4, seed=9, scenario="idle"), Quirks()
        )
        self.endpoint = await serve_tcp(pack, "127.0.0.1", 0)
        self.radio = await virtual_radio()
        self.state_dir = tmp_path / "state"
        self.gw = Gateway(
            gateway_config(self.state_dir, self.endpoint.port, self.radio.hci, tmp_path / "wifi")
        )
        self.stop = asyncio.Event()
        self.running = asyncio.create_task(self.gw.run(self.stop))
        from gateway.test_ble_service import until

        await until(
            "a first full sample", lambda: (self.gw.state.batteries["pack-1"].latest or {}).get("cells_mv")
        )
        phone = self.radio.local_device("phone", "F0:00:00:00:00:1E")
        await phone.power_on()
        connection = await phone.connect(self.gw.ble.address)
        self.peer = Peer(connection)
        await self.peer.discover_services()
        await self.peer.discover_characteristics()
        self.chars = {u: self.peer.get_characteristics_by_uuid(UUID(u))[0] for u in self.notes}
        self.chars[codec.COMMAND_UUID] = self.peer.get_characteristics_by_uuid(UUID(codec.COMMAND_UUID))[0]
        for u, char in self.chars.items():
            if u in self.notes:
                await self.peer.subscribe(char, lambda data, u=u: self.notes[u].put(bytes(data)))

    def write(self, uuid: str, data: list[int]) -> None:
        self.lt.run(self.peer.write_value(self.chars[uuid], bytes(data), with_response=True))

    def poll(self, uuid: str) -> list[list[int]]:
        q = self.notes[uuid]
        try:
            items = [q.get(timeout=0.2)]
        except queue.Empty:
            return []
        while not q.empty():
            items.append(q.get_nowait())
        return [list(b) for b in items]

    def close(self) -> None:
        async def go() -> None:
            self.stop.set()
            await asyncio.wait_for(self.running, 30)
            await self.endpoint.close()
            await self.radio.close()

        self.lt.run(go(), timeout_s=60)


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[Bridge]:
    pytest.importorskip("bumble")
    lt = LoopThread()
    b = Bridge(lt, tmp_path)
    yield b
    b.close()
    lt.close()


def test_the_app_connects_pages_history_configures_and_follows_live_values(bridge: Bridge) -> None:
    _need_browser()
    from playwright.sync_api import sync_playwright

    code = (bridge.state_dir / "ble-pairing-code").read_text().strip()
    gw = bridge.gw
    # the history pages below must span several samples: wait for them (a loaded machine polls slower)
    wait_for(
        "five samples in the gateway's queue",
        lambda: len(bridge.lt.run(gw.queue.run(gw.queue.page_by_seq, "pack-1", 0, 100))[0]) >= 5,
    )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()

            def serve(route: Any) -> None:
                path = route.request.url.removeprefix(ORIGIN)
                if path == "/":
                    route.fulfill(body="<!doctype html><title>ble</title>", content_type="text/html")
                else:
                    body = (STATIC_DIR / path.removeprefix("/static/")).read_bytes()
                    route.fulfill(body=body, content_type="text/javascript")

            page.route(f"{ORIGIN}/**", serve)
            page.expose_function("bleWrite", bridge.write)
            page.expose_function("blePoll", bridge.poll)
            page.add_init_script(FAKE_BLUETOOTH)
            page.goto(f"{ORIGIN}/")
            result = page.evaluate(
                """async (code) => {
                  const m = await import("/static/js/ble.js");
                  const readings = [];
                  const nav = window.fakeBluetooth();
                  const s = await m.connect({ onSample: (r) => readings.push(r), nav });
                  const history = await s.history("pack-1", 0);
                  const refused = await s.request(m.CMD.setPoll, { battery: 0, interval_ms: 1500 });
                  const applied = await s.request(m.CMD.setPoll, { battery: 0, interval_ms: 1500 }, code);
                  const start = readings.length;
                  while (readings.length < start + 2) await new Promise((r) => setTimeout(r, 100));
                  return { asked: window.asked, info: s.info, history, refused, applied, readings };
                }""",
                code,
            )
        finally:
            browser.close()

    assert result["asked"] == {
        "filters": [{"namePrefix": "TrackingBMS-"}],
        "optionalServices": [codec.SERVICE_UUID],
    }
    assert [b["battery_id"] for b in result["info"]["batteries"]] == ["pack-1"]
    gw = bridge.gw
    stored, _ = bridge.lt.run(gw.queue.run(gw.queue.page_by_seq, "pack-1", 0, 100_000))
    history = result["history"]
    assert len(history) >= 5 and all(s["via"] == "ble" for s in history)
    assert [{k: v for k, v in s.items() if k != "via"} for s in history] == [
        s for s in stored if s["seq"] <= history[-1]["seq"]
    ]
    assert result["refused"]["status"] == "pairing_required"
    assert result["applied"]["status"] == "ok" and gw.state.batteries["pack-1"].poll_interval_s == 1.5
    by_seq = {s["seq"]: s for s in stored}
    for reading in result["readings"][-2:]:
        # every live reading was committed before it was sent: its fields are the committed sample's
        for field, value in by_seq[reading["seq"]].items():
            assert reading[field] == value, field
        assert reading["battery_id"] == "pack-1" and len(reading["cells_mv"]) == 16
