"""The dashboard in English and French, in Chromium: the browser's language picks the catalogue, every page
renders with no key missing from it, numbers follow the locale, and the switch is remembered."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from trackingbms.webapp import STATIC_DIR

from .conftest import DemoClient, login

pytestmark = pytest.mark.browser

WAIT_MS = 60_000
MISSES_JS = "() => [...window.__tbmsI18n.misses]"
#: English words of the interface (never data: pack and site names are the user's), absent from French pages
ENGLISH_ONLY = [
    "Last seen",
    "Sign out",
    "Faults",
    "Temperatures",
    "History",
    "Devices",
    "Last contact",
    "Switches",
    "State of charge",
    "Create token",
    "Revoke",
    "never",
    "ago",
]


class Texts(list[str]):
    def append_page(self, page: Any) -> None:
        """The page's text without the gateway's own error messages (data, in English, not interface)."""
        text = page.inner_text("body")
        for err in page.locator("td.err").all_inner_texts():
            text = text.replace(err, "")
        self.append(text)


def visit_every_page(page: Any, demo: DemoClient, screenshots: Path, lang: str) -> str:
    """Sign in, open each view in turn, return all the text shown on them."""
    texts = Texts()
    page.goto(demo.info.url)
    page.wait_for_selector("#login-submit")
    texts.append_page(page)
    login(page, demo)
    texts.append_page(page)
    page.locator(".fleet").screenshot(path=str(screenshots / f"i18n-{lang}-fleet.png"))
    for battery_id in demo.info.batteries:
        page.goto(f"{demo.info.url}#/pack/{battery_id}")
        page.wait_for_selector(f'.pack[data-battery-id="{battery_id}"] .kpis .kpi', timeout=WAIT_MS)
        page.wait_for_selector(".hist-note:not(:empty)", timeout=WAIT_MS)
        texts.append_page(page)
    page.click('.range[data-range="custom"]')
    texts.append_page(page)
    page.goto(f"{demo.info.url}#/devices")
    page.wait_for_selector(".device-card", timeout=WAIT_MS)
    texts.append_page(page)
    for device in demo.get("/api/v1/devices"):
        page.goto(f"{demo.info.url}#/device/{device['device_id']}")
        selector = f'.device[data-device-id="{device["device_id"]}"] #queue-backlog'
        page.wait_for_selector(selector, timeout=WAIT_MS)
        texts.append_page(page)
    page.goto(f"{demo.info.url}#/tokens")
    page.wait_for_selector(".token-form", timeout=WAIT_MS)
    page.fill("#token-name", f"i18n-{lang}")
    page.click(".token-form button[type=submit]")
    page.wait_for_selector(f'tr[data-status="active"]:has-text("i18n-{lang}")', timeout=WAIT_MS)
    texts.append_page(page)
    return "\n".join(texts)


@pytest.mark.parametrize(("locale", "lang"), [("en-US", "en"), ("fr-FR", "fr")])
def test_every_page_renders_in_the_browser_language_with_no_missing_key(
    new_page: Any, demo: DemoClient, screenshots: Path, locale: str, lang: str
) -> None:
    page = new_page(locale=locale)
    text = visit_every_page(page, demo, screenshots, lang)
    assert page.evaluate("document.documentElement.lang") == lang
    assert page.evaluate(MISSES_JS) == []
    catalogue = json.loads((STATIC_DIR / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))
    assert catalogue["pack.kpi.voltage"] in text and catalogue["device.links"] in text
    assert page.inner_text('a[data-nav="fleet"]') == catalogue["nav.fleet"]
    if lang == "fr":
        shown = [w for w in ENGLISH_ONLY if re.search(rf"\b{w}\b", text)]
        assert shown == [], f"English left on the French pages: {shown}"
        # the fault table's French text, and numbers with a decimal comma
        page.goto(f"{demo.info.url}#/pack/shop-charger")
        page.wait_for_selector("#faults .fault", timeout=WAIT_MS)
        assert "Tension de cellule haute" in page.inner_text("#faults")
        assert "," in page.inner_text("#kpi-voltage .kpi-value")
        # the charts' legends too (uPlot's own "Time" label was left in English)
        page.wait_for_selector("#chart-voltage .u-legend", timeout=WAIT_MS)
        legend = page.inner_text("#chart-voltage .u-legend")
        assert catalogue["chart.time"] in legend and "Time" not in legend, legend
        # and its dates: day before month, 24-hour clock (uPlot's own are "11/30/26 8:40pm")
        over = page.locator("#chart-voltage .u-over")
        over.scroll_into_view_if_needed()
        box = over.bounding_box()
        over.hover(position={"x": box["width"] * 0.9, "y": box["height"] / 2})
        when = page.locator("#chart-voltage .u-legend .u-series").first.locator(".u-value").inner_text()
        assert re.fullmatch(r"\d{2}/\d{2}/\d{4} \d{1,2}:\d{2}", when), when  # French: "0:11" after midnight
        assert abs((datetime.strptime(when, "%d/%m/%Y %H:%M") - datetime.now()).total_seconds()) < 86_400
        # an axis tick where the day changes stacks the time over the date, each in French
        tick = page.evaluate(
            "import('/static/js/i18n.js').then((m) => "
            "m.chartDate('{h}{aa}\\n{M}/{D}/{YY}')(new Date(2026, 10, 30, 21, 0)))"
        )
        assert tick == "21 h\n30/11/26", tick
    else:
        page.goto(f"{demo.info.url}#/pack/shop-charger")
        page.wait_for_selector("#faults .fault", timeout=WAIT_MS)
        assert "Cell voltage high" in page.inner_text("#faults")
        assert "." in page.inner_text("#kpi-voltage .kpi-value")
    assert page.evaluate(MISSES_JS) == []


def test_the_language_switch_is_visible_and_remembered(new_page: Any, demo: DemoClient) -> None:
    page = new_page(locale="fr-FR")
    page.goto(demo.info.url)
    page.wait_for_selector("#login-lang")
    assert page.inner_text("#login-submit") == "Se connecter"
    with page.expect_navigation():
        page.select_option("#login-lang", "en")
    page.wait_for_selector("#login-submit")
    assert page.inner_text("#login-submit") == "Sign in"
    login(page, demo)
    assert page.inner_text('a[data-nav="fleet"]') == "Fleet"  # the choice beats the browser's French
    with page.expect_navigation():
        page.select_option("#lang-switch", "fr")
    page.wait_for_selector(".pack-row", timeout=WAIT_MS)
    assert page.inner_text('a[data-nav="fleet"]') == "Parc"
    page.reload()
    page.wait_for_selector(".pack-row", timeout=WAIT_MS)
    assert page.inner_text('a[data-nav="fleet"]') == "Parc"
    assert page.evaluate(MISSES_JS) == []


#: English words of the alarm pages and the Health card, absent from their French versions
ALARM_ENGLISH = [
    "Alarm rules",
    "Acknowledge",
    "Overrides",
    "Severity",
    "All sites",
    "Active alarms",
    "No active alarms",
    "State of health",
    "Weak cells",
    "Enabled",
    "temperature low",
]


@pytest.mark.parametrize(("locale", "lang"), [("en-US", "en"), ("fr-FR", "fr")])
def test_alarm_pages_and_health_card_in_the_browser_language(
    new_page: Any, demo: DemoClient, screenshots: Path, locale: str, lang: str
) -> None:
    catalogue = json.loads((STATIC_DIR / "i18n" / f"{lang}.json").read_text(encoding="utf-8"))
    # a built-in rule every pack trips at once (temperature below 200 °C), to see its name on the Alarms page
    r = demo.http.post(
        "/api/v1/alarm-rules",
        json={"rule_id": "temperature_low", "set": 200, "clear": 201, "set_delay_s": 0},
    )
    assert r.status_code == 201, r.text
    try:
        demo.wait_for(
            "a temperature_low alarm",
            lambda: [a for a in demo.get("/api/v1/alarms") if a["rule_id"] == "temperature_low"],
        )
        page = new_page(locale=locale)
        login(page, demo)
        texts = Texts()
        page.goto(f"{demo.info.url}#/alarms")
        row = page.locator("#alarms-active tr.alarm[data-rule='temperature_low']").first
        row.wait_for(timeout=WAIT_MS)
        said = row.locator("td.alarm-message").inner_text()
        assert catalogue["rule.temperature_low"] in said
        # the figures as a user reads them: value and threshold with their unit, no metric name
        assert f"({catalogue['alarms.threshold']} < 200 °C)" in said and "min_temp_c" not in said, said
        assert catalogue["severity.warning"] == row.locator("span.badge").inner_text()
        texts.append_page(page)
        page.screenshot(path=str(screenshots / f"i18n-{lang}-alarms.png"), full_page=True)
        page.goto(f"{demo.info.url}#/rules")
        rule_row = page.locator("tr[data-rule='cell_spread']")
        rule_row.wait_for(timeout=WAIT_MS)
        assert rule_row.locator("td").first.inner_text() == catalogue["rule.cell_spread"]
        texts.append_page(page)
        for battery_id in demo.info.batteries:
            page.goto(f"{demo.info.url}#/pack/{battery_id}")
            # the card is drawn once its report (or the reason there is none) and the alarm list are in
            page.wait_for_selector("#health-card .health-body > :nth-child(2)", timeout=WAIT_MS)
            assert page.inner_text("#health-card h2") == catalogue["health.card.title"]
            texts.append_page(page)
    finally:
        for o in demo.get("/api/v1/alarm-rules")["overrides"]:
            if o["rule_id"] == "temperature_low":
                assert demo.http.delete(f"/api/v1/alarm-rules/{o['id']}").status_code == 204
    assert page.evaluate(MISSES_JS) == []
    text = "\n".join(texts)
    if lang == "fr":
        shown = [w for w in [*ENGLISH_ONLY, *ALARM_ENGLISH] if re.search(rf"\b{w}\b", text)]
        assert shown == [], f"English left on the French alarm pages: {shown}"
    else:
        assert "Alarm rules" in text and "temperature low" in text
