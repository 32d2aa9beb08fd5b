"""The phone relay in Chromium, as a user meets it (issue 12, item 4): real processes throughout (simulator
on TCP, ``trackingbms gateway`` whose uplink cannot reach the server, ``trackingbms server`` started later),
the app opened from the gateway (http://127.0.0.1:<port>, another origin than the server's).

1. No server: the app runs in direct mode and carries the gateway's unsent samples in its outbox.
2. The server comes up (the phone's own network reaches it; the gateway's still does not): the app switches
   to server mode, the user signs in, and the app relays the backlog and the samples taken since; the server
   has every seq exactly once with ``via = phone``, and the gateway, given the receipts, stops holding them.
3. The phone loses the gateway before it could hand a receipt back (its receipt socket is cut), then the
   gateway's own uplink comes back: its upload of the samples the phone had relayed counts as duplicates
   at the server, not as new rows (they stay ``via = phone``).
4. On its next visit the app hands the kept receipt back; nothing is left in the phone's outbox.

The gateway's uplink is cut by an HTTP proxy that refuses connections (``HTTP_PROXY`` in its environment):
the same server URL the phone reaches, as on a site whose only internet is the phone's.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.gateway.harness import (
    CLI,
    GatewayProcess,
    LoopThread,
    Packs,
    ServerProcess,
    env_with,
    free_port,
    gateway_config,
    wait_for,
)

from trackingbms.gateway.queue import DurableQueue
from trackingbms.model import Reading

from .conftest import CHROMIUM, CHROMIUM_ARGS, _need_browser

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PACK = "shelter-pack"
SEEDED = 1_200  # what the gateway took before the phone came by: more than two relay pages
WAIT_MS = 90_000  # generous ceilings on a loaded machine: readiness waits, not timings
OUTBOX_SEQS = """() => new Promise((resolve, reject) => {
  const r = indexedDB.open("tbms-relay");
  r.onsuccess = () => {
    const q = r.result.transaction("outbox").objectStore("outbox").getAllKeys();
    q.onsuccess = () => resolve(q.result.map((k) => k[2]));
    q.onerror = () => reject(q.error);
  };
})"""
RELAY = "() => import('/static/js/relay.js').then((m) => m.outboxStatus())"


class CutOffGateway(GatewayProcess):
    """``trackingbms gateway`` whose HTTP uplink goes through a proxy that refuses every connection while
    ``cut_off`` is set (the site's own internet is down); the LAN API is unaffected."""

    cut_off = True
    dead_proxy = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    def start(self) -> None:
        proxy = {"HTTP_PROXY": self.dead_proxy, "HTTPS_PROXY": self.dead_proxy, "NO_PROXY": ""}
        proxy |= {k.lower(): v for k, v in proxy.items()}
        env = env_with(**proxy) if self.cut_off else env_with()
        if not self.cut_off:
            for k in proxy:
                env.pop(k, None)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*CLI, "gateway", "-c", str(self.config_path)], stdout=log, stderr=log, env=env
            )


def seed_queue(state_dir: Path) -> list[int]:
    queue = DurableQueue(state_dir)
    start = datetime.now(UTC) - timedelta(seconds=SEEDED + 60)
    samples = queue.put_many(
        PACK,
        [
            Reading(
                ts=start + timedelta(seconds=i),
                source="sim",
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
    return [s.seq for s in samples]


def gateway_rows(state_dir: Path) -> dict[int, int]:
    """seq → acked state (0 unsent, 1 the server has it) of every sample in the gateway's queue (WAL: a
    reader beside the running gateway is fine)."""
    db = sqlite3.connect(f"file:{state_dir / 'queue.sqlite3'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT seq, acked FROM samples WHERE battery_id = ?", (PACK,)).fetchall())
    finally:
        db.close()


def duplicates_counted(server: ServerProcess) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    m = re.search(r'^trackingbms_ingest_samples_total\{outcome="duplicate"\} (\S+)$', text, re.M)
    assert m, "no duplicate counter in /metrics"
    return float(m.group(1))


def wait_outbox(page: Any, what: str, check: Any, timeout_s: float = 90.0) -> dict[str, int]:
    """Poll the phone's outbox (``page.evaluate`` awaits the promise; ``wait_for_function`` would take the
    promise itself for a truthy answer)."""
    end = time.monotonic() + timeout_s
    while True:
        status = page.evaluate(RELAY)
        if check(status):
            return status
        if time.monotonic() > end:
            pytest.fail(f"gave up waiting for {what} after {timeout_s:g} s (outbox: {status})")
        page.wait_for_timeout(500)


def mode_is(page: Any, mode: str) -> None:
    page.wait_for_selector(f'#mode[data-mode="{mode}"]', state="attached")  # hidden until signed in


@pytest.fixture
def site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    _need_browser()
    loop = LoopThread()
    packs = Packs(loop, [PACK])
    gw_listen = f"127.0.0.1:{free_port()}"
    # the server allows exactly the gateway-served app's origin to call it from the browser
    # provisioning runs asyncio.run(): in a thread of its own, as the session's browser tests own the main
    # thread's event loop (Playwright's sync API)
    with ThreadPoolExecutor(1) as pool:
        server = pool.submit(
            ServerProcess, tmp_path / "server", [PACK], TRACKINGBMS_RELAY_ORIGINS=f"http://{gw_listen}"
        ).result()
    server.stop()  # provisioned, then down until the phone's network reaches it
    state_dir = tmp_path / "gw-state"
    state_dir.mkdir()
    seeded = seed_queue(state_dir)
    (tmp_path / "gw").mkdir()
    config = gateway_config(
        server.device_token,
        state_dir,
        [{"name": "wifi", "url": server.url, "timeout_s": 2.0}],
        [{"battery_id": PACK, "port": packs.url(PACK), "poll_interval_s": 1.0}],
    )
    config["local_api"] = {"listen": gw_listen}
    gw = CutOffGateway(config, tmp_path / "gw")
    gw.start()
    try:
        wait_for("the gateway's first reading", lambda: gw.state()["batteries"][0].get("latest"), 90)
        yield {"server": server, "gateway": gw, "state_dir": state_dir, "seeded": seeded}
    finally:
        gw.stop()
        server.stop()
        packs.close()
        loop.close()


def test_the_app_relays_the_gateways_unsent_samples_exactly_once(site: dict[str, Any]) -> None:
    # Playwright in a thread of its own (see the fixture)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(_relay_flow, site).result()


def _relay_flow(site: dict[str, Any]) -> None:
    from playwright.sync_api import sync_playwright

    gw: CutOffGateway = site["gateway"]
    server: ServerProcess = site["server"]
    state_dir: Path = site["state_dir"]
    seeded: list[int] = site["seeded"]
    errors: list[str] = []

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US")
        page = ctx.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
        try:
            # 1. no server: direct mode, and the backlog travels in the phone's outbox
            page.goto(gw.local_url + "/")
            mode_is(page, "direct")
            wait_outbox(page, "the backlog in the outbox", lambda s: s["samples"] >= SEEDED)

            # 2. the server answers the phone: server mode, sign in, the relay runs by itself
            server.start()
            mode_is(page, "server")
            page.fill("#email", server.EMAIL)
            page.fill("#password", server.PASSWORD)
            page.click("#login-submit")
            wait_for("the backlog on the server", lambda: len(server.export(PACK)) >= SEEDED, 120)
            # every seeded sample settled at the gateway by a receipt (its uplink is still cut off)
            wait_for(
                "the gateway to stop holding the relayed backlog",
                lambda: all(gateway_rows(state_dir)[s] == 1 for s in seeded),
                120,
            )
            rows = server.export(PACK)
            seqs = [int(r["seq"]) for r in rows]
            assert len(seqs) == len(set(seqs)), "a seq stored twice"
            assert set(seeded) <= set(seqs)
            assert {r["via"] for r in rows} == {"phone"}  # nothing came through the gateway's uplink
            wait_outbox(page, "every receipt handed over", lambda s: s["receipts"] == 0)
            # the gateway page says the data took the phone, and what the relay did
            page.click('a[data-nav="gateway"]')
            page.wait_for_selector('#gateway-via[data-via="phone"]')
            page.wait_for_selector("#relay-last")
            assert "uploaded" in page.inner_text("#relay-last")

            # 3. the server goes away again and the app carries what the gateway took since ...
            server.stop()
            mode_is(page, "direct")
            wait_outbox(page, "new samples in the outbox", lambda s: s["samples"] >= 3)
            # ... the phone leaves the site and reaches the server: it relays them, but cannot hand the
            # receipt back (the gateway is out of reach) ...
            gw.stop()
            carried = page.evaluate(OUTBOX_SEQS)
            held = gateway_rows(state_dir)
            assert carried and all(held[s] == 0 for s in carried)  # the gateway still holds them all
            server.start()
            wait_outbox(page, "the outbox relayed", lambda s: s["samples"] == 0 and s["receipts"] >= 1)
            page.close()  # the phone is elsewhere
            on_server = {int(r["seq"]) for r in server.export(PACK)}
            relayed_unsettled = sorted(carried)
            assert set(relayed_unsettled) <= on_server
            assert all(gateway_rows(state_dir)[s] == 0 for s in relayed_unsettled)
            before = duplicates_counted(server)
            # ... then the gateway's own uplink comes back: its upload of them counts as duplicates
            gw.cut_off = False
            gw.start()
            wait_for(
                "the gateway's own upload of what the phone had relayed",
                lambda: all(gateway_rows(state_dir)[s] == 1 for s in relayed_unsettled),
                120,
            )
            assert duplicates_counted(server) - before >= len(relayed_unsettled)
            rows = {int(r["seq"]): r["via"] for r in server.export(PACK)}
            assert all(rows[s] == "phone" for s in relayed_unsettled), (
                "the gateway's copy replaced the phone's"
            )

            # 4. back at the gateway, the app hands the kept receipt over; the outbox is empty
            page = ctx.new_page()
            page.set_default_timeout(WAIT_MS)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(gw.local_url + "/#/gateway")
            wait_outbox(
                page, "the kept receipt handed over", lambda s: s["receipts"] == 0 and s["samples"] == 0
            )
            page.wait_for_selector("#relay-last")
            assert "uploaded" in page.inner_text("#relay-last")

            # exactly once, end to end: every sample the gateway took is on the server, each seq once
            wait_for("the gateway's queue to drain", lambda: 0 not in gateway_rows(state_dir).values(), 120)
            taken = set(gateway_rows(state_dir))
            export = [int(r["seq"]) for r in server.export(PACK)]
            assert len(export) == len(set(export))
            assert taken <= set(export)
        finally:
            # what a failure needs: the app's last relay, the gateway's log
            print("gateway log:", gw.log()[-3000:])
            if not page.is_closed():
                print("last relay:", page.evaluate("() => localStorage.getItem('tbms.relay.last')"))
                page.screenshot(path=str(Path(gw.workdir) / "relay-last.png"))
            ctx.close()
            browser.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
