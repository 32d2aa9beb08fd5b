"""Where the current comes from: built-in scenarios and schedules (TOML or CSV).

A scenario answers, for a simulated time, the current the charger/load *asks* for (positive = charging)
and the ambient temperature. The BMS may refuse it (MOSFET open): the pack model applies that.
Every scenario is a pure function of time, the seed and a small view of the pack, so runs are
reproducible whatever the clock speed.
"""

from __future__ import annotations

import csv
import itertools
import math
import random
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from trackingbms.sim.config import PackConfig, SimConfigError


@dataclass
class PackView:
    """What a scenario may look at (a charger sees the BMS cut off; it does not see the cells' SOC)."""

    charge_mos: bool
    discharge_mos: bool
    max_cell_mv: float


class Scenario(Protocol):
    def demand(self, t_s: float, view: PackView) -> tuple[float, float]:
        """(requested current in A, positive = charging; ambient °C) at simulated time ``t_s``."""
        ...


def _hour_of_day(start: datetime, t_s: float) -> float:
    moment = start + timedelta(seconds=t_s)
    return moment.hour + moment.minute / 60 + (moment.second + moment.microsecond / 1e6) / 3600


class Idle:
    def __init__(self, ambient_c: float) -> None:
        self.ambient_c = ambient_c

    def demand(self, t_s: float, view: PackView) -> tuple[float, float]:
        return 0.0, self.ambient_c


class Constant:
    def __init__(self, current_a: float, ambient_c: float) -> None:
        self.current_a, self.ambient_c = current_a, ambient_c

    def demand(self, t_s: float, view: PackView) -> tuple[float, float]:
        return self.current_a, self.ambient_c


class ChargeFull:
    """A constant-current charger at 0.3 C that stops for good once the BMS opens the charge MOSFET."""

    def __init__(self, capacity_ah: float, ambient_c: float) -> None:
        self.current_a = 0.3 * capacity_ah
        self.ambient_c = ambient_c
        self.done = False
        self._started = False

    def demand(self, t_s: float, view: PackView) -> tuple[float, float]:
        if self._started and not view.charge_mos:
            self.done = True
        self._started = True
        return (0.0 if self.done else self.current_a), self.ambient_c


class SolarDay:
    """Off-grid solar: panels from 06:00 to 20:00 (peak 0.35 C at 13:00, passing clouds),
    a house load of 0.03 C with an evening peak; ambient 18 °C ± 8 °C peaking at 15:00."""

    def __init__(self, cfg: PackConfig) -> None:
        rng = random.Random(cfg.seed * 7919 + 1)
        self.capacity_ah = cfg.capacity_ah
        self.start = cfg.start
        self.phases = [rng.uniform(0, 2 * math.pi) for _ in range(3)]
        self.ambient_mean_c = cfg.ambient_c - 7

    def demand(self, t_s: float, view: PackView) -> tuple[float, float]:
        h = _hour_of_day(self.start, t_s)
        solar = 0.0
        if 6.0 < h < 20.0:
            solar = 0.35 * math.sin(math.pi * (h - 6.0) / 14.0) ** 2
            p1, p2, p3 = self.phases
            cloud = math.sin(2 * math.pi * t_s / 2400 + p1) * math.sin(2 * math.pi * t_s / 5700 + p2)
            solar *= 1.0 - 0.35 * max(0.0, cloud) - 0.1 * (0.5 + 0.5 * math.sin(2 * math.pi * t_s / 900 + p3))
        load = 0.03 + (0.07 if 18.0 <= h < 22.0 else 0.0)
        ambient = self.ambient_mean_c + 8.0 * math.cos(2 * math.pi * (h - 15.0) / 24.0)
        return (solar - load) * self.capacity_ah, ambient


class EbikeRide:
    """A 6-hour cycle: a 1-hour ride (0.3 C with pedalling ripple, hills at 0.8 C), 2 h parked,
    2 h on a 0.2 C charger, 1 h parked."""

    def __init__(self, cfg: PackConfig) -> None:
        rng = random.Random(cfg.seed * 104729 + 3)
        self.capacity_ah = cfg.capacity_ah
        self.ambient_c = cfg.ambient_c - 5
        self.hills = sorted(rng.uniform(0, 3300) for _ in range(6))
        self.phase = rng.uniform(0, 2 * math.pi)

    def demand(self, t_s: float, view: PackView) -> tuple[float, float]:
        t = t_s % (6 * 3600)
        if t < 3600:
            c = 0.3 + 0.08 * math.sin(2 * math.pi * t / 45 + self.phase)
            if any(h <= t < h + 60 for h in self.hills):
                c = 0.8
            return -c * self.capacity_ah, self.ambient_c
        if 3 * 3600 <= t < 5 * 3600:
            return 0.2 * self.capacity_ah, self.ambient_c
        return 0.0, self.ambient_c


class Ups:
    """A UPS / telecom backup pack: a 0.1 C CC-CV charger while mains is on (the current tails off once
    the highest cell reaches the float voltage, 10 mV under the top of the OCV curve), and a mains outage
    every 1.5–4 days lasting 10 min–4 h at 0.4 C, long enough now and then for the BMS to cut off (the
    pack then rests empty until mains returns). Ambient 25 °C ± 2 °C over the day (a plant room)."""

    def __init__(self, cfg: PackConfig) -> None:
        from trackingbms.sim.chemistry import CHEMISTRIES

        self.rng = random.Random(cfg.seed * 15485863 + 7)
        self.capacity_ah = cfg.capacity_ah
        self.float_mv = CHEMISTRIES[cfg.chemistry].ocv_table[-1][1] - 10
        self.charge_a = 0.1 * cfg.capacity_ah
        self.start = cfg.start
        self.ambient_mean_c = cfg.ambient_c
        self.outages: list[tuple[float, float]] = []
        self._horizon_s = 0.0

    def _extend(self, t_s: float) -> None:
        while self._horizon_s <= t_s:
            begin = self._horizon_s + self.rng.uniform(1.5, 4.0) * 86400
            self.outages.append((begin, begin + self.rng.uniform(600, 4 * 3600)))
            self._horizon_s = begin

    def demand(self, t_s: float, view: PackView) -> tuple[float, float]:
        self._extend(t_s)
        hour = _hour_of_day(self.start, t_s)
        ambient = self.ambient_mean_c + 2.0 * math.cos(2 * math.pi * (hour - 15) / 24)
        for begin, end in reversed(self.outages):
            if begin <= t_s < end:
                self.charge_a = 0.1 * self.capacity_ah
                return -0.4 * self.capacity_ah, ambient
            if end <= t_s:
                break
        # constant voltage: taper while the highest cell is at the float voltage, recover below it
        if view.max_cell_mv >= self.float_mv:
            self.charge_a *= 0.7
        elif view.max_cell_mv < self.float_mv - 15:
            self.charge_a = min(0.1 * self.capacity_ah, self.charge_a * 1.5 + 0.01 * self.capacity_ah)
        return self.charge_a, ambient


#: example schedules shipped with the package (``--schedule workshop-day`` finds them by name)
BUNDLED_DIR = Path(__file__).parent


def bundled_schedules() -> list[str]:
    return sorted(p.stem for p in BUNDLED_DIR.iterdir() if p.suffix in (".toml", ".csv"))


def resolve_schedule(path: str | Path) -> Path:
    """A schedule path as given, or the name of a bundled example (with or without its suffix)."""
    path = Path(path)
    if path.exists() or path.parent != Path("."):
        return path
    for candidate in (
        BUNDLED_DIR / path.name,
        BUNDLED_DIR / f"{path.name}.toml",
        BUNDLED_DIR / f"{path.name}.csv",
    ):
        if candidate.is_file():
            return candidate
    raise SimConfigError(f"no schedule file {path} (bundled examples: {', '.join(bundled_schedules())})")


class Schedule:
    """Steps of (at_s, current_a[, ambient_c]); each holds until the next. ``repeat`` loops the schedule.

    TOML: ``repeat = true`` (optional ``period_s``) then ``[[step]]`` tables with ``at_s``, ``current_a``,
    optional ``ambient_c``. CSV: a header with ``at_s`` (or ``t_s``), ``current_a``, optional ``ambient_c``.
    """

    def __init__(self, steps: list[tuple[float, float, float]], repeat: bool, period_s: float) -> None:
        self.steps, self.repeat, self.period_s = steps, repeat, period_s
        self.times = [s[0] for s in steps]

    @classmethod
    def load(cls, path: Path, ambient_c: float) -> Schedule:
        path = resolve_schedule(path)
        period: float | None = None
        try:
            text = path.read_text()
        except OSError as exc:
            raise SimConfigError(f"cannot read schedule {path}: {exc.strerror}") from None
        repeat = False
        rows: list[dict[str, object]]
        try:
            if path.suffix.lower() == ".toml":
                data = tomllib.loads(text)
                repeat = bool(data.get("repeat", False))
                period = data.get("period_s")
                rows = list(data.get("step", []))
            elif path.suffix.lower() == ".csv":
                rows = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
            else:
                raise SimConfigError(f"schedule {path} must be a .toml or .csv file")
        except tomllib.TOMLDecodeError as exc:
            raise SimConfigError(f"schedule {path}: {exc}") from None
        steps: list[tuple[float, float, float]] = []
        for n, row in enumerate(rows, start=1):
            try:
                at = row.get("at_s", row.get("t_s"))
                steps.append(
                    (
                        float(at),  # type: ignore[arg-type]
                        float(row["current_a"]),  # type: ignore[arg-type]
                        float(row.get("ambient_c") or ambient_c),  # type: ignore[arg-type]
                    )
                )
            except (KeyError, TypeError, ValueError):
                raise SimConfigError(
                    f"schedule {path} step {n}: needs numeric at_s and current_a (optional ambient_c)"
                ) from None
        if not steps:
            raise SimConfigError(f"schedule {path} has no steps")
        if any(b[0] <= a[0] for a, b in itertools.pairwise(steps)) or steps[0][0] < 0:
            raise SimConfigError(f"schedule {path}: at_s must start >= 0 and increase strictly")
        if period is None:
            period = steps[-1][0] + (steps[-1][0] - steps[-2][0] if len(steps) > 1 else 3600.0)
        elif not isinstance(period, int | float) or period <= steps[-1][0]:
            raise SimConfigError(f"schedule {path}: period_s must be a number beyond the last step's at_s")
        return cls(steps, repeat, float(period))

    def demand(self, t_s: float, view: PackView) -> tuple[float, float]:
        if self.repeat:
            t_s %= self.period_s
        from bisect import bisect_right

        i = bisect_right(self.times, t_s) - 1
        if i < 0:
            return 0.0, self.steps[0][2]
        _, current, ambient = self.steps[i]
        return current, ambient


def make_scenario(cfg: PackConfig) -> Scenario:
    name = cfg.scenario
    if name == "idle":
        return Idle(cfg.ambient_c)
    if name == "constant":
        return Constant(cfg.constant_current_a, cfg.ambient_c)
    if name == "charge-full":
        return ChargeFull(cfg.capacity_ah, cfg.ambient_c)
    if name == "solar-day":
        return SolarDay(cfg)
    if name == "ebike-ride":
        return EbikeRide(cfg)
    if name == "ups":
        return Ups(cfg)
    if name == "schedule":
        assert cfg.schedule is not None
        return Schedule.load(cfg.schedule, cfg.ambient_c)
    raise SimConfigError(f"unknown scenario {name!r}")
