"""Fleet comparison: each pack against packs of the same chemistry and size, by robust z-scores.

Screening with median / MAD z-scores is the usual first step of fleet anomaly detection (before any
clustering or isolation forest): it needs no training, tolerates the outliers it is looking for, and is
explainable ("resistance 4.1 MAD above like packs"). Packs are compared only within a peer group of the
same chemistry, cell count and rated capacity (within ±15 %), so a 280 Ah bank is never judged against
an e-bike pack.
"""

from __future__ import annotations

from typing import Any

from trackingbms.analytics.regression import robust_z

#: what a pack is compared on, as named in :meth:`BatteryEstimator.health` (and ``temp_rise_c`` if known)
FLEET_METRICS = ("resistance_mohm", "fade_pct", "cell_spread_mv", "temp_rise_c")
#: fewer peers than this and a z-score says nothing
MIN_PEERS = 5
#: |z| at or above this is an outlier worth showing
OUTLIER_Z = 3.5


def _group_key(pack: dict[str, Any]) -> tuple[Any, ...]:
    return (pack.get("chemistry"), pack.get("cell_count"))


def fleet_scores(packs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``packs``: dicts with ``id``, ``chemistry``, ``cell_count``, ``rated_capacity_ah`` and any of
    :data:`FLEET_METRICS` (``fade_pct`` = 100 - SOH). Returns per pack id: ``peers`` (group size),
    ``z`` (metric → z-score, only for metrics with enough peers) and ``outliers`` (metrics with
    |z| ≥ :data:`OUTLIER_Z`)."""
    out: dict[str, dict[str, Any]] = {p["id"]: {"peers": 0, "z": {}, "outliers": []} for p in packs}
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for p in packs:
        groups.setdefault(_group_key(p), []).append(p)
    for members in groups.values():
        # sizes within ±15 % of each pack's rated capacity
        for p in members:
            cap = p.get("rated_capacity_ah")
            peers = [
                q
                for q in members
                if cap is None
                or q.get("rated_capacity_ah") is None
                or abs(q["rated_capacity_ah"] - cap) <= 0.15 * cap
            ]
            out[p["id"]]["peers"] = len(peers)
            for metric in FLEET_METRICS:
                have = [q for q in peers if q.get(metric) is not None]
                if len(have) < MIN_PEERS or p.get(metric) is None:
                    continue
                zs = robust_z([q[metric] for q in have])
                z = zs[[q["id"] for q in have].index(p["id"])]
                out[p["id"]]["z"][metric] = round(z, 2)
                if abs(z) >= OUTLIER_Z:
                    out[p["id"]]["outliers"].append(metric)
    return out
