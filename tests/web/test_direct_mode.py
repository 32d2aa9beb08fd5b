"""Direct mode in Chromium, as a user at a site with no internet meets it: real processes throughout (the
simulator on TCP, ``trackingbms gateway``, ``trackingbms server``), the app opened from the gateway.

1. The server is down: the app served by the gateway says "Direct (LAN)" and shows the pack's live values
   marked "direct LAN", and keeps the gateway's history (≥ 1,000 points) in IndexedDB.
2. The phone loses the network and the gateway stops: a reload still opens the app (service worker), says
   "Offline", and draws the ≥ 1,000 kept points.
3. The network and the gateway come back: "Direct (LAN)" again, by itself.
4. The server comes up: the app switches to server mode by itself (and asks to sign in to it; "continue with
   this gateway" keeps direct mode). The same views in French, no catalogue key missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.gateway.harness import GatewayProcess, LoopThread, Packs, ServerProcess, gateway_config, wait_for

from trackingbms.gateway.queue import DurableQueue
from trackingbms.model import Reading

from .conftest import CHROMIUM, CHROMIUM_ARGS, _need_browser

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PACK = "cabin-pack"
SEEDED = 1_200  # what the gateway took before the phone came by (20 min at 1 s)
WAIT_MS = 90_000  # generous ceilings on a loaded machine: readiness waits, not timings
MODE = "#mode"


def seed_queue(state_dir: Path) -> None:
    """The gateway ran before the visit: its queue holds SEEDED samples the server never got."""
    queue = DurableQueue(state_dir)
    start = datetime.now(UTC) - timedelta(seconds=SEEDED + 60)
    queue.put_many(
        PACK,
        [
            Reading(
                ts=start + timedelta(seconds=i),
                voltage_v=52.0 + (i % 60) / 100,
                current_a=-5.0 + (i % 10) / 10,
                soc_pct=80.0 - i / 100,
                cells_mv=[3300 + (i + k) % 7 for k in range(8)],
                temps_c=[21.0, 22.0],
            )
            for i in range(SEEDED)
        ],
    )
    queue.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    _need_browser()
    loop = LoopThread()
    packs = Packs(loop, [PACK])
    # in threads of their own: the session's other browser tests leave Playwright's loop running in this one,
    # and provisioning (asyncio.run) and the queue's setup must not meet it
    with ThreadPoolExecutor(1) as pool:
        server = pool.submit(ServerProcess, tmp_path / "server", [PACK]).result(timeout=300)
        server.stop()  # provisioned, then down: "no internet at the site"
        state_dir = tmp_path / "gw-state"
        state_dir.mkdir()
        pool.submit(seed_queue, state_dir).result(timeout=120)
    (tmp_path / "gw").mkdir()
    gw = GatewayProcess(
        gateway_config(
            server.device_token,
            state_dir,
            [{"name": "wifi", "url": server.url, "timeout_s": 2.0}],
            [{"battery_id": PACK, "port": packs.url(PACK), "poll_interval_s": 1.0}],
        ),
        tmp_path / "gw",
    )
    gw.start()
    try:
        wait_for("the gateway's first reading", lambda: gw.state()["batteries"][0].get("latest"), 90)
        yield {"server": server, "gateway": gw, "packs": packs}
    finally:
        gw.stop()
        server.stop()
        packs.close()
        loop.close()


def mode_is(page: Any, mode: str) -> None:
    page.wait_for_selector(f'{MODE}[data-mode="{mode}"]', timeout=WAIT_MS)


def test_direct_mode_from_the_gateway_history_offline_and_back_to_server(
    site: dict[str, Any], screenshots: Path
) -> None:
    # a thread of its own: the session's other browser tests keep Playwright's sync API (and its loop)
    # running in this one, and a second sync_playwright() may not start beside it
    with ThreadPoolExecutor(1) as pool:
        pool.submit(walk_through, site, screenshots).result(timeout=900)


def walk_through(site: dict[str, Any], screenshots: Path) -> None:
    from playwright.sync_api import sync_playwright

    gw: GatewayProcess = site["gateway"]
    server: ServerProcess = site["server"]
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
        page = ctx.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
        try:
            # 1. server down: direct mode, live values marked "direct LAN"
            page.goto(gw.local_url + "/")
            mode_is(page, "direct")
            assert page.inner_text(MODE) == "Direct (LAN)"
            row = f'.pack-row[data-battery-id="{PACK}"]'
            page.wait_for_selector(f'{row} .source[data-source="direct-lan"]')
            assert page.inner_text(f"{row} .source-name") == "direct LAN"
            page.wait_for_selector('#live-dot[data-state="open"]')  # the gateway's live stream
            page.screenshot(path=str(screenshots / "direct-fleet.png"))
            live = gw.state()["batteries"][0]["latest"]["voltage_v"]
            assert abs(float(page.get_attribute(f"{row} .c-voltage", "data-value")) - live) < 1.0
            page.click(f"{row} .pack-link")
            page.wait_for_selector('#kpi-voltage[data-value]:not([data-value=""])')
            page.wait_for_selector('.pack-sub .source[data-source="direct-lan"]')
            page.wait_for_function(
                "() => Number(document.querySelector('#hist-note')?.dataset.points || 0) >= 1000"
            )
            page.wait_for_selector("#chart-voltage")
            page.screenshot(path=str(screenshots / "direct-pack.png"), full_page=True)
            seq_seen = int(page.get_attribute(".kpis", "data-seq"))
            # the gateway view: which paths the data may take, in order, and the backlog
            page.click('a[data-nav="gateway"]')
            page.wait_for_selector('#uplinks li[data-name="phone"]')
            names = page.eval_on_selector_all("#uplinks li", "els => els.map(e => e.dataset.name)")
            assert names == ["wifi", "phone"]
            assert page.get_attribute('#uplinks li[data-name="wifi"]', "data-state") == "failing"
            assert int(page.get_attribute("#gateway-queue", "data-depth")) >= SEEDED
            # Bluetooth where the browser has no Web Bluetooth (iOS Safari): a clear word, no error
            page.evaluate("() => Object.defineProperty(navigator, 'bluetooth', {value: undefined})")
            page.click("#ble-connect")
            page.wait_for_selector('#ble-note[data-state="unsupported"]')
            assert "no Web Bluetooth" in page.inner_text("#ble-note")
            page.screenshot(path=str(screenshots / "direct-gateway.png"), full_page=True)

            # 2. no network, no gateway: the reload opens from the service worker, history kept
            page.wait_for_function("() => !!navigator.serviceWorker.controller")
            gw.stop()
            ctx.set_offline(True)
            page.goto(gw.local_url + f"/#/pack/{PACK}")
            mode_is(page, "offline")
            assert page.inner_text(MODE) == "Offline"
            page.wait_for_function(
                "() => Number(document.querySelector('#hist-note')?.dataset.points || 0) >= 1000"
            )
            page.wait_for_selector("#chart-voltage")
            page.wait_for_selector('.pack-sub .source[data-source="direct-lan"]')
            assert int(page.get_attribute(".kpis", "data-seq")) >= seq_seen
            page.screenshot(path=str(screenshots / "direct-offline-pack.png"), full_page=True)

            # 3. network and gateway back: direct mode again, no user action
            ctx.set_offline(False)
            gw.start()
            mode_is(page, "direct")

            # 4. the server comes up: server mode by itself; signing in there from the gateway's origin works
            # (the server allows that origin: TRACKINGBMS_RELAY_ORIGINS)
            server.env["TRACKINGBMS_RELAY_ORIGINS"] = gw.local_url
            server.start()
            page.wait_for_selector('#login-mode[data-mode="server"]', timeout=WAIT_MS)
            assert page.inner_text("#login-mode") == "Server"
            assert page.get_attribute(MODE, "data-mode") == "server"
            page.wait_for_selector("#login-submit")
            page.screenshot(path=str(screenshots / "direct-server-back.png"))
            page.fill("#email", server.EMAIL)
            page.fill("#password", server.PASSWORD)
            page.click("#login-submit")
            mode_is(page, "server")
            page.wait_for_selector(f'.pack-row[data-battery-id="{PACK}"] .source[data-source="server"]')
            page.wait_for_selector('#live-dot[data-state="open"]')
            page.screenshot(path=str(screenshots / "server-from-gateway.png"))
            assert page.evaluate("() => [...window.__tbmsI18n.misses]") == []

            # the same views in French (the catalogues are the app's: no separate LAN page words)
            fr = ctx.browser.new_context(locale="fr-FR").new_page()
            fr.set_default_timeout(WAIT_MS)
            fr.on("pageerror", lambda exc: errors.append(str(exc)))
            fr.goto(gw.local_url + "/")
            fr.click("#stay-direct")  # the server answers; no account at hand: this gateway only
            mode_is(fr, "direct")
            assert fr.inner_text(MODE) == "Direct (réseau local)"
            fr.wait_for_selector(f'{row} .source[data-source="direct-lan"]')
            assert fr.inner_text(f"{row} .source-name") == "direct réseau local"
            fr.goto(gw.local_url + "/#/gateway")
            fr.wait_for_selector('#uplinks li[data-name="phone"]')
            assert "Chemins vers le serveur" in fr.inner_text(".gateway")
            fr.goto(gw.local_url + f"/#/pack/{PACK}")
            fr.wait_for_selector("#hist-note[data-points]")
            assert "Historique gardé sur cet appareil" in fr.inner_text(".history")
            assert fr.evaluate("() => [...window.__tbmsI18n.misses]") == []
            fr.context.close()
        finally:
            page.screenshot(path=str(Path(gw.workdir) / "direct-mode-last.png"))
            ctx.close()
            browser.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
