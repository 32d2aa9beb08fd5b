"""The demo's "Old bank" as a user meets it: started with its default day of history, the analytics name
its weak cell (cell 7) within a few minutes, and the pack page's Health card plots the evidence.

Its own demo (the session's shares a 2-hour history to stay quick; this one needs the default day): at
the default history (36 h) holds a day of the bank's float, so the finding is due on the server's first
analytics tick after the history is in.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, STARTUP_DEADLINE_S, DemoClient, _need_browser, login

pytestmark = pytest.mark.browser

#: "within a few minutes of the demo starting" at x60 is half of it at x120; generous for a loaded machine
FINDING_DEADLINE_S = 300.0


@pytest.fixture(scope="module")
def day_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoClient]:
    _need_browser()
    from trackingbms.cli.demo import DEFAULT_HISTORY_H, DemoThread

    runner = DemoThread(
        port=0,
        speed=120.0,
        poll_interval_s=1.0,
        history_h=DEFAULT_HISTORY_H,
        data_dir=tmp_path_factory.mktemp("day"),
    )
    info = runner.start(timeout_s=STARTUP_DEADLINE_S * 2)
    try:
        client = DemoClient(info)
        yield client
        client.http.close()
    finally:
        runner.stop()


def _weak_finding(demo: DemoClient) -> dict[str, Any] | None:
    health = demo.get("/api/v1/batteries/cabin-weak/health")["health"] or {}
    return next((f for f in health.get("findings", []) if f["kind"] == "weak_cell_self_discharge"), None)


def test_old_bank_names_its_weak_cell_and_the_card_plots_the_evidence(
    day_demo: DemoClient, screenshots: Path
) -> None:
    finding = day_demo.wait_for(
        "the Old bank's weak-cell finding", lambda: _weak_finding(day_demo), deadline_s=FINDING_DEADLINE_S
    )
    assert finding["cell"] == 7
    health = day_demo.get("/api/v1/batteries/cabin-weak/health")["health"]
    assert health["weak_cells"] == [7]  # and no other cell
    offsets = finding["evidence"]["offsets"]
    assert len(offsets) >= 10
    # the evidence drifts down: the cell ends lower against the pack than it started
    assert offsets[-1][1] < offsets[0][1]
    # the finding raises its alarm, naming the cell
    alarms = day_demo.wait_for(
        "the weak-cell alarm",
        lambda: [
            a for a in day_demo.get("/api/v1/alarms", battery_id="cabin-weak") if "weak" in a["rule_id"]
        ],
    )
    assert "7" in alarms[0]["message"]

    # the e-bike's report comes from an analytics tick of its own (its history is uploaded after the
    # cabin's): wait for it to be there, then check what it holds
    ebike = day_demo.wait_for(
        "the e-bike's health report with its resistance",
        lambda: (lambda h: h if h and h.get("resistance_mohm") is not None else None)(
            day_demo.get("/api/v1/batteries/shop-ebike/health")["health"]
        ),
        deadline_s=FINDING_DEADLINE_S,
    )
    assert ebike["resistance_mohm"] is not None and len(ebike["resistance_history"]) >= 2, ebike

    # Playwright in a thread of its own: the session's browser tests own the main thread's event loop
    def check_the_card() -> None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                login(page, day_demo)
                page.goto(day_demo.info.url + "#/pack/cabin-weak")
                card = page.locator("#health-card")
                chart = card.locator("figure#chart-weak-cell-7[data-drawn='1']")
                chart.wait_for()
                shown = int(chart.get_attribute("data-points") or 0)
                # the page draws the points the API gave when it loaded (a report may have come since)
                assert abs(shown - len(offsets)) <= 3 and shown >= 10
                assert chart.locator(".uplot canvas").count() == 1
                # the finding in words (the interface's catalogue, from its figures) and its evidence
                text = card.inner_text()
                assert "cell 7 self-discharges" in text and "%/month faster than the pack median" in text
                evidence = card.locator("li.finding[data-kind='weak_cell_self_discharge'] dl.evidence")
                assert "Anchor pairs" in evidence.inner_text() and "rate_pct_month" not in text
                # the resistance trend: none on this pack (its history is minutes apart, a float current
                # barely moves), and the card says why
                assert health["resistance_history"] == []
                card.locator("p.no-trend").wait_for()
                page.screenshot(path=str(screenshots / "health-card-weak-cell.png"), full_page=True)

                # the e-bike's last ride is in its history at 5 s: its card plots the resistance trend
                page.goto(day_demo.info.url + "#/pack/shop-ebike")
                trend_chart = page.locator("#health-card figure#chart-resistance-trend[data-drawn='1']")
                trend_chart.wait_for()
                # live rides go on meanwhile: an hour's point or a window may have come since the API call
                points = int(trend_chart.get_attribute("data-points") or 0)
                assert len(ebike["resistance_history"]) <= points <= len(ebike["resistance_history"]) + 1
                assert trend_chart.locator(".uplot canvas").count() == 1
                shown = page.locator("#health-card [data-metric='resistance'] .v").inner_text()
                assert shown.endswith(" mΩ"), shown
                assert float(shown.split()[0].replace(",", ".")) == pytest.approx(
                    ebike["resistance_mohm"], rel=0.05
                )
                page.screenshot(path=str(screenshots / "health-card-resistance.png"), full_page=True)

                # in French the finding and its evidence are French too (the engine writes English)
                fr = browser.new_context(locale="fr-FR", viewport={"width": 1280, "height": 1000}).new_page()
                fr.on("pageerror", lambda exc: errors.append(str(exc)))
                login(fr, day_demo)
                fr.goto(day_demo.info.url + "#/pack/cabin-weak")
                item = fr.locator("#health-card li.finding[data-kind='weak_cell_self_discharge']")
                item.locator("figure[data-drawn='1']").wait_for()
                said = item.locator("strong").inner_text()
                assert said.startswith("la cellule 7 s'autodécharge de ") and "%/mois" in said, said
                assert "Paires d'ancrages" in item.locator("dl.evidence").inner_text()
                assert "self-discharges" not in fr.locator("#health-card").inner_text()
                assert not errors, errors
            finally:
                browser.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(check_the_card).result()
