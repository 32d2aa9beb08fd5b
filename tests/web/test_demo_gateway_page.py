"""The demo's gateways serve their own page (the LAN API), as a site's gateway does: the demo prints each
one's address, and from it the app works both ways: server mode once signed in to the server (the demo's
server allows those origins), direct mode ("continue with this gateway") on the site's packs only."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from trackingbms.cli.demo import SITES

from .conftest import DemoClient

pytestmark = pytest.mark.browser

WAIT_MS = 60_000


def test_each_demo_gateway_serves_the_app_and_its_site_state(demo: DemoClient) -> None:
    assert set(demo.info.gateway_urls) == {site.device for site in SITES}
    for site in SITES:
        url = demo.info.gateway_urls[site.device]
        assert url != demo.info.url
        state = httpx.get(url + "local/v1/state", timeout=10).json()
        assert {b["battery_id"] for b in state["batteries"]} == {pk.battery_id for pk in site.packs}
        assert state["gateway"]["server_urls"] == [demo.info.url.rstrip("/")]
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200 and "TrackingBMS" in page.text


def test_from_a_gateway_page_server_mode_signs_in_and_direct_mode_reads_the_gateway(
    new_page: Any, demo: DemoClient
) -> None:
    site = SITES[0]
    url = demo.info.gateway_urls[site.device]
    # server mode from the gateway's origin: signing in crosses origins (CORS allowed by the demo)
    page = new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    page.wait_for_selector('#login-mode[data-mode="server"]')
    page.fill("#email", demo.info.email)
    page.fill("#password", demo.info.password)
    page.click("#login-submit")
    page.wait_for_selector('#mode[data-mode="server"]')
    every_pack = {pk.battery_id for s in SITES for pk in s.packs}
    for battery_id in every_pack:  # the server's fleet: both sites
        page.wait_for_selector(f'.pack-row[data-battery-id="{battery_id}"] .source[data-source="server"]')
    # the gateway's own view in server mode: no direct-mode banner asking to sign in again
    page.goto(url + "#/gateway")
    page.wait_for_selector("#uplinks li")
    assert page.locator(".mode-note").count() == 0

    # direct mode: this gateway's packs, read from it
    direct = new_page()
    direct.set_default_timeout(WAIT_MS)
    direct.goto(url)
    direct.click("#stay-direct")
    direct.wait_for_selector('#mode[data-mode="direct"]')
    for pk in site.packs:
        direct.wait_for_selector(
            f'.pack-row[data-battery-id="{pk.battery_id}"] .source[data-source="direct-lan"]'
        )
    shown = set(direct.eval_on_selector_all(".pack-row", "els => els.map(e => e.dataset.batteryId)"))
    assert shown == {pk.battery_id for pk in site.packs}
    # the server never went away: the banner says this is the user's choice, and the way back
    note = direct.locator(".mode-note")
    assert "this page reads the gateway, as you chose" in note.inner_text()
    assert direct.inner_text("#use-server") == "Sign in to the server"
