"""Alarms in the browser against the running demo: the Alarms page (active first, acknowledge, filters,
history), the rules page, the fleet's Alarms column and the pack page's Health card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.web.conftest import DemoClient, login

pytestmark = pytest.mark.browser

RULE = "web_test_soc_seen"


def test_alarm_raised_acknowledged_in_the_page_then_cleared_to_history(
    new_page: Any, demo: DemoClient, screenshots: Path
) -> None:
    # a rule every pack with a SOC trips at once (SOC above -1 %), so the test does not wait for physics
    r = demo.http.post(
        "/api/v1/alarm-rules",
        json={"rule_id": RULE, "metric": "soc_pct", "op": ">", "set": -1, "clear": -2, "severity": "info"},
    )
    assert r.status_code == 201, r.text
    rule_pk = r.json()["id"]
    try:
        demo.wait_for(
            "the rule's alarms", lambda: [a for a in demo.get("/api/v1/alarms") if a["rule_id"] == RULE]
        )
        page = new_page()
        login(page, demo)
        # the fleet counts active alarms per pack
        page.wait_for_selector(".c-alarms .alarm-count")
        page.goto(demo.info.url + "#/alarms")
        rows = page.locator(f"#alarms-active tr.alarm[data-status='raised'][data-rule='{RULE}']")
        rows.first.wait_for()
        # severity filter: none of these are critical
        page.select_option("#alarm-severity", "critical")
        page.wait_for_function(f"() => !document.querySelector(\"#alarms-active tr[data-rule='{RULE}']\")")
        page.select_option("#alarm-severity", "info")
        rows.first.wait_for()
        alarm_id = rows.first.get_attribute("data-alarm-id")
        rows.first.locator("button.ack").click()
        acked = page.locator(f"tr.alarm[data-alarm-id='{alarm_id}'][data-status='acknowledged']")
        acked.wait_for()
        assert demo.info.email in acked.locator("td.acked").inner_text()
        page.screenshot(path=str(screenshots / "alarms.png"), full_page=True)
        api_alarm = next(a for a in demo.get("/api/v1/alarms") if str(a["id"]) == alarm_id)
        assert api_alarm["acknowledged_by"] == demo.info.email
    finally:
        assert demo.http.delete(f"/api/v1/alarm-rules/{rule_pk}").status_code == 204
    # the rule is gone: its alarms are history
    page.reload()
    page.locator(f"#alarms-history tr.alarm[data-alarm-id='{alarm_id}'][data-status='cleared']").wait_for()
    assert page.locator(f"#alarms-active tr.alarm[data-rule='{RULE}']").count() == 0


def test_rules_page_changes_a_threshold_for_the_tenant(new_page: Any, demo: DemoClient) -> None:
    page = new_page()
    login(page, demo)
    page.goto(demo.info.url + "#/rules")
    row = page.locator("tr[data-rule='cell_spread']")
    row.wait_for()
    # the table's cell-voltage thresholds are LFP's: the page says where other chemistries start
    chemistries = page.locator("#rules-chemistry").inner_text()
    assert "NMC over 4,220 mV, under 3,000 mV" in chemistries and "LTO" in chemistries, chemistries
    row.locator("input.rule-set").fill("95")
    row.locator("button.save").click()
    page.locator("#rules-note:has-text('Saved cell_spread')").wait_for()  # set once the table is redrawn
    overrides = demo.get("/api/v1/alarm-rules")["overrides"]
    mine = [o for o in overrides if o["rule_id"] == "cell_spread" and o["scope"] == "tenant"]
    assert len(mine) == 1 and mine[0]["set"] == 95
    # a wrong value is refused with the server's reason, nothing saved
    row.locator("input.rule-clear").fill("500")
    row.locator("button.save").click()
    page.locator("#rules-note:has-text('safe side')").wait_for()
    page.locator(f"tr[data-override-id='{mine[0]['id']}'] button.delete").click()
    page.locator("#rules-note:has-text('Override removed')").wait_for()
    assert not [o for o in demo.get("/api/v1/alarm-rules")["overrides"] if o["rule_id"] == "cell_spread"]


def test_pack_page_health_card(new_page: Any, demo: DemoClient, screenshots: Path) -> None:
    # the server analyses on its timer (30 s by default): wait for the first report
    demo.wait_for(
        "a health report for the Old bank",
        lambda: demo.get("/api/v1/batteries/cabin-weak/health")["health"],
        deadline_s=120,
    )
    health = demo.get("/api/v1/batteries/cabin-weak/health")["health"]
    page = new_page()
    login(page, demo)
    page.goto(demo.info.url + "#/pack/cabin-weak")
    card = page.locator("#health-card")
    card.locator(".kv[data-metric='soh']").wait_for()
    text = card.inner_text()
    assert "State of health" in text and "Resistance" in text and "Weak cells" in text
    if health["soh_pct"] is None:  # what the engine cannot tell yet comes with its reason
        assert (health["reasons"].get("soh_pct") or health["reasons"]["capacity_ah"])[:30] in text
    for f in health["findings"]:
        assert f["message"] in text
    page.screenshot(path=str(screenshots / "health-card.png"), full_page=True)
