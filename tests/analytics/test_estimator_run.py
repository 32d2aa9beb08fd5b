"""``BatteryEstimator.update_run`` (the server's path: a battery's run of samples with the state in locals)
against ``update`` sample by sample: the same saved state, bit for bit, and the same health report, over
simulated packs whose samples are cut into runs of every size, with gaps, partial samples, replayed and
repeated ones, balancing flags, a sample with another cell count, and a save / resume mid-way."""

from __future__ import annotations

import json
import random
from datetime import datetime
from typing import Any

import pytest

from trackingbms.analytics import BatteryEstimator, EstimatorConfig

from .conftest import DAY, recorded


def _t(s: dict[str, Any]) -> float:
    return datetime.fromisoformat(s["ts"]).timestamp()


def roughen(samples: list[dict[str, Any]], rng: random.Random) -> list[tuple[float, dict[str, Any]]]:
    """(t, sample) pairs as a server meets them: mostly in order, with what gateways get wrong."""
    out: list[tuple[float, dict[str, Any]]] = []
    shift = 0.0
    for k, s in enumerate(samples):
        s = dict(s)
        r = rng.random()
        if r < 0.002:
            shift += rng.choice((301.0, 900.0, 4000.0))  # a gap: counting breaks
        elif r < 0.006:
            del s["current_a"]  # a partial sample
        elif r < 0.008:
            s["cells_mv"] = []
        elif r < 0.009:
            s["cells_mv"] = s["cells_mv"][:-1]  # another cell count: skipped by the engine
        elif r < 0.011:
            s.pop("remaining_ah", None)
        i = s.get("current_a")
        if i is not None and abs(i) < 0.5 and rng.random() < 0.3:
            s["current_a"] = rng.choice((0.0, 0.3, -0.3))  # sensor noise at rest: a small current counted
        if rng.random() < 0.05:
            # flags of cells, one past the last too
            s["balancing"] = rng.sample(range(1, len(s.get("cells_mv") or [1]) + 2), 2)
        t = _t(s) + shift
        out.append((t, s))
        if rng.random() < 0.01 and k > 5:
            out.append(out[-rng.randint(1, 5)])  # replayed: older or the same ts
    return out


def fed(
    pairs: list[tuple[float, dict[str, Any]]], rng: random.Random, cfg: EstimatorConfig, *, run: bool
) -> Any:
    """Cut into runs of random sizes (one sample, a batch edge, a few windows' worth), each through
    ``update_run`` (``run``) or ``update`` one by one; → the saved state after every run (a state that
    differs only for a while shows there), the last state and the health report. Saved and
    resumed once in the middle, as the server does at a tick."""
    est = BatteryEstimator(cfg, battery_id="p")
    snapshots: list[str] = []
    k = 0
    while k < len(pairs):
        size = rng.choice((1, 2, 7, 31, 64, 300, 1000))
        chunk = pairs[k : k + size]
        if run:
            est.update_run(chunk)
        else:
            for t, s in chunk:
                est.update(s, t)
        k += size
        snapshots.append(json.dumps(est.to_state()))
        if k <= len(pairs) // 2 < k + size:
            est = BatteryEstimator.from_state(json.loads(json.dumps(est.to_state())))
    return snapshots, json.dumps(est.to_state()), est.health()


SCENARIOS = [
    # 5 s samples: resistance windows close on time, rides excite them
    ({"chemistry": "nmc", "scenario": "ebike-ride", "seed": 22, "resistance_growth_pct": 60}, DAY, 5),
    # rests and anchors at both knees, a weak cell, balancing
    ({"chemistry": "lfp", "scenario": "ups", "seed": 41, "capacity_fade_pct": 10}, 3 * DAY, 30),
    ({"chemistry": "nmc", "scenario": "solar-day", "seed": 7, "current_noise_a": 0.2}, 2 * DAY, 10),
]


@pytest.mark.parametrize(("config", "duration_s", "interval_s"), SCENARIOS)
def test_runs_give_the_state_of_sample_by_sample(
    config: dict[str, Any], duration_s: float, interval_s: float
) -> None:
    samples, _ = recorded(duration_s, interval_s, **config)
    pairs = roughen(samples, random.Random(config["seed"]))
    cfg = EstimatorConfig(rated_capacity_ah=100.0)
    one_by_one = fed(pairs, random.Random(0), cfg, run=False)
    # the walk must reach what the run path hands back to update(), or the comparison proves little
    est = json.loads(one_by_one[1])
    assert est["chain"] >= 3 and est["skipped"] >= 1 and est["rest_anchors"] + est["full_anchors"] >= 1
    assert any(est["bleed_ah"])
    assert fed(pairs, random.Random(0), cfg, run=True) == one_by_one
    for seed in (1, 2):  # other cuts: the same end
        assert fed(pairs, random.Random(seed), cfg, run=True)[1:] == one_by_one[1:]


def test_windows_close_in_the_run() -> None:
    """At 5 s a resistance window closes every 300 s, inside the runs: the windows found are the same."""
    samples, _ = recorded(DAY, 5, chemistry="nmc", scenario="ebike-ride", seed=22)
    pairs = [(_t(s), s) for s in samples]
    cfg = EstimatorConfig(rated_capacity_ah=100.0)
    one_by_one = fed(pairs, random.Random(1), cfg, run=False)
    assert one_by_one[2]["resistance"]["windows"] >= 3
    assert fed(pairs, random.Random(1), cfg, run=True) == one_by_one


class _RefitAtRestEnd(BatteryEstimator):
    """Fits a new current offset at every rest's end (the real fit needs two full cycles in one chain,
    rarer than a short simulation gives): the samples after it, in the same run, read the new one."""

    def _rest_end(self) -> None:
        super()._rest_end()
        self.offset_a += 0.01


def test_an_offset_fitted_at_a_rest_end_corrects_the_rest_of_the_run() -> None:
    samples, _ = recorded(DAY, 5, chemistry="nmc", scenario="ebike-ride", seed=22)
    pairs = roughen(samples, random.Random(3))
    cfg = EstimatorConfig(rated_capacity_ah=100.0)
    one, runs = _RefitAtRestEnd(cfg), _RefitAtRestEnd(cfg)
    for t, s in pairs:
        one.update(s, t)
    for k in range(0, len(pairs), 64):
        runs.update_run(pairs[k : k + 64])
    assert one.offset_a > 0.05  # rests ended inside runs
    assert json.dumps(runs.to_state()) == json.dumps(one.to_state())
