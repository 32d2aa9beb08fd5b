"""The engine's model of each chemistry's open-circuit voltage (OCV) curve, and where it is usable.

These are typical published rest-voltage curves (LFP: flat 3.26–3.34 V plateau between two knees; NMC:
a steady slope). They are the engine's *assumption* about a cell, kept apart from the simulator's physics
on purpose: a real cell's curve differs, so nothing here may reach into ``trackingbms.sim``.

A rest voltage tells the SOC only where the curve is steep: the SOC error is (voltage error) / slope, and
with a 1 mV reading and a few mV of relaxation left, anything flatter than ``MIN_SLOPE_MV_PER_PCT`` is
a guess. That rules out the LFP plateau (about 1–2 mV per %), as batmon-ha's ``doc/SoH.md`` found on 412
days of real Daly data (194 of 231 rests sat on the plateau), and leaves LFP only its knees.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

#: a rest voltage is an anchor only where the curve is at least this steep (mV per % SOC)
MIN_SLOPE_MV_PER_PCT = 4.0


@dataclass(frozen=True)
class OcvCurve:
    name: str
    #: (SOC fraction, OCV mV), increasing in both
    table: tuple[tuple[float, float], ...]
    #: at or above this rest voltage the cell is at the top knee (full-charge anchor)
    top_knee_mv: float

    def soc(self, mv: float) -> float:
        """SOC fraction for a rest voltage (clamped to 0–1)."""
        volts = _VOLTS[self.name]
        if mv <= volts[0]:
            return 0.0
        if mv >= volts[-1]:
            return 1.0
        k = bisect_right(volts, mv)
        (s0, v0), (s1, v1) = self.table[k - 1], self.table[k]
        return s0 + (s1 - s0) * (mv - v0) / (v1 - v0)

    def slope_mv_per_pct(self, mv: float) -> float:
        """Steepness of the curve at this voltage (mV per % SOC)."""
        volts = _VOLTS[self.name]
        k = min(max(bisect_right(volts, mv), 1), len(volts) - 1)
        (s0, v0), (s1, v1) = self.table[k - 1], self.table[k]
        return (v1 - v0) / (100 * (s1 - s0))


LFP = OcvCurve(
    "lfp",
    (
        (0.00, 2500),
        (0.02, 2900),
        (0.05, 3050),
        (0.10, 3180),
        (0.20, 3230),
        (0.30, 3260),
        (0.40, 3280),
        (0.50, 3290),
        (0.60, 3300),
        (0.70, 3320),
        (0.80, 3330),
        (0.90, 3340),
        (0.95, 3350),
        (0.98, 3380),
        (1.00, 3450),
    ),
    top_knee_mv=3365,
)
NMC = OcvCurve(
    "nmc",
    (
        (0.00, 3000),
        (0.05, 3300),
        (0.10, 3450),
        (0.20, 3550),
        (0.30, 3620),
        (0.40, 3680),
        (0.50, 3740),
        (0.60, 3820),
        (0.70, 3900),
        (0.80, 3980),
        (0.90, 4080),
        (1.00, 4180),
    ),
    top_knee_mv=4080,
)
LTO = OcvCurve(
    "lto",
    (
        (0.00, 1800),
        (0.05, 2050),
        (0.10, 2150),
        (0.20, 2230),
        (0.30, 2270),
        (0.40, 2300),
        (0.50, 2330),
        (0.60, 2360),
        (0.70, 2400),
        (0.80, 2450),
        (0.90, 2530),
        (1.00, 2700),
    ),
    top_knee_mv=2530,
)
CURVES: dict[str, OcvCurve] = {c.name: c for c in (LFP, NMC, LTO)}
_VOLTS: dict[str, list[float]] = {c.name: [v for _, v in c.table] for c in CURVES.values()}


def guess_chemistry(cells_mv: list[int]) -> str:
    """LFP cells never rest above 3.6 V and NMC rarely below 3.0 V; LTO lives under 2.8 V."""
    hi = max(cells_mv)
    if hi > 3650:
        return "nmc"
    if hi < 2800:
        return "lto"
    return "lfp"
