"""Battery physics and the BMS's own logic (protections, balancing, its SOC estimate).

Sign convention everywhere in here: positive current = charging (into the pack). Cell voltage is
``OCV(soc) + I·R`` so charging raises it. Time only moves through :meth:`Battery.step`, in fixed steps,
so a run is the same whether it is polled every 100 ms or once a day.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from trackingbms.sim.chemistry import CHEMISTRIES, Chemistry
from trackingbms.sim.config import PackConfig
from trackingbms.sim.scenarios import PackView, Scenario, make_scenario

SECONDS_PER_MONTH = 30 * 86400
#: currents below this (A) neither wake a sleeping BMS nor keep it awake
WAKE_CURRENT_A = 1.0


@dataclass
class Thresholds:
    """Daly protection parameters (what 0x59–0x5F report). Pairs are (L1 warning, L2 alarm)."""

    cell_ov_mv: tuple[int, int]
    cell_uv_mv: tuple[int, int]
    pack_ov_v: tuple[float, float]
    pack_uv_v: tuple[float, float]
    charge_oc_a: tuple[float, float]
    discharge_oc_a: tuple[float, float]
    charge_ot_c: tuple[int, int] = (55, 60)
    charge_ut_c: tuple[int, int] = (2, 0)
    discharge_ot_c: tuple[int, int] = (60, 65)
    discharge_ut_c: tuple[int, int] = (-15, -20)
    soc_high_pct: tuple[float, float] = (100.0, 100.0)
    soc_low_pct: tuple[float, float] = (10.0, 5.0)
    cell_diff_mv: tuple[int, int] = (150, 300)
    temp_diff_c: tuple[int, int] = (8, 15)
    balance_start_mv: int = 3400
    balance_delta_mv: int = 30
    short_circuit_a: int = 600
    sampling_resistor_mohm: float = 0.333
    #: how far back an L2 alarm must go before it releases (L1 warnings: 50 mV / 2 °C)
    cell_hyst_mv: int = 250
    temp_hyst_c: float = 5.0
    #: an over-current alarm releases after this many simulated seconds (Daly: about 32 s)
    oc_release_s: float = 32.0

    @classmethod
    def defaults(cls, cfg: PackConfig, chem: Chemistry) -> Thresholds:
        ov = cfg.cell_ov_mv or chem.cell_ov_mv
        uv = cfg.cell_uv_mv or chem.cell_uv_mv
        n = cfg.cells
        return cls(
            cell_ov_mv=ov,
            cell_uv_mv=uv,
            # pack limits sit just inside n × cell limits so a balanced pack trips on cells first
            pack_ov_v=(round(n * (ov[0] - 10) / 1000, 1), round(n * (ov[1] - 10) / 1000, 1)),
            pack_uv_v=(round(n * (uv[0] + 10) / 1000, 1), round(n * (uv[1] + 10) / 1000, 1)),
            charge_oc_a=cfg.charge_oc_a or (round(0.8 * cfg.capacity_ah, 1), round(1.0 * cfg.capacity_ah, 1)),
            discharge_oc_a=cfg.discharge_oc_a
            or (round(1.0 * cfg.capacity_ah, 1), round(1.5 * cfg.capacity_ah, 1)),
            balance_start_mv=chem.balance_start_mv,
            balance_delta_mv=chem.balance_delta_mv,
            cell_hyst_mv=chem.cell_hyst_mv,
        )


#: alarm byte/bit of the L1 bit (L2 is the next bit), the names used in 0x98 (same as trackingbms.daly.faults)
ALARMS: tuple[tuple[str, int, int], ...] = (
    ("cell_voltage_high", 0, 0),
    ("cell_voltage_low", 0, 2),
    ("pack_voltage_high", 0, 4),
    ("pack_voltage_low", 0, 6),
    ("charge_temp_high", 1, 0),
    ("charge_temp_low", 1, 2),
    ("discharge_temp_high", 1, 4),
    ("discharge_temp_low", 1, 6),
    ("charge_overcurrent", 2, 0),
    ("discharge_overcurrent", 2, 2),
    ("soc_high", 2, 4),
    ("soc_low", 2, 6),
    ("cell_voltage_diff", 3, 0),
    ("temp_diff", 3, 2),
)
#: an L2 alarm of these opens the charge / discharge MOSFET
BLOCKS_CHARGE = frozenset(
    {"cell_voltage_high", "pack_voltage_high", "charge_overcurrent", "charge_temp_high", "charge_temp_low"}
)
BLOCKS_DISCHARGE = frozenset(
    {
        "cell_voltage_low",
        "pack_voltage_low",
        "discharge_overcurrent",
        "discharge_temp_high",
        "discharge_temp_low",
    }
)


@dataclass
class _Alarm:
    l1: bool = False
    l2: bool = False
    l2_since_s: float = 0.0


@dataclass
class Cell:
    capacity0_ah: float
    r0_mohm: float
    self_discharge_per_s: float
    soc: float
    balancing: bool = False
    voltage_mv: float = 0.0
    #: resistance now (SOC and temperature dependent), cached by Battery._update_voltages
    r_mohm: float = 0.0


@dataclass
class Battery:
    """A series string of cells plus the BMS that guards it."""

    cfg: PackConfig
    chem: Chemistry = field(init=False)
    th: Thresholds = field(init=False)
    cells: list[Cell] = field(init=False)
    scenario: Scenario = field(init=False)

    def __post_init__(self) -> None:
        cfg = self.cfg
        rng = random.Random(cfg.seed)
        self.chem = CHEMISTRIES[cfg.chemistry]
        self.th = Thresholds.defaults(cfg, self.chem)
        self.scenario = make_scenario(cfg)
        self.rated_ah = cfg.capacity_ah
        r_nominal = self.chem.r_mohm_ah / cfg.capacity_ah
        sd = self.chem.self_discharge_pct_month / 100 / SECONDS_PER_MONTH
        spread = cfg.self_discharge_spread_pct / 100
        self.cells = []
        for _ in range(cfg.cells):
            cap = cfg.capacity_ah * max(0.5, 1 + rng.gauss(0, cfg.capacity_spread_pct / 100))
            r = r_nominal * max(0.3, 1 + rng.gauss(0, cfg.resistance_spread_pct / 100))
            r *= 1 + cfg.resistance_growth_pct / 100
            # cells for one pack are matched on their voltage drop in storage (the factory's K-value
            # grading): the tails of the batch's spread are sorted out, so a healthy cell stays within 2σ
            cell_sd = sd * (1 + min(2 * spread, max(-2 * spread, rng.gauss(0, spread))))
            soc = min(1.0, max(0.0, cfg.soc_pct / 100 + rng.gauss(0, cfg.soc_spread_pct / 100)))
            self.cells.append(Cell(cap, r, cell_sd, soc))
        if cfg.weak_cell is not None:
            weak = self.cells[cfg.weak_cell - 1]
            if cfg.weak_cell_extra_self_discharge_pct_month is not None:
                # the excess is over the pack's median cell, so the truth an estimator of "faster than
                # the rest" is judged against is exactly the knob
                others = sorted(c.self_discharge_per_s for c in self.cells if c is not weak)
                mid = len(others) // 2
                median = others[mid] if len(others) % 2 else (others[mid - 1] + others[mid]) / 2
                extra = cfg.weak_cell_extra_self_discharge_pct_month / 100 / SECONDS_PER_MONTH
                weak.self_discharge_per_s = median + extra
            else:
                weak.self_discharge_per_s *= cfg.weak_cell_self_discharge_x
        # temperature sensors: each sees a share of the heating plus a small fixed offset
        n = cfg.sensors
        self.sensor_gain = [0.8 + 0.4 * (k / (n - 1) if n > 1 else 0.5) for k in range(n)]
        self.sensor_offset_c = [rng.gauss(0, 0.3) for _ in range(n)]
        # thermal mass ~20 J/K per Ah per cell, cooling time constant ~2 h
        self.heat_capacity_j_k = 20.0 * cfg.capacity_ah * cfg.cells
        self.cooling_w_k = self.heat_capacity_j_k / 7200
        self.t_s = 0.0
        _, self.ambient_c = self.scenario.demand(0.0, PackView(True, True, 0.0))
        self.temp_c = self.ambient_c
        for c in self.cells:
            c.voltage_mv = self.chem.ocv_mv(c.soc)
        self.current_a = 0.0
        self.requested_a = 0.0
        self.user_charge_mos = True
        self.user_discharge_mos = True
        self.alarms = {name: _Alarm() for name, _, _ in ALARMS}
        self.bms_soc_pct = min(100.0, max(0.0, cfg.soc_pct + cfg.bms_soc_error_pct))
        # current-sensor noise: one draw per step, its own stream so the knob leaves the rest unchanged
        self._noise_rng = random.Random(cfg.seed * 31337 + 5)
        self._current_noise_a = 0.0
        self.charge_ah = 0.0
        self.discharge_ah = 0.0
        self.initial_cycles = cfg.cycles
        self.quiet_s = 0.0
        self.fault_code = 0
        self._settle()

    # ---- derived values -------------------------------------------------------------------------
    @property
    def equivalent_cycles(self) -> float:
        return self.discharge_ah / self.rated_ah

    @property
    def cycles(self) -> int:
        return self.initial_cycles + int(self.equivalent_cycles)

    def capacity_factor(self) -> float:
        fade = self.cfg.capacity_fade_pct + self.cfg.fade_per_cycle_pct * self.equivalent_cycles
        return max(0.1, 1 - fade / 100)

    def cell_capacity_ah(self, cell: Cell) -> float:
        return cell.capacity0_ah * self.capacity_factor()

    def cell_r_mohm(self, cell: Cell) -> float:
        """Resistance rises near empty/full (where polarisation dominates) and in the cold."""
        soc = cell.soc
        edge = 300 * (soc - 0.95) if soc > 0.95 else (300 * (0.05 - soc) if soc < 0.05 else 0.0)
        cold = 0.02 * (25.0 - self.temp_c) if self.temp_c < 25.0 else 0.0
        return cell.r0_mohm * (1 + edge + cold)

    @property
    def charge_mos(self) -> bool:
        return self.user_charge_mos and not any(self.alarms[n].l2 for n in BLOCKS_CHARGE)

    @property
    def discharge_mos(self) -> bool:
        return self.user_discharge_mos and not any(self.alarms[n].l2 for n in BLOCKS_DISCHARGE)

    def cells_mv(self) -> list[int]:
        return [round(c.voltage_mv) for c in self.cells]

    def pack_voltage_v(self) -> float:
        return sum(self.cells_mv()) / 1000

    def temps_c(self) -> list[int]:
        rise = self.temp_c - self.ambient_c
        return [
            round(self.ambient_c + rise * g + o)
            for g, o in zip(self.sensor_gain, self.sensor_offset_c, strict=True)
        ]

    def measured_current_a(self) -> float:
        """What the BMS's shunt reads: gain error and offset, a dead band around zero."""
        cfg = self.cfg
        i = self.current_a * (1 + cfg.current_gain_error_pct / 100) + cfg.current_offset_a
        i += self._current_noise_a
        return 0.0 if abs(i) < cfg.current_deadband_a else i

    def state(self) -> int:
        """0 stationary, 1 charging, 2 discharging (0x93 byte 0)."""
        i = self.measured_current_a()
        return 0 if i == 0 else (1 if i > 0 else 2)

    def balancing(self) -> list[int]:
        return [k + 1 for k, c in enumerate(self.cells) if c.balancing]

    def fault_bits(self) -> bytes:
        """The 7 flag bytes of 0x98."""
        out = bytearray(7)
        for name, byte, bit in ALARMS:
            a = self.alarms[name]
            if a.l1:
                out[byte] |= 1 << bit
            if a.l2:
                out[byte] |= 1 << (bit + 1)
        return bytes(out)

    def faults(self) -> list[str]:
        names = []
        for name, _, _ in ALARMS:
            if self.alarms[name].l1:
                names.append(f"{name}_l1")
            if self.alarms[name].l2:
                names.append(f"{name}_l2")
        return names

    def true_soc_pct(self) -> float:
        return 100 * sum(c.soc for c in self.cells) / len(self.cells)

    # ---- time ---------------------------------------------------------------------------------
    def step(self, dt: float) -> None:
        """Integrate ``dt`` seconds at the current that flows now, then look at the new state."""
        current = self.current_a
        factor = self.capacity_factor()
        heat_w = 0.0
        for c in self.cells:
            bleed = self.cfg.balance_current_a if c.balancing else 0.0
            cap = c.capacity0_ah * factor
            c.soc += (current - bleed) * dt / 3600 / cap - c.self_discharge_per_s * dt
            c.soc = min(1.0, max(0.0, c.soc))
            heat_w += current * current * c.r_mohm / 1000
        self.temp_c += (
            dt * (heat_w - self.cooling_w_k * (self.temp_c - self.ambient_c)) / self.heat_capacity_j_k
        )
        if current >= 0:
            self.charge_ah += current * dt / 3600
        else:
            self.discharge_ah -= current * dt / 3600
        measured = self.measured_current_a()
        if abs(measured) >= self.cfg.soc_count_threshold_a:
            self.bms_soc_pct = min(100.0, max(0.0, self.bms_soc_pct + measured * dt / 36 / self.rated_ah))
        self.quiet_s = self.quiet_s + dt if abs(self.requested_a) < WAKE_CURRENT_A else 0.0
        self.t_s += dt
        if self.cfg.current_noise_a:
            self._current_noise_a = self._noise_rng.gauss(0.0, self.cfg.current_noise_a)
        self._settle()

    def _settle(self) -> None:
        """The state at ``t_s``: the current asked for now (unless a MOSFET refuses it), voltages, alarms."""
        view = PackView(self.charge_mos, self.discharge_mos, max(c.voltage_mv for c in self.cells))
        self.requested_a, self.ambient_c = self.scenario.demand(self.t_s, view)
        self.current_a = self._allowed(self.requested_a)
        self._update_voltages()
        self._update_balancing()
        self._update_alarms()
        if self._allowed(self.current_a) != self.current_a:
            # the MOSFET opens within milliseconds: nobody sees the current that tripped it still flowing
            self.current_a = 0.0
            self._update_voltages()

    def _allowed(self, current: float) -> float:
        if (current > 0 and not self.charge_mos) or (current < 0 and not self.discharge_mos):
            return 0.0
        return current

    def _update_voltages(self) -> None:
        ocv = self.chem.ocv_mv
        current = self.current_a
        for c in self.cells:
            c.r_mohm = self.cell_r_mohm(c)
            c.voltage_mv = ocv(c.soc) + current * c.r_mohm

    def _update_balancing(self) -> None:
        volts = [c.voltage_mv for c in self.cells]
        vmax, vmin = max(volts), min(volts)
        active = self.current_a >= 0 and vmax >= self.th.balance_start_mv
        for c in self.cells:
            c.balancing = active and c.voltage_mv - vmin > self.th.balance_delta_mv

    def _update_alarms(self) -> None:
        th = self.th
        cells = [c.voltage_mv for c in self.cells]
        temps = self.temps_c()
        pack_v = sum(cells) / 1000
        i = self.current_a
        hyst_v = (50, th.cell_hyst_mv)
        self._level("cell_voltage_high", max(cells), th.cell_ov_mv, hyst_v, high=True)
        self._level("cell_voltage_low", min(cells), th.cell_uv_mv, hyst_v, high=False)
        n = len(cells)
        pack_hyst = (50 * n / 1000, th.cell_hyst_mv * n / 1000)
        self._level("pack_voltage_high", pack_v, th.pack_ov_v, pack_hyst, high=True)
        self._level("pack_voltage_low", pack_v, th.pack_uv_v, pack_hyst, high=False)
        th_c = (2.0, th.temp_hyst_c)
        self._level("charge_temp_high", max(temps), th.charge_ot_c, th_c, high=True)
        self._level("charge_temp_low", min(temps), th.charge_ut_c, th_c, high=False)
        self._level("discharge_temp_high", max(temps), th.discharge_ot_c, th_c, high=True)
        self._level("discharge_temp_low", min(temps), th.discharge_ut_c, th_c, high=False)
        self._overcurrent("charge_overcurrent", max(0.0, i), th.charge_oc_a)
        self._overcurrent("discharge_overcurrent", max(0.0, -i), th.discharge_oc_a)
        self._level("soc_high", self.bms_soc_pct, th.soc_high_pct, (2.0, 2.0), high=True, strict=True)
        self._level("soc_low", self.bms_soc_pct, th.soc_low_pct, (2.0, 2.0), high=False)
        self._level("cell_voltage_diff", max(cells) - min(cells), th.cell_diff_mv, (20, 20), high=True)
        self._level("temp_diff", max(temps) - min(temps), th.temp_diff_c, (2, 2), high=True)
        # Daly recalibrates its SOC at the ends of the curve
        if self.alarms["cell_voltage_high"].l2:
            self.bms_soc_pct = 100.0
        if self.alarms["cell_voltage_low"].l2:
            self.bms_soc_pct = 0.0

    def _level(
        self,
        name: str,
        value: float,
        limits: tuple[float, float],
        hyst: tuple[float, float],
        *,
        high: bool,
        strict: bool = False,
    ) -> None:
        """Set each level at its threshold; clear it only once ``hyst`` (L1, L2) back on the safe side."""
        a = self.alarms[name]
        over1 = value - limits[0] if high else limits[0] - value
        over2 = value - limits[1] if high else limits[1] - value
        if a.l1:
            a.l1 = over1 >= -hyst[0]
        else:
            a.l1 = over1 > 0 if strict else over1 >= 0
        if a.l2:
            a.l2 = over2 >= -hyst[1]
        elif over2 > 0 if strict else over2 >= 0:
            a.l2, a.l2_since_s = True, self.t_s

    def _overcurrent(self, name: str, current: float, limits: tuple[float, float]) -> None:
        a = self.alarms[name]
        a.l1 = current > limits[0]
        if not a.l2 and current > limits[1]:
            a.l2, a.l2_since_s = True, self.t_s
        elif a.l2 and self.t_s - a.l2_since_s >= self.th.oc_release_s:
            a.l2 = False

    # ---- BMS commands ---------------------------------------------------------------------------
    def set_mos(self, *, charge: bool | None = None, discharge: bool | None = None) -> None:
        if charge is not None:
            self.user_charge_mos = charge
        if discharge is not None:
            self.user_discharge_mos = discharge
        self._settle()  # the switch acts at once: current stops (or flows again) now

    def set_soc(self, soc_pct: float) -> None:
        self.bms_soc_pct = min(100.0, max(0.0, soc_pct))

    def reset(self) -> None:
        """0x00: a restart re-enables the MOSFETs and re-evaluates every alarm from scratch."""
        self.user_charge_mos = self.user_discharge_mos = True
        self.alarms = {name: _Alarm() for name, _, _ in ALARMS}
        self._settle()

    def truth(self) -> dict[str, object]:
        cells = []
        for k, c in enumerate(self.cells):
            cells.append(
                {
                    "cell": k + 1,
                    "soc_pct": round(100 * c.soc, 3),
                    "capacity_ah": round(self.cell_capacity_ah(c), 4),
                    "resistance_mohm": round(self.cell_r_mohm(c), 5),
                    "resistance0_mohm": round(c.r0_mohm, 5),
                    "self_discharge_pct_month": round(c.self_discharge_per_s * SECONDS_PER_MONTH * 100, 4),
                    "ocv_mv": round(self.chem.ocv_mv(c.soc), 2),
                    "voltage_mv": round(c.voltage_mv, 2),
                    "balancing": c.balancing,
                }
            )
        return {
            "sim_time_s": round(self.t_s, 3),
            "soc_pct": round(self.true_soc_pct(), 3),
            "usable_soc_pct": round(100 * min(c.soc for c in self.cells), 3),
            "bms_soc_pct": round(self.bms_soc_pct, 3),
            "capacity_ah": round(min(self.cell_capacity_ah(c) for c in self.cells), 4),
            "rated_capacity_ah": self.rated_ah,
            # state of health as an estimator should find it: the weakest cell limits the pack
            "soh_pct": round(100 * min(self.cell_capacity_ah(c) for c in self.cells) / self.rated_ah, 3),
            "resistance_mohm": round(sum(self.cell_r_mohm(c) for c in self.cells), 5),
            "current_a": round(self.current_a, 4),
            "requested_current_a": round(self.requested_a, 4),
            "measured_current_a": round(self.measured_current_a(), 4),
            "voltage_v": round(sum(c.voltage_mv for c in self.cells) / 1000, 4),
            "pack_temp_c": round(self.temp_c, 3),
            "ambient_c": round(self.ambient_c, 3),
            "temps_c": self.temps_c(),
            "charge_mos": self.charge_mos,
            "discharge_mos": self.discharge_mos,
            "faults": self.faults(),
            "cycles": self.cycles,
            "equivalent_cycles": round(self.equivalent_cycles, 4),
            "charge_ah": round(self.charge_ah, 4),
            "discharge_ah": round(self.discharge_ah, 4),
            "weak_cell": self.cfg.weak_cell,
            "chemistry": self.chem.name,
            "cells": cells,
        }
