"""Cell chemistries: open-circuit voltage vs SOC, resistance, self-discharge, Daly-style thresholds.

The OCV tables are typical published curves (rest voltage after relaxation), good enough to make
voltage-based estimators behave as on real packs; they are not a specific manufacturer's cell.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass


@dataclass(frozen=True)
class Chemistry:
    name: str
    #: Daly battery type code (0x53 byte 1, D2 reg 0x89): 0 LiFePO4, 1 Li-ion/NMC, 2 LTO
    type_code: int
    nominal_mv: int
    #: (SOC fraction, OCV mV), increasing
    ocv_table: tuple[tuple[float, float], ...]
    #: resistance × capacity (mΩ·Ah): a 100 Ah LFP cell has about 0.4 mΩ
    r_mohm_ah: float
    self_discharge_pct_month: float
    cell_ov_mv: tuple[int, int]
    cell_uv_mv: tuple[int, int]
    #: an L2 cell-voltage protection releases this far back on the safe side (below the full-rest OCV,
    #: so a full pack stays cut off instead of chattering)
    cell_hyst_mv: int
    balance_start_mv: int
    balance_delta_mv: int = 30

    def ocv_mv(self, soc: float) -> float:
        """OCV at a SOC fraction; linear between table points, extrapolated steeply past either end."""
        table = self.ocv_table
        if soc <= table[0][0]:
            (s0, v0), (s1, v1) = table[0], table[1]
        elif soc >= table[-1][0]:
            (s0, v0), (s1, v1) = table[-2], table[-1]
        else:
            i = bisect_right(_SOCS[self.name], soc)
            (s0, v0), (s1, v1) = table[i - 1], table[i]
        return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)


LFP = Chemistry(
    name="lfp",
    type_code=0,
    nominal_mv=3200,
    ocv_table=(
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
    r_mohm_ah=40.0,
    self_discharge_pct_month=3.0,
    cell_ov_mv=(3600, 3650),
    cell_uv_mv=(2800, 2500),
    cell_hyst_mv=250,
    balance_start_mv=3400,
)

NMC = Chemistry(
    name="nmc",
    type_code=1,
    nominal_mv=3700,
    ocv_table=(
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
    r_mohm_ah=60.0,
    self_discharge_pct_month=2.0,
    cell_ov_mv=(4200, 4250),
    cell_uv_mv=(3000, 2800),
    cell_hyst_mv=150,
    balance_start_mv=4000,
)

LTO = Chemistry(
    name="lto",
    type_code=2,
    nominal_mv=2400,
    ocv_table=(
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
    r_mohm_ah=30.0,
    self_discharge_pct_month=1.0,
    cell_ov_mv=(2750, 2850),
    cell_uv_mv=(1900, 1700),
    cell_hyst_mv=200,
    balance_start_mv=2500,
)

CHEMISTRIES: dict[str, Chemistry] = {c.name: c for c in (LFP, NMC, LTO)}
_SOCS: dict[str, list[float]] = {c.name: [s for s, _ in c.ocv_table] for c in CHEMISTRIES.values()}
