"""Typed records decoded from A5 replies (reference §2), and the decoders.

Single-frame decoders take the 8-byte payload. Multi-frame replies (0x95, 0x96, 0x57, 0x62, 0x63)
are assembled from their frames by :func:`assemble`: frame numbers are 1-based, values are truncated
to the cell / sensor count, and missing frames are reported in ``missing_frames``, never invented.

Every record has :meth:`fields`: the values it carries under the Sample field names of design.md
(plus protocol extras such as ``current_raw``), leaving out what the frame does not carry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import field, fields
from typing import Any

from trackingbms.daly.a5 import DalyError, Frame
from trackingbms.daly.faults import decode_fault_bits
from trackingbms.daly.frozen import Frozen, frozen_dataclass

#: offset of the raw current (0.1 A units) on the A5 family
CURRENT_OFFSET = 30000
TEMP_OFFSET = 40

STATE_NAMES = {0: "idle", 1: "charging", 2: "discharging"}


class DecodeError(DalyError):
    """A payload that cannot be decoded as the data id says."""


def _u16(b: bytes, i: int) -> int:
    return b[i] << 8 | b[i + 1]


def _u32(b: bytes, i: int) -> int:
    return int.from_bytes(b[i : i + 4], "big")


def current_from_raw(raw: int, *, invert_current: bool = False) -> float:
    """A5 raw current → Sample convention (positive = charging): raw above 30000 means discharging."""
    amps = round((CURRENT_OFFSET - raw) / 10, 1)
    amps = -amps if invert_current else amps
    return amps + 0.0  # no "-0.0"


def current_to_raw(current_a: float, *, invert_current: bool = False) -> int:
    """Inverse of :func:`current_from_raw` (for tests and writers)."""
    if invert_current:
        current_a = -current_a
    return round(CURRENT_OFFSET - current_a * 10)


@frozen_dataclass
class Record(Frozen):
    data_id: int

    def fields(self) -> dict[str, Any]:
        """Values carried, under design.md names; absent values are left out."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "data_id":
                continue
            v = getattr(self, f.name)
            if v is None:
                continue
            out[f.name] = v
        return out

    def to_json(self) -> dict[str, Any]:
        """``{"data_id": "0x90", ...fields}`` as ``trackingbms decode`` prints it."""
        return {"data_id": f"0x{self.data_id:02X}", **self.fields()}


@frozen_dataclass
class PackStatus(Record):  # 0x90
    voltage_v: float
    acquisition_voltage_v: float
    current_raw: int
    current_a: float
    soc_pct: float


@frozen_dataclass
class CellRange(Record):  # 0x91
    max_cell_mv: int
    max_cell_no: int
    min_cell_mv: int
    min_cell_no: int

    def fields(self) -> dict[str, Any]:
        return {**super().fields(), "cell_delta_mv": self.max_cell_mv - self.min_cell_mv}


@frozen_dataclass
class TempRange(Record):  # 0x92
    max_temp_c: int
    max_temp_sensor: int
    min_temp_c: int
    min_temp_sensor: int


@frozen_dataclass
class MosStatus(Record):  # 0x93
    state: str | None
    state_raw: int
    charge_mos: bool
    discharge_mos: bool
    heartbeat: int  # byte 3: a free-running counter, not "BMS life" (reference §2.1)
    remaining_ah: float


@frozen_dataclass
class StatusInfo(Record):  # 0x94
    cell_count: int
    temp_sensor_count: int
    charger_connected: bool
    load_connected: bool
    dio_bits: int
    cycles: int

    def fields(self) -> dict[str, Any]:
        d = super().fields()
        d["dio"] = {
            **{f"DI{i + 1}": bool(self.dio_bits >> i & 1) for i in range(4)},
            **{f"DO{i + 1}": bool(self.dio_bits >> (i + 4) & 1) for i in range(4)},
        }
        return d


@frozen_dataclass
class Balancing(Record):  # 0x97
    balancing: list[int]


@frozen_dataclass
class Faults(Record):  # 0x98
    faults: list[str]
    fault_code: int


@frozen_dataclass
class WriteAck(Record):  # 0xD9, 0xDA, 0x21, 0x00 replies
    value: int  # payload byte 0 (the echoed switch value for D9/DA)
    payload_hex: str


@frozen_dataclass
class RatedParams(Record):  # 0x50
    rated_capacity_ah: float
    nominal_cell_mv: int


@frozen_dataclass
class BoardConfig(Record):  # 0x51
    boards: int
    cells_per_board: list[int]
    ntc_per_board: list[int]


@frozen_dataclass
class CumulativeCapacity(Record):  # 0x52
    # reference §2.3: two u32, unit "probably Ah" (one CAN decode uses factor 1); medium confidence
    cumulative_charge_ah: int
    cumulative_discharge_ah: int


@frozen_dataclass
class BatteryInfo(Record):  # 0x53
    operating_mode: int
    battery_type: int
    production_date: str | None  # ISO date, None when the bytes are not a date
    sleep_raw: int  # bytes 5–6: sources disagree on the unit (reference §2.3 ⚠)


@frozen_dataclass
class FirmwareIndex(Record):  # 0x54
    firmware_text: str


@frozen_dataclass
class Thresholds(Record):  # 0x59–0x5F, 0x60
    values: dict[str, float | int]

    def fields(self) -> dict[str, Any]:
        return dict(self.values)


@frozen_dataclass
class Rtc(Record):  # 0x61
    rtc: str | None
    rtc_raw: str


@frozen_dataclass
class MultiFrame(Record):
    """Assembled multi-frame reply; ``frames`` counts the frames that carried data."""

    frames: int
    missing_frames: list[int] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing_frames

    def fields(self) -> dict[str, Any]:
        d = super().fields()
        if not self.missing_frames:
            d.pop("missing_frames", None)
        return d


@frozen_dataclass
class CellVoltages(MultiFrame):  # 0x95
    cells_mv: list[int | None] = field(default_factory=list)


@frozen_dataclass
class Temperatures(MultiFrame):  # 0x96
    temps_c: list[float | None] = field(default_factory=list)


@frozen_dataclass
class TextRecord(MultiFrame):  # 0x57 serial, 0x62 software, 0x63 hardware version
    serial: str | None = None
    software_version: str | None = None
    hardware_version: str | None = None


# ---------------------------------------------------------------- single-frame decoders


def _check(payload: bytes) -> bytes:
    if len(payload) != 8:
        raise DecodeError(f"an A5 payload is 8 bytes, got {len(payload)}")
    return bytes(payload)


def decode_pack(p: bytes, *, invert_current: bool = False) -> PackStatus:
    p = _check(p)
    raw = _u16(p, 4)
    return PackStatus(
        0x90,
        voltage_v=_u16(p, 0) / 10,
        acquisition_voltage_v=_u16(p, 2) / 10,
        current_raw=raw,
        current_a=current_from_raw(raw, invert_current=invert_current),
        soc_pct=_u16(p, 6) / 10,
    )


def decode_cell_range(p: bytes) -> CellRange:
    p = _check(p)
    return CellRange(0x91, _u16(p, 0), p[2], _u16(p, 3), p[5])


def decode_temp_range(p: bytes) -> TempRange:
    p = _check(p)
    return TempRange(0x92, p[0] - TEMP_OFFSET, p[1], p[2] - TEMP_OFFSET, p[3])


def decode_mos(p: bytes) -> MosStatus:
    p = _check(p)
    return MosStatus(
        0x93,
        state=STATE_NAMES.get(p[0]),
        state_raw=p[0],
        charge_mos=bool(p[1]),
        discharge_mos=bool(p[2]),
        heartbeat=p[3],
        remaining_ah=_u32(p, 4) / 1000,
    )


def decode_status(p: bytes) -> StatusInfo:
    p = _check(p)
    return StatusInfo(0x94, p[0], p[1], bool(p[2]), bool(p[3]), p[4], _u16(p, 5))


def balancing_cells(p: bytes, cell_count: int | None = None) -> list[int]:
    """0x97 bitmap: payload byte i bit j (LSB first) → cell 8i + j + 1 (bytes 0–5, 48 cells)."""
    cells = [8 * i + j + 1 for i in range(6) for j in range(8) if p[i] >> j & 1]
    if cell_count is not None:
        cells = [c for c in cells if c <= cell_count]
    return cells


def decode_balancing(p: bytes, cell_count: int | None = None) -> Balancing:
    return Balancing(0x97, balancing_cells(_check(p), cell_count))


def decode_faults(p: bytes) -> Faults:
    p = _check(p)
    return Faults(0x98, decode_fault_bits(p[:7]), p[7])


def decode_write_ack(data_id: int, p: bytes) -> WriteAck:
    p = _check(p)
    return WriteAck(data_id, p[0], p.hex())


def decode_rated(p: bytes) -> RatedParams:
    p = _check(p)
    return RatedParams(0x50, _u32(p, 0) / 1000, _u32(p, 4))


def decode_board_config(p: bytes) -> BoardConfig:
    p = _check(p)
    return BoardConfig(0x51, p[0], list(p[1:4]), list(p[4:7]))


def decode_cumulative(p: bytes) -> CumulativeCapacity:
    p = _check(p)
    return CumulativeCapacity(0x52, _u32(p, 0), _u32(p, 4))


def _date(yy: int, mm: int, dd: int) -> str | None:
    if 1 <= mm <= 12 and 1 <= dd <= 31:
        return f"{2000 + yy:04d}-{mm:02d}-{dd:02d}"
    return None


def decode_battery_info(p: bytes) -> BatteryInfo:
    p = _check(p)
    return BatteryInfo(0x53, p[0], p[1], _date(p[2], p[3], p[4]), _u16(p, 5))


def _ascii(b: bytes) -> str:
    return b.split(b"\x00", 1)[0].decode("ascii", "replace").strip()


def decode_firmware_index(p: bytes) -> FirmwareIndex:
    return FirmwareIndex(0x54, _ascii(_check(p)))


def _amps(raw: int) -> float:
    # thresholds use the same offset encoding; the sign convention on them is inconsistent in the
    # wild (reference §5), so report the magnitude
    return abs(round((raw - CURRENT_OFFSET) / 10, 1))


def decode_thresholds(data_id: int, p: bytes) -> Thresholds:
    p = _check(p)
    u = [_u16(p, i) for i in (0, 2, 4, 6)]
    lv = ("l1", "l2")
    if data_id == 0x59:
        names = ["cell_high_l1_mv", "cell_high_l2_mv", "cell_low_l1_mv", "cell_low_l2_mv"]
        values: dict[str, float | int] = dict(zip(names, u, strict=True))
    elif data_id == 0x5A:
        names = ["pack_high_l1_v", "pack_high_l2_v", "pack_low_l1_v", "pack_low_l2_v"]
        values = {n: v / 10 for n, v in zip(names, u, strict=True)}
    elif data_id == 0x5B:
        names = [f"{d}_overcurrent_{lvl}_a" for d in ("charge", "discharge") for lvl in lv]
        values = {n: _amps(v) for n, v in zip(names, u, strict=True)}
    elif data_id == 0x5C:
        names = [
            f"{d}_temp_{hl}_{lvl}_c" for d in ("charge", "discharge") for hl in ("high", "low") for lvl in lv
        ]
        values = {n: b - TEMP_OFFSET for n, b in zip(names, p, strict=True)}
    elif data_id == 0x5D:
        names = ["soc_high_l1_pct", "soc_high_l2_pct", "soc_low_l1_pct", "soc_low_l2_pct"]
        values = {n: v / 10 for n, v in zip(names, u, strict=True)}
    elif data_id == 0x5E:
        values = {
            "cell_diff_l1_mv": u[0],
            "cell_diff_l2_mv": u[1],
            "temp_diff_l1_c": p[4] - TEMP_OFFSET,
            "temp_diff_l2_c": p[5] - TEMP_OFFSET,
        }
    elif data_id == 0x5F:
        values = {"balance_start_mv": u[0], "balance_diff_mv": u[1]}
    elif data_id == 0x60:
        values = {"short_circuit_a": u[0], "sampling_resistor_mohm": u[1] / 1000}
    else:
        raise DecodeError(f"0x{data_id:02X} is not a threshold reply")
    return Thresholds(data_id, values)


def decode_rtc(p: bytes) -> Rtc:
    p = _check(p)
    date = _date(p[0], p[1], p[2])
    ok = date is not None and p[3] < 24 and p[4] < 60 and p[5] < 60
    return Rtc(0x61, f"{date}T{p[3]:02d}:{p[4]:02d}:{p[5]:02d}" if ok else None, p[:6].hex())


# ---------------------------------------------------------------- multi-frame

#: data id → (values per frame, most frames a BMS sends); text replies carry 7 ASCII bytes a frame
MULTI_FRAME: dict[int, tuple[int, int]] = {
    0x95: (3, 16),
    0x96: (7, 3),
    0x57: (7, 5),
    0x62: (7, 2),
    0x63: (7, 2),
}
TEXT_FIELD = {0x57: "serial", 0x62: "software_version", 0x63: "hardware_version"}


def frames_needed(data_id: int, count: int | None = None) -> int | None:
    """Frames that carry data for a multi-frame reply (``count`` = cells or sensors), 1 otherwise.
    None when it depends on a count that is not known."""
    if data_id not in MULTI_FRAME:
        return 1
    per, most = MULTI_FRAME[data_id]
    if data_id in TEXT_FIELD:
        return most
    if count is None:
        return None
    return max(1, min(most, math.ceil(count / per)))


def assemble(data_id: int, frames: Iterable[Frame], count: int | None = None) -> MultiFrame:
    """Assemble a multi-frame reply from its frames (any order, duplicates keep the latest).

    ``count`` = cells (0x95) or sensors (0x96) from 0x94. Without it, every frame received is used and
    trailing all-zero values (zero-filled frames of a host 0x80 reply) are trimmed.
    """
    if data_id not in MULTI_FRAME:
        raise DecodeError(f"0x{data_id:02X} is not a multi-frame reply")
    most = MULTI_FRAME[data_id][1]
    by_no: dict[int, bytes] = {}
    for f in frames:
        if f.data_id == data_id and 1 <= f.frame_no <= most:
            by_no[f.frame_no] = f.payload
    need = frames_needed(data_id, count)
    if need is None:
        need = max(by_no, default=0)
    missing = [n for n in range(1, need + 1) if n not in by_no]
    got = len(by_no)

    if data_id in TEXT_FIELD:
        text = None if missing else _ascii(b"".join(by_no[n][1:] for n in range(1, need + 1)))
        return TextRecord(data_id, got, missing, **{TEXT_FIELD[data_id]: text})

    values: list[Any] = []
    for n in range(1, need + 1):
        p = by_no.get(n)
        if data_id == 0x95:
            values += [None] * 3 if p is None else [_u16(p, 1), _u16(p, 3), _u16(p, 5)]
        else:
            values += [None] * 7 if p is None else [b - TEMP_OFFSET for b in p[1:8]]
    if count is not None:
        values = values[:count]
    else:
        zero = 0 if data_id == 0x95 else -TEMP_OFFSET
        while values and values[-1] == zero:
            values.pop()
    if data_id == 0x95:
        return CellVoltages(data_id, got, missing, cells_mv=values)
    return Temperatures(data_id, got, missing, temps_c=[None if v is None else float(v) for v in values])


# ---------------------------------------------------------------- dispatch

SINGLE_DECODERS: dict[int, Callable[[bytes], Record]] = {
    0x90: decode_pack,
    0x91: decode_cell_range,
    0x92: decode_temp_range,
    0x93: decode_mos,
    0x94: decode_status,
    0x97: decode_balancing,
    0x98: decode_faults,
    0x50: decode_rated,
    0x51: decode_board_config,
    0x52: decode_cumulative,
    0x53: decode_battery_info,
    0x54: decode_firmware_index,
    0x61: decode_rtc,
    **{i: (lambda p, _i=i: decode_thresholds(_i, p)) for i in range(0x59, 0x61)},
    **{i: (lambda p, _i=i: decode_write_ack(_i, p)) for i in (0xD9, 0xDA, 0x21, 0x00)},
}

KNOWN_IDS = frozenset(SINGLE_DECODERS) | frozenset(MULTI_FRAME)


def decode_payload(
    data_id: int, payload: bytes, *, invert_current: bool = False, cell_count: int | None = None
) -> Record:
    """Decode one single-frame reply payload."""
    if data_id == 0x90:
        return decode_pack(payload, invert_current=invert_current)
    if data_id == 0x97:
        return decode_balancing(payload, cell_count)
    if data_id in MULTI_FRAME:
        raise DecodeError(f"0x{data_id:02X} is multi-frame: use assemble()")
    try:
        decoder = SINGLE_DECODERS[data_id]
    except KeyError:
        raise DecodeError(f"unknown A5 data id 0x{data_id:02X}") from None
    return decoder(payload)


def decode_frames(
    frames: Sequence[Frame],
    *,
    cell_count: int | None = None,
    sensor_count: int | None = None,
    invert_current: bool = False,
) -> Record:
    """Decode one response (one frame, or the frames of one multi-frame reply)."""
    if not frames:
        raise DecodeError("no frames")
    data_id = frames[0].data_id
    if data_id in MULTI_FRAME:
        count = cell_count if data_id == 0x95 else sensor_count if data_id == 0x96 else None
        return assemble(data_id, frames, count)
    return decode_payload(data_id, frames[0].payload, invert_current=invert_current, cell_count=cell_count)
