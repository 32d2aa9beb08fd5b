"""Configuration of a simulated pack: the battery (PackConfig) and the BMS's wire behaviour (Quirks).

Both are plain dataclasses with validated fields so a bad option fails early with a clear message.
``parse_faults`` turns the CLI's ``--faults "loss=0.01,sleep_after=3600"`` text into Quirks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from trackingbms.daly.a5 import frame_time_s

Chemistry = Literal["lfp", "nmc", "lto"]
HostPolicy = Literal["both", "0x40", "0x80"]
FramePolicy = Literal["auto", "needed", "all"]

BUILTIN_SCENARIOS = ("idle", "constant", "solar-day", "ebike-ride", "charge-full", "ups")


class SimConfigError(ValueError):
    """A simulator option is out of range or unknown; the message names the option."""


@dataclass
class PackConfig:
    """The battery and its BMS settings. Currents: positive = charging (into the pack).

    Ageing knobs let analytics be checked against known truth: ``capacity_fade_pct`` and
    ``resistance_growth_pct`` apply to every cell, ``weak_cell`` (1-based) self-discharges
    ``weak_cell_self_discharge_x`` times faster than the others.
    """

    pack_id: str = "sim-1"
    cells: int = 16
    sensors: int = 4
    chemistry: Chemistry = "lfp"
    capacity_ah: float = 100.0
    soc_pct: float = 60.0
    seed: int = 1
    scenario: str = "idle"
    #: schedule file (TOML or CSV) when scenario == "schedule"; the current when scenario == "constant"
    schedule: Path | None = None
    constant_current_a: float = 0.0
    #: simulated seconds per real second (only used by the default real-time clock)
    speed: float = 1.0
    #: wall-clock date of simulated time 0 (the RTC, the solar day's hour of day)
    start: datetime = field(default_factory=lambda: datetime(2026, 6, 21, 0, 0, tzinfo=UTC))
    ambient_c: float = 25.0
    #: cell-to-cell spread (1 sigma) of capacity and resistance, in percent
    capacity_spread_pct: float = 1.5
    resistance_spread_pct: float = 5.0
    soc_spread_pct: float = 0.5
    capacity_fade_pct: float = 0.0
    #: extra fade per full equivalent cycle, so cycling ages the pack
    fade_per_cycle_pct: float = 0.0
    resistance_growth_pct: float = 0.0
    #: healthy cells' self-discharge: the chemistry's rate ± this (1 sigma, percent of it), cut at 2 sigma
    #: (LFP 3 %/month ± 0.45, at most ± 0.9: cells matched for a pack differ by well under 1 %/month)
    self_discharge_spread_pct: float = 15.0
    weak_cell: int | None = None
    weak_cell_self_discharge_x: float = 20.0
    #: when set, the weak cell self-discharges this much more than the pack's median cell (%/month),
    #: instead of ``weak_cell_self_discharge_x`` times its own rate (analytics benches use a known excess)
    weak_cell_extra_self_discharge_pct_month: float | None = None
    cycles: int = 0
    #: BMS current sensor gain error (percent) and offset (A): why the reported SOC drifts
    current_gain_error_pct: float = 1.0
    current_offset_a: float = 0.05
    #: noise of each current reading (1 sigma, A) and the band around zero the BMS shows as 0.0 A
    current_noise_a: float = 0.0
    current_deadband_a: float = 0.2
    #: the BMS's SOC starts this far from the truth (percentage points): drift already accumulated
    bms_soc_error_pct: float = 0.0
    #: the BMS does not count currents below this (real units: about 2.5 A)
    soc_count_threshold_a: float = 2.5
    balance_current_a: float = 0.05
    #: physics integration step in simulated seconds (the result does not depend on how time is sliced);
    #: up to 300 s for month-long analytics runs
    step_s: float = 5.0
    # thresholds: None = chemistry default (see chemistry.py)
    cell_ov_mv: tuple[int, int] | None = None
    cell_uv_mv: tuple[int, int] | None = None
    charge_oc_a: tuple[float, float] | None = None
    discharge_oc_a: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not 3 <= self.cells <= 48:
            raise SimConfigError(f"cells must be 3–48, got {self.cells}")
        if not 1 <= self.sensors <= 16:
            raise SimConfigError(f"sensors must be 1–16, got {self.sensors}")
        if self.chemistry not in ("lfp", "nmc", "lto"):
            raise SimConfigError(f"chemistry must be lfp, nmc or lto, got {self.chemistry!r}")
        if not 0.1 <= self.capacity_ah <= 100_000:
            raise SimConfigError(f"capacity_ah must be 0.1–100000, got {self.capacity_ah}")
        if not 0 <= self.soc_pct <= 100:
            raise SimConfigError(f"soc_pct must be 0–100, got {self.soc_pct}")
        if self.speed <= 0:
            raise SimConfigError(f"speed must be > 0, got {self.speed}")
        if self.scenario not in (*BUILTIN_SCENARIOS, "schedule"):
            raise SimConfigError(
                f"unknown scenario {self.scenario!r}; "
                f"choose one of {', '.join(BUILTIN_SCENARIOS)} or schedule"
            )
        if self.scenario == "schedule" and self.schedule is None:
            raise SimConfigError("scenario 'schedule' needs a schedule file (TOML or CSV)")
        if self.weak_cell is not None and not 1 <= self.weak_cell <= self.cells:
            raise SimConfigError(f"weak_cell must be 1–{self.cells}, got {self.weak_cell}")
        if not 0 <= self.capacity_fade_pct < 90:
            raise SimConfigError(f"capacity_fade_pct must be 0–90, got {self.capacity_fade_pct}")
        if self.step_s <= 0 or self.step_s > 300:
            raise SimConfigError(f"step_s must be in (0, 300], got {self.step_s}")
        if self.current_noise_a < 0 or self.current_deadband_a < 0:
            raise SimConfigError("current_noise_a and current_deadband_a must be >= 0")
        if not -100 <= self.bms_soc_error_pct <= 100:
            raise SimConfigError(f"bms_soc_error_pct must be -100–100, got {self.bms_soc_error_pct}")
        if not 0 <= self.self_discharge_spread_pct <= 50:
            raise SimConfigError(
                f"self_discharge_spread_pct must be 0–50, got {self.self_discharge_spread_pct}"
            )
        if (self.weak_cell_extra_self_discharge_pct_month or 0) < 0:
            raise SimConfigError("weak_cell_extra_self_discharge_pct_month must be >= 0")
        if self.cycles < 0:
            raise SimConfigError(f"cycles must be >= 0, got {self.cycles}")
        if self.start.tzinfo is None:
            raise SimConfigError("start must carry a timezone")


@dataclass
class Quirks:
    """How the simulated BMS behaves on the wire (reference §3 and §9). Defaults: a well-behaved real unit.

    Times are wall-clock seconds except ``sleep_after_s``, which is simulated time (the BMS lives in it).
    Probabilities are per reply frame: ``loss`` truncates frames inside multi-frame bursts (0x95, 0x96,
    0x57, 0x62, 0x63), ``bad_checksum`` corrupts a frame's checksum, ``garbage`` puts 1–4 junk bytes
    before a reply.
    """

    board: int = 1
    #: the wire protocol the board speaks: a5 (legacy), d2 (fixed address 0xD2), p81 (0x80 + board)
    protocol: str = "a5"
    #: D2 status block size: 80 (newer firmware) or 62 (older: silent on a read past 0x3D)
    d2_status_registers: int = 80
    hosts: HostPolicy = "both"
    frames: FramePolicy = "auto"
    stale_bytes: bool = True
    #: unused cell slots of the last real 0x95 frame: zero (mpp-solar capture) or stale buffer content
    #: (dbus-serialbattery#160 showed old cell voltages there)
    stale_cell_slots: bool = False
    heartbeat: bool = True
    latency_s: float = 0.06
    latency_jitter_s: float = 0.0
    baud: int = 9600
    sleep_after_s: float | None = None
    echo_when_asleep: bool = True
    wake_on_request: bool = False
    loss: float = 0.0
    bad_checksum: float = 0.0
    garbage: float = 0.0
    invert_current: bool = False
    max_request_bytes: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.board <= 16:
            raise SimConfigError(f"board must be 1–16, got {self.board}")
        if self.protocol not in ("a5", "d2", "p81"):
            raise SimConfigError(f"protocol must be a5, d2 or p81, got {self.protocol!r}")
        if self.d2_status_registers not in (62, 80):
            raise SimConfigError(f"d2_status_registers must be 62 or 80, got {self.d2_status_registers}")
        if self.hosts not in ("both", "0x40", "0x80"):
            raise SimConfigError(f"hosts must be both, 0x40 or 0x80, got {self.hosts!r}")
        if self.frames not in ("auto", "needed", "all"):
            raise SimConfigError(f"frames must be auto, needed or all, got {self.frames!r}")
        for name in ("loss", "bad_checksum", "garbage"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise SimConfigError(f"{name} is a probability (0–1), got {value}")
        if self.latency_s < 0 or self.latency_jitter_s < 0:
            raise SimConfigError("latency must be >= 0")
        if self.baud < 0:
            raise SimConfigError(f"baud must be >= 0 (0 = no wire-time pacing), got {self.baud}")
        if self.sleep_after_s is not None and self.sleep_after_s <= 0:
            raise SimConfigError(f"sleep_after must be > 0 seconds, got {self.sleep_after_s}")
        if self.max_request_bytes < 13:
            raise SimConfigError("max_request_bytes must be >= 13")

    def frame_wire_s(self) -> float:
        """Wire time of one 13-byte frame at ``baud`` (10 bits per byte: 13.5 ms at 9600); 0 = unpaced."""
        return frame_time_s(self.baud) if self.baud else 0.0  # the codec's own wire-time rule

    def accepted_hosts(self) -> frozenset[int]:
        """Host addresses this board answers (0x40 + board - 1 on RS485, 0x80 + board - 1 on UART)."""
        out: set[int] = set()
        if self.hosts in ("both", "0x40"):
            out.add(0x40 + self.board - 1)
        if self.hosts in ("both", "0x80"):
            out.add(0x80 + self.board - 1)
        return frozenset(out)


def _parse_bool(key: str, value: str) -> bool:
    low = value.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise SimConfigError(f"fault {key!r} needs a boolean (1/0, true/false), got {value!r}")


#: --faults key → (Quirks field, type)
FAULT_KEYS: dict[str, tuple[str, type]] = {
    "loss": ("loss", float),
    "bad_checksum": ("bad_checksum", float),
    "garbage": ("garbage", float),
    "sleep_after": ("sleep_after_s", float),
    "latency": ("latency_s", float),
    "jitter": ("latency_jitter_s", float),
    "baud": ("baud", int),
    "echo": ("echo_when_asleep", bool),
    "wake_on_request": ("wake_on_request", bool),
    "invert_current": ("invert_current", bool),
    "stale": ("stale_bytes", bool),
    "stale_cell_slots": ("stale_cell_slots", bool),
    "heartbeat": ("heartbeat", bool),
    "hosts": ("hosts", str),
    "frames": ("frames", str),
    "board": ("board", int),
    "max_request_bytes": ("max_request_bytes", int),
}


def parse_faults(text: str, base: Quirks | None = None) -> Quirks:
    """``"loss=0.01,sleep_after=3600"`` → Quirks (starting from ``base``). Unknown keys are an error."""
    values = dataclasses.asdict(base or Quirks())
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise SimConfigError(f"fault {item!r} must look like key=value")
        if key not in FAULT_KEYS:
            raise SimConfigError(f"unknown fault {key!r}; known: {', '.join(sorted(FAULT_KEYS))}")
        name, typ = FAULT_KEYS[key]
        try:
            if typ is bool:
                values[name] = _parse_bool(key, raw)
            elif typ is int:
                values[name] = int(raw, 0)
            elif typ is float:
                values[name] = float(raw)
            else:
                values[name] = raw.strip().lower()
        except ValueError as exc:
            if isinstance(exc, SimConfigError):
                raise
            raise SimConfigError(f"fault {key!r} needs a {typ.__name__}, got {raw!r}") from None
    return Quirks(**values)
