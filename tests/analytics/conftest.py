"""Helpers: packs run in simulated time through the recorder, their samples fed to the estimator."""

from __future__ import annotations

from typing import Any

from trackingbms.analytics import BatteryEstimator, EstimatorConfig
from trackingbms.sim.config import PackConfig
from trackingbms.sim.record import Recorder

DAY = 86400


def recorded(duration_s: float, interval_s: float, **config: Any) -> tuple[list[dict[str, Any]], Recorder]:
    cfg = PackConfig(step_s=min(interval_s, 60), **config)
    rec = Recorder(cfg)
    return list(rec.run(duration_s, interval_s)), rec


def estimate(samples: list[dict[str, Any]], capacity_ah: float = 100.0, **cfg: Any) -> BatteryEstimator:
    est = BatteryEstimator(EstimatorConfig(rated_capacity_ah=capacity_ah, **cfg))
    for s in samples:
        est.update(s)
    return est
