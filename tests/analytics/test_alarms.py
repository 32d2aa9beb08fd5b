"""Alarm rules: set / clear hysteresis, delays, one alarm per rule, acknowledge, reminders, recovery."""

from __future__ import annotations

import json

import pytest

from trackingbms.analytics.alarms import BUILTIN_RULES, AlarmEvaluator, Rule, fault_rule, sample_metrics

HIGH = Rule("cell_high", "max_cell_mv", ">", 3600, 3450, set_delay_s=10, clear_delay_s=60, repeat_s=600)


def feed(ev: AlarmEvaluator, points: list[tuple[float, float]], metric: str = "max_cell_mv") -> list:
    out = []
    for t, v in points:
        out += ev.evaluate(t, {metric: v}, {metric: 12})
    return out


def test_set_delay_hysteresis_and_clear_delay() -> None:
    ev = AlarmEvaluator([HIGH])
    # a spike shorter than the set delay raises nothing
    assert feed(ev, [(0, 3650), (5, 3500)]) == []
    events = feed(ev, [(10, 3650), (15, 3650), (20, 3650)])
    assert [e.kind for e in events] == ["raised"] and events[0].t == 20
    assert events[0].notify and events[0].cell == 12
    assert events[0].message == "cell high on cell 12 (max_cell_mv 3650, set > 3600)"
    # inside the hysteresis band: still active, no new message (one per crossing)
    assert feed(ev, [(30, 3500), (100, 3460), (105, 3700)]) == []
    # back past clear, but not for long enough
    assert feed(ev, [(110, 3400), (150, 3500)]) == []
    events = feed(ev, [(160, 3400), (220, 3400)])
    assert [e.kind for e in events] == ["cleared"] and events[0].notify
    assert ev.active() == []


def test_reminders_until_acknowledged() -> None:
    ev = AlarmEvaluator([HIGH])
    feed(ev, [(0, 3700), (10, 3700)])
    assert [e.kind for e in feed(ev, [(300, 3700), (610, 3700)])] == ["repeat"]
    ack = ev.acknowledge("cell_high", "alice", 700)
    assert ack is not None and ack.by == "alice" and ack.kind == "acknowledged"
    assert ev.acknowledge("cell_high", "bob", 710) is None  # already acknowledged
    assert feed(ev, [(2000, 3700), (5000, 3700)]) == []  # no reminders once acknowledged
    (active,) = ev.active()
    assert active["status"] == "acknowledged" and active["acked_by"] == "alice"


def test_low_rule_and_quiet_recovery() -> None:
    low = Rule("soc_low", "soc_pct", "<", 10, 11.5, notify_on_clear=False)
    ev = AlarmEvaluator([low])
    assert [e.kind for e in feed(ev, [(0, 9.0)], "soc_pct")] == ["raised"]
    assert feed(ev, [(10, 11.0)], "soc_pct") == []
    (cleared,) = feed(ev, [(20, 12.0)], "soc_pct")
    assert cleared.kind == "cleared" and not cleared.notify


def test_absent_metric_neither_raises_nor_clears_but_faults_do() -> None:
    rule = fault_rule("cell_voltage_high_l2")
    ev = AlarmEvaluator([HIGH, rule])
    metrics, cells = sample_metrics({"cells_mv": [3300, 3700, 3310], "faults": ["cell_voltage_high_l2"]})
    assert cells["max_cell_mv"] == 2
    events = ev.evaluate(0, metrics, cells, faults_known=True)
    assert [e.rule_id for e in events] == ["fault:cell_voltage_high_l2"]
    # what a notification says: the bit and its cell, not the bit's "1, set > 0.5"
    assert events[0].message == "cell voltage high l2 on cell 2 (BMS fault bit)"
    assert ev.evaluate(100, {}) == []  # a partial sample: nothing known, nothing changes
    events = ev.evaluate(200, {"max_cell_mv": 3300}, faults_known=True)  # faults listed, this one gone
    assert [e.kind for e in events] == ["cleared"]


def test_state_round_trip_and_bad_rules() -> None:
    ev = AlarmEvaluator([HIGH])
    feed(ev, [(0, 3700), (5, 3700)])  # pending, not raised yet
    resumed = AlarmEvaluator.from_state(json.loads(json.dumps(ev.to_state())), [HIGH])
    assert [e.kind for e in feed(resumed, [(10, 3700)])] == ["raised"]
    with pytest.raises(ValueError, match="safe side"):
        Rule("x", "soc_pct", "<", 10, 5)
    with pytest.raises(ValueError, match="version"):
        AlarmEvaluator.from_state({"version": 0})


def test_builtin_rules_are_valid_and_unique() -> None:
    ids = [r.id for r in BUILTIN_RULES]
    assert len(ids) == len(set(ids))
    assert {"cell_voltage_high", "cell_voltage_low", "cell_spread", "soc_low", "offline", "weak_cell"} <= set(
        ids
    )
