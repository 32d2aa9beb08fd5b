"""The pure parts behind server alarms: rule layering (built-in → tenant → site → battery), fault rules
naming the cell, health findings as metrics, grouped message text."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from trackingbms.analytics.alarms import AlarmEvaluator, health_metrics, sample_metrics
from trackingbms.server.notify import compose
from trackingbms.server.store.alarms import disabled_faults, resolve_rules


def row(rule_id: str, site_id: int | None = None, battery_pk: int | None = None, **values: Any) -> Any:
    cols = dict.fromkeys(
        ("metric", "op", "set_value", "clear_value", "set_delay_s", "clear_delay_s", "severity", "repeat_s",
         "notify_on_clear", "title"),
    )  # fmt: skip
    cols.update(
        {"set_value" if k == "set" else "clear_value" if k == "clear" else k: v for k, v in values.items()}
    )
    enabled = cols.pop("enabled", True)
    ns = SimpleNamespace(rule_id=rule_id, site_id=site_id, battery_pk=battery_pk, enabled=enabled, **cols)
    ns._mapping = {**cols, "enabled": enabled}
    return ns


def test_overrides_layer_field_by_field_and_disable() -> None:
    rows = [
        row("cell_spread", set=100, clear=50),
        row("cell_spread", site_id=1, severity="critical"),
        row("cell_spread", battery_pk=7, set=60, clear=30),
        row("soc_low", site_id=1, enabled=False),
        row("mine", metric="max_temp_c", op=">", set=40, clear=38),
    ]
    by = {r.id: r for r in resolve_rules(rows, site_id=1, battery_pk=7)}
    assert (by["cell_spread"].set, by["cell_spread"].clear, by["cell_spread"].severity) == (
        60,
        30,
        "critical",
    )
    assert "soc_low" not in by and by["mine"].metric == "max_temp_c"
    other = {r.id: r for r in resolve_rules(rows, site_id=2, battery_pk=8)}
    assert (other["cell_spread"].set, other["cell_spread"].severity) == (100, "warning")
    assert "soc_low" in other
    # a row that would make an invalid rule is skipped, the rest still applies
    assert resolve_rules([row("cell_spread", clear=500)], None, None)
    assert disabled_faults([row("fault:soc_low_l1", enabled=False)], 1, 7) == {"fault:soc_low_l1"}


def test_fault_bit_names_the_extreme_cell() -> None:
    cells = [3300] * 16
    cells[11] = 3710
    metrics, where = sample_metrics({"cells_mv": cells, "faults": ["cell_voltage_high_l2", "soc_low_l1"]})
    assert metrics["fault:cell_voltage_high_l2"] == 1.0 and where["fault:cell_voltage_high_l2"] == 12
    assert "fault:soc_low_l1" not in where
    from trackingbms.analytics.alarms import fault_rule

    ev = AlarmEvaluator([fault_rule("cell_voltage_high_l2")])
    (raised,) = ev.evaluate(0.0, metrics, where)
    assert raised.cell == 12 and "cell 12" in raised.message and raised.severity == "critical"
    assert fault_rule("soc_low_l1").severity == "warning"


def test_health_findings_become_metrics() -> None:
    health = {
        "soh_pct": 68.0,
        "resistance_mohm": 3.0,
        "findings": [{"kind": "weak_cell_self_discharge", "cell": 7}, {"kind": "soc_drift", "cell": None}],
    }
    metrics, where = health_metrics(health, resistance_baseline_mohm=2.0)
    assert metrics == {
        "finding:weak_cell": 1.0,
        "finding:soc_drift": 1.0,
        "soh_pct": 68.0,
        "resistance_rise_pct": 50.0,
    }
    assert where == {"finding:weak_cell": 7}
    assert health_metrics({"findings": []})[0] == {"finding:weak_cell": 0.0, "finding:soc_drift": 0.0}


def _item(bid: str, severity: str, event: str = "raised") -> dict[str, Any]:
    return {"battery_id": bid, "battery_name": bid.upper(), "site": "depot", "severity": severity,
            "event": event, "event_message": f"{bid} trouble"}  # fmt: skip


def test_messages_group_a_burst_critical_first() -> None:
    title, body = compose([_item("p1", "warning"), _item("p2", "critical"), _item("p3", "info", "cleared")])
    assert title == "TrackingBMS: 2 raised, 1 cleared on 3 packs"
    lines = body.splitlines()
    assert len(lines) == 3 and lines[0].startswith("[critical] P2") and "p3 trouble" in lines[2]
    title, body = compose([_item("p1", "critical")])
    assert title == "TrackingBMS alarm: P1: p1 trouble" and body.count("\n") == 0


def test_a_batterys_chemistry_picks_its_cell_voltage_thresholds_and_overrides_still_apply() -> None:
    from trackingbms.analytics.alarms import BUILTIN_RULES, CHEMISTRIES
    from trackingbms.analytics.ocv import CURVES

    assert set(CHEMISTRIES) == set(CURVES)  # one list of chemistries: the engine's OCV curves
    for chemistry in (None, "lfp", "nmc", "lto"):
        by = {r.id: r for r in resolve_rules([], None, 7, chemistry)}
        high, low = by["cell_voltage_high"], by["cell_voltage_low"]
        top_mv = CURVES[chemistry or "lfp"].table[-1][1]  # the OCV of a full cell
        empty_mv = CURVES[chemistry or "lfp"].table[0][1]
        # a full cell at rest does not trip over-voltage, a cell 50 mV above the full OCV's limit does;
        # the under-voltage alarm sits above an empty cell's OCV (it warns before the BMS cuts off)
        assert top_mv < high.set and low.set > empty_mv - 200 and low.clear > low.set
        assert high.clear < high.set and high.set - high.clear <= 150
        # everything but the cell voltages is the same for every chemistry
        assert {k: v for k, v in by.items() if not k.startswith("cell_voltage")} == {
            r.id: r for r in BUILTIN_RULES if not r.id.startswith("cell_voltage")
        }
    nmc = {r.id: r for r in resolve_rules([], None, 7, "nmc")}
    assert (nmc["cell_voltage_high"].set, nmc["cell_voltage_low"].set) == (4220, 3000)
    # a healthy NMC cell at 4.15 V is an LFP over-voltage: exactly why the chemistry is set, never guessed
    lfp = {r.id: r for r in resolve_rules([], None, 7, None)}
    assert lfp["cell_voltage_high"].set < 4150 < nmc["cell_voltage_high"].set
    # a tenant's override on top of the chemistry's thresholds: only the fields it sets move
    rows = [row("cell_voltage_high", battery_pk=7, set=4180)]
    mine = {r.id: r for r in resolve_rules(rows, None, 7, "nmc")}["cell_voltage_high"]
    assert (mine.set, mine.clear) == (4180, 4120)
