"""Pure analytics over sample series: health estimators, fleet comparison, small derived figures.

``BatteryEstimator`` (one per battery, streaming, state saved as JSON) and ``fleet_scores`` are
imported lazily so that the server's light imports (cells, connectivity) do not pull in numpy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BatteryEstimator", "EstimatorConfig", "Finding", "fleet_scores"]


def __getattr__(name: str) -> Any:
    if name in ("BatteryEstimator", "EstimatorConfig", "Finding"):
        from trackingbms.analytics import estimator

        return getattr(estimator, name)
    if name == "fleet_scores":
        from trackingbms.analytics.fleet import fleet_scores

        return fleet_scores
    raise AttributeError(name)
