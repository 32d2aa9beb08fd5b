"""The evaluator's quiet-sample fast path against the full pass: the same samples through both give the
same events and the same saved state (thresholds crossed both ways, delays, reminders, partial samples,
fault bits met on the way, acknowledgements, rules sharing a metric, a fault rule that trips at 0)."""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from typing import Any

import pytest

from trackingbms.analytics.alarms import (
    BUILTIN_RULES,
    AlarmEvaluator,
    Rule,
    fault_rule,
    health_metrics,
    override,
    sample_metrics,
)

RULES: list[Rule] = [
    *(r for r in BUILTIN_RULES if not r.metric.endswith("_s")),
    # a tenant's second rule on a metric a built-in one watches, with its own thresholds
    Rule("cells_warm", "max_cell_mv", ">", 3520, 3480, set_delay_s=5, clear_delay_s=20, repeat_s=90),
    # a fault rule turned around: it trips while the bit is absent (value 0)
    override(fault_rule("charge_mos_off"), {"op": "<", "set": 0.5, "clear": 0.5}),
]
FAULTS = ("cell_voltage_high_l2", "cell_voltage_low_l1", "soc_low_l1", "charge_mos_off")


def walk(rng: random.Random, n: int) -> list[tuple[float, dict[str, Any]]]:
    """Samples wandering across the rules' set and clear thresholds, some partial, faults coming and
    going, at irregular times."""
    t, hi, lo, temp, soc = 1.7e9, 3400.0, 3100.0, 20.0, 50.0
    out = []
    for _ in range(n):
        t += rng.choice((1, 1, 1, 5, 30, 200))
        hi = min(3700, max(3300, hi + rng.gauss(0, 25)))
        lo = min(3250, max(2700, lo + rng.gauss(0, 25)))
        temp = min(55, max(-5, temp + rng.gauss(0, 2)))
        soc = min(100, max(0, soc + rng.gauss(0, 3)))
        cells = [round(lo)] + [round((lo + hi) / 2)] * 14 + [round(hi)]
        rng.shuffle(cells)
        s: dict[str, Any] = {"cells_mv": cells, "temps_c": [round(temp), round(temp) - 1], "soc_pct": soc}
        if rng.random() < 0.8:
            s["faults"] = [f for f in FAULTS if rng.random() < 0.1]
        for k in ("cells_mv", "temps_c", "soc_pct"):
            if rng.random() < 0.05:
                del s[k]  # a partial sample
        out.append((t, s))
    return out


def feed(samples: list[tuple[float, dict[str, Any]]], rng: random.Random, *, fast: bool) -> list[Any]:
    """As the server's alarm service does: fault rules added as bits are met, the health metrics now and
    then, an acknowledgement now and then, saved and resumed; → every event and state snapshots."""
    ev = AlarmEvaluator(RULES, fast=fast)
    out: list[Any] = []
    for k, (t, s) in enumerate(samples):
        metrics, where = sample_metrics(s)
        for name in s.get("faults") or ():
            # soc_low_l1's rule is added late: its bit was seen (ruleless) before it existed
            if name != "charge_mos_off" and (name != "soc_low_l1" or k >= 1500):
                ev.add_rule(fault_rule(name))
        out += [asdict(e) for e in ev.evaluate(t, metrics, where, faults_known=s.get("faults") is not None)]
        r = rng.random()
        if r < 0.02:
            health = {"soh_pct": rng.choice((65.0, 75.0)), "findings": []}
            out += [asdict(e) for e in ev.evaluate(t, *health_metrics(health))]
        elif r < 0.04 and (active := ev.active()):
            ack = ev.acknowledge(active[0]["rule_id"], "alice", t)
            out.append(asdict(ack) if ack else None)
        elif r < 0.05:
            out.append(json.dumps(ev.to_state(), sort_keys=True))  # reading the state mid-way
        if k % 400 == 399:  # saved and resumed, as the server does at every tick
            ev = AlarmEvaluator.from_state(json.loads(json.dumps(ev.to_state())), list(ev.rules.values()))
            ev.fast = fast
    out.append(json.dumps(ev.to_state(), sort_keys=True))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_fast_path_gives_the_events_and_state_of_the_full_pass(seed: int) -> None:
    samples = walk(random.Random(seed), 3000)
    results = {fast: feed(samples, random.Random(seed + 100), fast=fast) for fast in (True, False)}
    raised = [e for e in results[False] if isinstance(e, dict) and e["kind"] == "raised"]
    # the walk must exercise the rules, or the comparison proves nothing
    assert len({e["rule_id"] for e in raised}) >= 5, raised
    assert results[True] == results[False]


def test_quiet_samples_take_the_fast_path() -> None:
    """A sample inside every idle rule's bounds does not walk the rules (what bench/alarms.py measures),
    one outside them does, a busy rule is still evaluated on a quiet sample, and the values kept aside
    reach the tracks."""
    ev = AlarmEvaluator(RULES)
    calls: list[int] = []
    run = ev._run

    def counted(rules: Any, *args: Any) -> Any:
        rules = list(rules)
        calls.append(len(rules))
        return run(rules, *args)

    ev._run = counted  # type: ignore[method-assign]
    quiet = {"max_cell_mv": 3400.0, "min_cell_mv": 3200.0, "soc_pct": 50.0, "max_temp_c": 20.0}
    assert ev.evaluate(0, quiet) == [] and calls == []
    assert ev.evaluate(1, {**quiet, "soc_pct": 5.0}) == []  # soc_low trips, its set delay starts
    assert calls == [len(RULES)]
    assert ev.evaluate(2, {**quiet, "soc_pct": 6.0}) == [] and calls[1:] == [1]  # soc_low alone
    assert ev.evaluate(3, quiet) == [] and calls[2:] == [1]  # soc_low back: idle again
    assert ev.evaluate(4, {**quiet, "max_cell_mv": 3410.0}) == [] and calls[3:] == []
    # faults listed: the turned-around fault rule reads 0 and trips, so the full pass runs
    (raised,) = ev.evaluate(5, quiet, faults_known=True)
    assert raised.rule_id == "fault:charge_mos_off" and calls[3:] == [len(RULES)]
    tracks = ev.tracks
    assert tracks["soc_low"].value == 50.0 and tracks["cell_voltage_high"].value == 3400.0
    assert tracks["cell_spread"].value is None  # never given
    # a metric seen before its rule existed is not that rule's value
    ev.evaluate(6, {**quiet, "fault:new_bit": 1.0})
    ev.add_rule(fault_rule("new_bit"))
    assert ev.tracks["fault:new_bit"].value is None
