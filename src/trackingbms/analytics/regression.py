"""Small regressions the estimators need, written out because each is a few lines of closed form.

* Deming regression (errors in both variables), as batmon-ha's ``bmslib/impedance.py`` uses for cell
  resistance: ordinary least squares of voltage on a noisy current is biased towards zero (attenuation),
  about 10 % low on real Daly data.
* Theil–Sen slope (median of pairwise slopes): a drift rate that one bad point cannot move.
* Robust z-score (median / MAD × 1.4826), the usual screening statistic for fleets of like packs.
"""

from __future__ import annotations

import math
from statistics import median

import numpy as np


def deming(x: np.ndarray, y: np.ndarray, ratio: float) -> tuple[float, float]:
    """Slope of y on x when both are noisy; ``ratio`` = var(y noise) / var(x noise). Returns (slope, r²)."""
    xm, ym = x - x.mean(), y - y.mean()
    sxx, syy, sxy = float(xm @ xm), float(ym @ ym), float(xm @ ym)
    if sxx <= 0 or sxy == 0:
        return math.nan, 0.0
    d = syy - ratio * sxx
    slope = (d + math.sqrt(d * d + 4 * ratio * sxy * sxy)) / (2 * sxy)
    r2 = sxy * sxy / (sxx * syy) if syy > 0 else 0.0
    return slope, r2


def deming_columns(x: np.ndarray, ys: np.ndarray, ratio: float) -> list[float]:
    """:func:`deming` slopes of each column of ``ys`` on the same ``x`` at once (NaN where undefined)."""
    xm = x - x.mean()
    ym = ys - ys.mean(axis=0)
    sxx = float(xm @ xm)
    syy = (ym * ym).sum(axis=0)
    sxy = xm @ ym
    d = syy - ratio * sxx
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (d + np.sqrt(d * d + 4 * ratio * sxy * sxy)) / (2 * sxy)
    return [float(v) for v in slope]


def theil_sen(ts: list[float], ys: list[float]) -> float:
    """Median of the pairwise slopes (at most a few hundred points in practice)."""
    slopes = [
        (ys[j] - ys[i]) / (ts[j] - ts[i])
        for i in range(len(ts))
        for j in range(i + 1, len(ts))
        if ts[j] > ts[i]
    ]
    return median(slopes) if slopes else math.nan


def robust_z(values: list[float]) -> list[float]:
    """(x - median) / (1.4826 · MAD); 0 for every value when the spread is nil."""
    if not values:
        return []
    m = median(values)
    mad = median(abs(v - m) for v in values) * 1.4826
    if mad == 0:
        return [0.0] * len(values)
    return [(v - m) / mad for v in values]
