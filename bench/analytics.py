"""Analytics against the simulator's ground truth, and engine speed: ``python bench/analytics.py --json``.

Packs run in simulated time (``trackingbms.sim.record``: the physics at the wire's resolution, no sockets)
and their samples go through :class:`trackingbms.analytics.BatteryEstimator` as they are produced.

* ``health``: packs without a weak cell over 30 simulated days (120 s samples): LFP and NMC; solar,
  e-bike and UPS profiles; capacity fade 0–30 %, resistance growth 0–100 %, current-sensor offset, noise
  and dead band; some with the BMS's SOC 20 points off. SOH error at the end where three full-charge
  anchors were seen and a capacity was estimated; SOC error (hourly, after the first anchor) on the packs
  whose BMS drifted 20 points; any weak-cell finding at any daily check is a false alarm.
* ``resistance``: e-bike and UPS packs sampled every 5 s for 4 days: pack resistance (at 25 °C) against
  the truth's sum of cell resistances.
* ``weak``: packs with one cell self-discharging 3–30 %/month more than the pack's median cell (the
  truth each pack reports, ``truth_excess_pct_month``; healthy cells sit within 2σ of a 15 % spread of
  the chemistry's rate, at most ~1 %/month apart, see ``PackConfig.self_discharge_spread_pct``): hours
  until the engine names that cell (checked every 3 h, at most 72 h), on the profiles where rests or
  repeated cycles make self-discharge observable (UPS, NMC e-bike and solar); LFP solar / e-bike packs
  are run and reported apart, not checked (their only anchors are full charges; see docs/analytics.md).
* ``speed``: engine samples/s on one core over a recorded 16S e-bike series, against the bare cost of
  reading the same samples (parsing ``ts``, fetching fields) in the same run; ``engine_runs_samples_per_s``
  through ``update_run`` in runs of 32, as the server's alarm service feeds it (the resistance packs are
  fed that way too: their figures are those of ``update`` sample by sample).

Targets (exit 1 when one is missed, ``--no-check`` to only measure): SOH p95 |error| ≤ 3 points,
resistance p95 |error| ≤ 10 %, every weak cell flagged within 72 h, no false alarm on any healthy pack,
SOC p95 |error| ≤ 3 points where the BMS drifted 20, ≥ 50,000 samples/s. Thresholds were tuned on
``--seed-base 100`` and ``1000``; the default run judges packs with other seeds (``--seed-base 2000``);
run fresh ones with e.g. ``--seed-base 3000``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from typing import Any

from trackingbms.analytics import BatteryEstimator, EstimatorConfig
from trackingbms.sim.config import PackConfig
from trackingbms.sim.record import Recorder

DAY = 86400


def _excess(truth: dict[str, Any], k: int) -> float:
    """Cell ``k``'s (0-based) self-discharge over the median of the other cells, %/month (the truth)."""
    rates = [c["self_discharge_pct_month"] for c in truth["cells"]]
    others = sorted(r for j, r in enumerate(rates) if j != k)
    mid = len(others) // 2
    median = others[mid] if len(others) % 2 else (others[mid - 1] + others[mid]) / 2
    return rates[k] - median


#: the healthy packs' sampling period (simulated s): 30 days of 54 packs must stay minutes of CPU
HEALTH_INTERVAL_S = 120
PROFILES = ("solar-day", "ebike-ride", "ups")
WEAK_KINDS = ("weak_cell_self_discharge", "weak_cell_low_capacity", "weak_cell_high_resistance")


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, math.ceil(0.95 * len(v)) - 1)]


def health_specs(n: int, base: int) -> list[dict[str, Any]]:
    specs = []
    for k in range(n):
        seed = base + k
        specs.append(
            {
                "seed": seed,
                "chemistry": ("lfp", "nmc")[k % 2],
                "scenario": PROFILES[(k // 2) % 3],
                "capacity_ah": (100.0, 280.0, 50.0)[(k // 6) % 3],
                "capacity_fade_pct": (0.0, 10.0, 20.0, 30.0, 5.0)[k % 5],
                "resistance_growth_pct": (0.0, 50.0, 100.0, 25.0)[k % 4],
                "current_offset_a": (0.05, -0.1, 0.2, 0.0)[(k // 3) % 4],
                "current_noise_a": (0.0, 0.2, 0.5)[k % 3],
                "current_deadband_a": (0.2, 0.5, 1.0)[(k // 4) % 3],
                "bms_soc_error_pct": (20.0, -20.0, 0.0, 0.0)[k % 4],
                "soc_pct": 60.0,
            }
        )
    return specs


def run_health(spec: dict[str, Any]) -> dict[str, Any]:
    cfg = PackConfig(step_s=HEALTH_INTERVAL_S, ambient_c=25.0, **spec)
    rec = Recorder(cfg)
    est = BatteryEstimator(EstimatorConfig(rated_capacity_ah=cfg.capacity_ah))
    soc_errors: list[float] = []
    false_alarms: list[str] = []
    next_check = DAY
    t0 = None
    for s in rec.run(30 * DAY, HEALTH_INTERVAL_S):
        est.update(s)
        t = datetime.fromisoformat(s["ts"]).timestamp()
        t0 = t0 if t0 is not None else t
        el = t - t0
        if el >= next_check:
            next_check += DAY
            for f in est.health()["findings"]:
                if f["kind"] in WEAK_KINDS:
                    false_alarms.append(f"day {el / DAY:.0f}: {f['message']}")
        if spec["bms_soc_error_pct"] and int(el) % 3600 == 0:
            soc = est.soc_estimate()
            if soc is not None:
                soc_errors.append(soc - rec.battery.true_soc_pct())
    h = est.health()
    truth = rec.truth()
    soh_err = None
    if h["soh_pct"] is not None and h["full_charge_anchors"] >= 3:
        soh_err = h["soh_pct"] - truth["soh_pct"]
    return {
        "spec": spec,
        "soh_pct": h["soh_pct"],
        "truth_soh_pct": truth["soh_pct"],
        "soh_error": soh_err,
        "full_charge_anchors": h["full_charge_anchors"],
        "segments": h["capacity"]["segments"],
        "soc_errors": soc_errors,
        "bms_soc_error_end": round(truth["bms_soc_pct"] - truth["soc_pct"], 1),
        "false_alarms": false_alarms[:3],
        "max_cell_excess_pct_month": round(max(_excess(truth, k) for k in range(len(truth["cells"]))), 3),
    }


def resistance_specs(n: int, base: int) -> list[dict[str, Any]]:
    return [
        {
            "seed": base + 500 + k,
            "chemistry": ("lfp", "nmc")[k % 2],
            "scenario": ("ebike-ride", "ups")[(k // 2) % 2],
            "capacity_ah": (100.0, 50.0, 280.0)[k % 3],
            "resistance_growth_pct": (0.0, 30.0, 60.0, 100.0)[k % 4],
            "current_noise_a": (0.0, 0.2, 0.5)[(k // 2) % 3],
            "soc_pct": 70.0,
        }
        for k in range(n)
    ]


def run_resistance(spec: dict[str, Any]) -> dict[str, Any]:
    cfg = PackConfig(step_s=5, **spec)
    rec = Recorder(cfg)
    est = BatteryEstimator(EstimatorConfig(rated_capacity_ah=cfg.capacity_ah))
    # in runs of 32, as the server's alarm service feeds it (update_run: the same figures as update)
    run: list[tuple[float, dict[str, Any]]] = []
    for s in rec.run(4 * DAY, 5):
        run.append((datetime.fromisoformat(s["ts"]).timestamp(), s))
        if len(run) == 32:
            est.update_run(run)
            run = []
    est.update_run(run)
    h = est.health()
    truth = rec.truth()
    r_true = sum(c["resistance0_mohm"] for c in truth["cells"])  # type: ignore[union-attr]
    r = h["resistance_mohm"]
    return {
        "spec": spec,
        "resistance_mohm": r,
        "truth_mohm": round(r_true, 4),
        "error_pct": None if r is None else 100 * (r - r_true) / r_true,
        "windows": h["resistance"]["windows"],
    }


#: where a cell's self-discharge is observable in the data (see docs/analytics.md): the check covers these
WEAK_COVERED = (("lfp", "ups"), ("nmc", "ups"), ("nmc", "ebike-ride"), ("nmc", "solar-day"))
#: measured and reported, not checked: LFP packs whose only anchors are full charges that end clipped
WEAK_UNCOVERED = (("lfp", "solar-day"), ("lfp", "ebike-ride"))


def weak_specs(
    n: int, base: int, profiles: tuple[tuple[str, str], ...] = WEAK_COVERED
) -> list[dict[str, Any]]:
    return [
        {
            "seed": base + 800 + k,
            "chemistry": profiles[k % len(profiles)][0],
            "scenario": profiles[k % len(profiles)][1],
            "weak_cell": 1 + (k * 5) % 16,
            "weak_cell_extra_self_discharge_pct_month": (3.0, 5.0, 10.0, 30.0)[(k // len(profiles)) % 4],
            "current_noise_a": (0.0, 0.2)[k % 2],
            "soc_pct": 80.0,
        }
        for k in range(n)
    ]


def run_weak(spec: dict[str, Any]) -> dict[str, Any]:
    cfg = PackConfig(step_s=60, **spec)
    rec = Recorder(cfg)
    est = BatteryEstimator(EstimatorConfig(rated_capacity_ah=cfg.capacity_ah))
    flagged_h = None
    wrong: list[int] = []
    t0 = None
    next_check = 3 * 3600
    for s in rec.run(72 * 3600, 60):
        est.update(s)
        t = datetime.fromisoformat(s["ts"]).timestamp()
        t0 = t0 if t0 is not None else t
        if t - t0 >= next_check:
            next_check += 3 * 3600
            cells = {f["cell"] for f in est.health()["findings"] if f["kind"] in WEAK_KINDS}
            wrong += sorted(cells - {spec["weak_cell"]})
            if flagged_h is None and spec["weak_cell"] in cells:
                flagged_h = round((t - t0) / 3600, 1)
    return {
        "spec": spec,
        "flagged_after_h": flagged_h,
        "other_cells_flagged": sorted(set(wrong)),
        "truth_excess_pct_month": round(_excess(rec.truth(), spec["weak_cell"] - 1), 3),
    }


def bench_speed() -> dict[str, Any]:
    samples = list(Recorder(PackConfig(step_s=5, chemistry="nmc", scenario="ebike-ride", seed=7)).run(DAY, 5))

    def bare() -> float:
        start = time.perf_counter()
        for s in samples:
            datetime.fromisoformat(s["ts"]).timestamp()
            s.get("current_a"), s.get("cells_mv"), s.get("soc_pct"), s.get("temps_c"), s.get("balancing")
        return len(samples) / (time.perf_counter() - start)

    def engine() -> float:
        est = BatteryEstimator(EstimatorConfig(rated_capacity_ah=100))
        start = time.perf_counter()
        for s in samples:
            est.update(s)
        return len(samples) / (time.perf_counter() - start)

    def engine_runs() -> float:
        est = BatteryEstimator(EstimatorConfig(rated_capacity_ah=100))
        start = time.perf_counter()
        pairs = [(datetime.fromisoformat(s["ts"]).timestamp(), s) for s in samples]
        for k in range(0, len(pairs), 32):
            est.update_run(pairs[k : k + 32])
        return len(samples) / (time.perf_counter() - start)

    base = max(bare() for _ in range(3))
    eng = max(engine() for _ in range(3))
    eng_runs = max(engine_runs() for _ in range(3))
    return {
        "samples": len(samples),
        "engine_samples_per_s": round(eng),
        # update_run over runs of 32 (the alarm service's path), ts parsed in the timing as above
        "engine_runs_samples_per_s": round(eng_runs),
        "baseline_read_only_samples_per_s": round(base),
        "engine_vs_read_only": round(eng / base, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--no-check", action="store_true", help="only measure; exit 0 whatever the figures")
    ap.add_argument(
        "--seed-base", type=int, default=2000, help="first seed (thresholds tuned on 100 and 1000)"
    )
    ap.add_argument("--healthy", type=int, default=54, help="healthy packs (30 days each)")
    ap.add_argument("--resistance", type=int, default=8, help="packs for the resistance check (4 days, 5 s)")
    ap.add_argument("--weak", type=int, default=12, help="packs with a self-discharging cell (72 h)")
    ap.add_argument(
        "--weak-uncovered", type=int, default=2, help="weak-cell packs on LFP solar / e-bike (reported only)"
    )
    ap.add_argument("--jobs", type=int, default=2, help="worker processes")
    ap.add_argument("--details", action="store_true", help="include every pack's result")
    args = ap.parse_args()
    started = time.perf_counter()
    speed = bench_speed()
    with ProcessPoolExecutor(args.jobs) as pool:
        health = list(pool.map(run_health, health_specs(args.healthy, args.seed_base)))
        resistance = list(pool.map(run_resistance, resistance_specs(args.resistance, args.seed_base)))
        weak = list(pool.map(run_weak, weak_specs(args.weak, args.seed_base)))
        uncovered = list(
            pool.map(run_weak, weak_specs(args.weak_uncovered, args.seed_base + 50, WEAK_UNCOVERED))
        )

    soh_errors = [abs(r["soh_error"]) for r in health if r["soh_error"] is not None]
    soc_errors = [abs(e) for r in health for e in r["soc_errors"]]
    r_errors = [abs(r["error_pct"]) for r in resistance if r["error_pct"] is not None]
    false_alarm_packs = [r for r in health if r["false_alarms"]]
    missed = [r for r in weak if r["flagged_after_h"] is None]
    wrong_cells = [r for r in weak if r["other_cells_flagged"]]

    def by(results: list[dict[str, Any]], key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in results:
            name = f"{r['spec']['chemistry']}/{r['spec']['scenario']}"
            out[name] = out.get(name, 0) + (1 if r.get(key) is not None else 0)
        return out

    figures: dict[str, Any] = {
        "soh": {
            "packs": len(health),
            "estimated": len(soh_errors),
            "estimated_by_profile": by(health, "soh_error"),
            "p95_abs_error_pts": _r(_p95(soh_errors)),
            "max_abs_error_pts": _r(max(soh_errors, default=None)),
        },
        "resistance": {
            "packs": len(resistance),
            "estimated": len(r_errors),
            "p95_abs_error_pct": _r(_p95(r_errors)),
            "max_abs_error_pct": _r(max(r_errors, default=None)),
        },
        "soc": {
            "packs_bms_drifted_20": sum(1 for r in health if r["spec"]["bms_soc_error_pct"]),
            "hourly_points": len(soc_errors),
            "p95_abs_error_pts": _r(_p95(soc_errors)),
            "bms_abs_error_end_median_pts": _r(
                sorted(abs(r["bms_soc_error_end"]) for r in health if r["spec"]["bms_soc_error_pct"])[
                    len([r for r in health if r["spec"]["bms_soc_error_pct"]]) // 2
                ]
                if any(r["spec"]["bms_soc_error_pct"] for r in health)
                else None
            ),
        },
        "weak_cells": {
            "packs": len(weak),
            "flagged_within_72h": len(weak) - len(missed),
            "max_hours_to_flag": max(
                (r["flagged_after_h"] for r in weak if r["flagged_after_h"]), default=None
            ),
            "missed": [r["spec"] for r in missed],
            "other_cells_flagged": [
                {"spec": r["spec"], "cells": r["other_cells_flagged"]} for r in wrong_cells
            ],
            "truth_excess_pct_month_min": _r(min((r["truth_excess_pct_month"] for r in weak), default=None)),
            "profiles": [f"{c}/{p}" for c, p in WEAK_COVERED],
            "not_covered_lfp_solar_ebike": {
                "packs": len(uncovered),
                "flagged_within_72h": sum(1 for r in uncovered if r["flagged_after_h"] is not None),
                "other_cells_flagged": sum(1 for r in uncovered if r["other_cells_flagged"]),
            },
        },
        "false_alarms": {
            "healthy_packs": len(health),
            "packs_with_false_alarm": len(false_alarm_packs),
            "truth_max_cell_excess_pct_month": _r(
                max((r["max_cell_excess_pct_month"] for r in health), default=None)
            ),
            "examples": [{"spec": r["spec"], "findings": r["false_alarms"]} for r in false_alarm_packs[:3]],
        },
        "speed": speed,
    }
    checks = {
        "soh_p95_within_3_pts": figures["soh"]["p95_abs_error_pts"] is not None
        and figures["soh"]["p95_abs_error_pts"] <= 3.0,
        "resistance_p95_within_10_pct": figures["resistance"]["p95_abs_error_pct"] is not None
        and figures["resistance"]["p95_abs_error_pct"] <= 10.0,
        "weak_cell_flagged_within_72h": not missed and not wrong_cells,
        "no_false_alarm_on_healthy_packs": not false_alarm_packs and len(health) >= 50,
        "soc_p95_within_3_pts_where_bms_drifted_20": figures["soc"]["p95_abs_error_pts"] is not None
        and figures["soc"]["p95_abs_error_pts"] <= 3.0,
        "engine_at_least_50k_samples_per_s": speed["engine_samples_per_s"] >= 50_000,
    }
    out = {
        "seed_base": args.seed_base,
        "figures": figures,
        "checks": checks,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if args.details:
        out["details"] = {"health": health, "resistance": resistance, "weak": weak}
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        for name, ok in checks.items():
            print(f"{'ok  ' if ok else 'MISS'} {name}")
        print(json.dumps(figures, indent=2, default=str))
    return 0 if args.no_check or all(checks.values()) else 1


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


if __name__ == "__main__":
    sys.exit(main())
