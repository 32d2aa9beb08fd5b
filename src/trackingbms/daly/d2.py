"""D2 family (H/K/M/S series, JHB, built-in BLE): register map and decoders, sans-I/O. Reference §5.3–§5.4.

Fixed slave address 0xD2 for requests and replies (so one D2 board per bus). Status block 0x00–0x3D
(62 registers; newer "blue" firmware answers 80, adding the balance bitmap at 0x3E–0x3F and the MOS and
board temperatures at 0x42–0x43), settings 0x80–0xA8, versions 0xA9–0xC8. Writes: 0xA5 charge MOS,
0xA6 discharge MOS, 0xA7 SOC (0.1 %). Framing is :mod:`trackingbms.daly.modbus`.

Current: raw above 30000 means *charging* on this family (three real captures, the spreadsheet's text
says the opposite): ``current_a = (raw − 30000) / 10``. Power (0x39) is an unsigned magnitude. The fault
registers 0x3A–0x3D carry the A5 0x98 bit table, low byte first: byte 0 = low byte of 0x3A.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from trackingbms.daly.faults import decode_fault_bits
from trackingbms.daly.records import CURRENT_OFFSET, STATE_NAMES, TEMP_OFFSET

ADDRESS = 0xD2
STATUS_START = 0x00
STATUS_REGISTERS = 62
STATUS_REGISTERS_LONG = 80
SETTINGS_START, SETTINGS_REGISTERS = 0x80, 41
VERSION_START, VERSION_REGISTERS = 0xA9, 32
REG_CHARGE_MOS = 0xA5
REG_DISCHARGE_MOS = 0xA6
REG_SOC = 0xA7
#: a sensor register holding this is "not fitted"
ABSENT = 0xFFFF

Registers = Mapping[int, int]


def registers_at(start: int, values: Sequence[int]) -> dict[int, int]:
    """A reply's register values keyed by register number (a reply does not carry its start)."""
    return {start + i: v for i, v in enumerate(values)}


def current_a(raw: int, *, invert_current: bool = False) -> float:
    """D2 / 0x81: raw above 30000 = charging (positive, the Sample convention)."""
    amps = (raw - CURRENT_OFFSET) / 10
    return round(-amps if invert_current else amps, 1)


def fault_bytes(regs: Sequence[int]) -> bytes:
    """Four fault registers → the 7 flag bytes of A5 0x98 (low byte of each register first)."""
    out = bytearray()
    for r in regs:
        out += bytes((r & 0xFF, r >> 8 & 0xFF))
    return bytes(out[:7])


def fault_registers(flags: bytes) -> list[int]:
    """Inverse of :func:`fault_bytes` (the simulator's side)."""
    b = bytes(flags[:7]).ljust(8, b"\0")
    return [b[2 * i] | b[2 * i + 1] << 8 for i in range(4)]


def balancing_from_bitmap(words: Sequence[int], cell_count: int) -> list[int]:
    """Bitmap registers (bit 0 of the first = cell 1) → 1-based cells balancing."""
    out = []
    for w, word in enumerate(words):
        for bit in range(16):
            cell = 16 * w + bit + 1
            if word >> bit & 1 and cell <= cell_count:
                out.append(cell)
    return out


def _temp(raw: int) -> float | None:
    return None if raw in (ABSENT, 0xFF) else float(raw - TEMP_OFFSET)


def decode_status(regs: Registers, *, invert_current: bool = False) -> dict[str, Any]:
    """Sample fields (and extras) from the registers of a status block that are present."""
    out: dict[str, Any] = {}
    g = regs.get
    cells = g(0x31)
    sensors = g(0x32)
    if cells is not None:
        out["cell_count"] = cells
        cell_values = [g(i) for i in range(min(cells, 32))]
        if cells <= 32 and None not in cell_values:
            out["cells_mv"] = [int(v) for v in cell_values if v is not None]
    if sensors is not None:
        out["temp_sensor_count"] = sensors
        raw_temps = [g(0x20 + i) for i in range(min(sensors, 8))]
        if None not in raw_temps:
            temps = [_temp(v) for v in raw_temps if v is not None]
            out["temps_c"] = [t for t in temps if t is not None]
    if (v := g(0x28)) is not None:
        out["voltage_v"] = round(v / 10, 1)
    if (v := g(0x29)) is not None:
        out["current_a"] = current_a(v, invert_current=invert_current)
        out["current_raw"] = v
    if (v := g(0x2A)) is not None:
        out["soc_pct"] = round(v / 10, 1)
    if (v := g(0x2B)) is not None:
        out["max_cell_mv"] = v
    if (v := g(0x2C)) is not None:
        out["min_cell_mv"] = v
    if (v := g(0x2D)) is not None:
        out["max_temp_c"] = _temp(v)
    if (v := g(0x2E)) is not None:
        out["min_temp_c"] = _temp(v)
    if (v := g(0x2F)) is not None and v in STATE_NAMES:
        out["state"] = STATE_NAMES[v]
    if (v := g(0x30)) is not None:
        out["remaining_ah"] = round(v / 10, 1)
    if (v := g(0x33)) is not None:
        out["cycles"] = v
    if (v := g(0x34)) is not None:
        out["balancing_state"] = v
    if (v := g(0x35)) is not None:
        out["charge_mos"] = bool(v)
    if (v := g(0x36)) is not None:
        out["discharge_mos"] = bool(v)
    if (v := g(0x37)) is not None:
        out["avg_cell_mv"] = v
    if (v := g(0x38)) is not None:
        out["delta_cell_mv"] = v
    if (v := g(0x39)) is not None:
        out["power_w"] = v
    fault_regs = [g(0x3A + i) for i in range(4)]
    if None not in fault_regs:
        out["faults"] = decode_fault_bits(fault_bytes([r for r in fault_regs if r is not None]))
        out["fault_registers"] = fault_regs
    # 80-register firmware: balance bitmap and MOS temperature
    bitmap = [g(0x3E), g(0x3F)]
    if cells is not None and None not in bitmap and STATUS_REGISTERS_LONG - 1 in regs:
        out["balancing"] = balancing_from_bitmap([b for b in bitmap if b is not None], cells)
    elif out.get("balancing_state") == 0:
        out["balancing"] = []
    if STATUS_REGISTERS_LONG - 1 in regs and (v := g(0x42)) is not None and _temp(v) is not None:
        out["mos_temp_c"] = _temp(v)
    return out


#: settings block fields (register → name, scale); thresholds in their units
_SETTINGS: dict[int, tuple[str, str]] = {
    0x80: ("rated_capacity_ah", "0.1"),
    0x81: ("nominal_cell_mv", "1"),
    0x82: ("boards", "1"),
    0x83: ("board1_cells", "1"),
    0x86: ("board1_temp_sensors", "1"),
    0x89: ("battery_type", "1"),
    0x8A: ("sleep_s", "1"),
    0x8B: ("cell_ov_warn_mv", "1"),
    0x8C: ("cell_ov_alarm_mv", "1"),
    0x8D: ("cell_uv_warn_mv", "1"),
    0x8E: ("cell_uv_alarm_mv", "1"),
    0x8F: ("pack_ov_warn_v", "0.1"),
    0x90: ("pack_ov_alarm_v", "0.1"),
    0x91: ("pack_uv_warn_v", "0.1"),
    0x92: ("pack_uv_alarm_v", "0.1"),
    0x93: ("chg_oc_warn_a", "current"),
    0x94: ("chg_oc_alarm_a", "current"),
    0x95: ("dsg_oc_warn_a", "current"),
    0x96: ("dsg_oc_alarm_a", "current"),
    0x97: ("chg_ot_c", "temp"),
    0x99: ("chg_ut_c", "temp"),
    0x9B: ("dsg_ot_c", "temp"),
    0x9D: ("dsg_ut_c", "temp"),
    0x9F: ("cell_diff_warn_mv", "1"),
    0xA0: ("cell_diff_alarm_mv", "1"),
    0xA3: ("balance_start_mv", "1"),
    0xA4: ("balance_diff_mv", "1"),
    0xA5: ("charge_mos_switch", "1"),
    0xA6: ("discharge_mos_switch", "1"),
    0xA7: ("soc_setting_pct", "0.1"),
    0xA8: ("mos_ot_alarm_c", "temp"),
}


def decode_settings(regs: Registers, *, base: int = SETTINGS_START) -> dict[str, Any]:
    """Settings block (D2 at 0x80; 0x81 boards at ``base``=0x100, same order)."""
    out: dict[str, Any] = {}
    for reg, (name, scale) in _SETTINGS.items():
        v = regs.get(reg - SETTINGS_START + base)
        if v is None:
            continue
        if scale == "0.1":
            out[name] = round(v / 10, 1)
        elif scale == "current":
            out[name] = round((v - CURRENT_OFFSET) / 10, 1)
        elif scale == "temp":
            out[name] = v - TEMP_OFFSET
        else:
            out[name] = v
    return out


def _cstr(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("ascii", "replace").strip()


def regs_to_bytes(values: Sequence[int]) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


def decode_version(regs: Registers, *, start: int = VERSION_START) -> dict[str, Any]:
    """Software / hardware version: NUL-terminated ASCII; firmware puts the hardware string at byte 16
    or byte 32 (reference §5.4 ⚠), so both are looked at."""
    n = max((r - start + 1 for r in regs if r >= start), default=0)
    raw = regs_to_bytes([regs.get(start + i, 0) for i in range(n)])
    out: dict[str, Any] = {}
    if sw := _cstr(raw[:32]):
        out["software_version"] = sw
    for at in (16, 32):
        if len(raw) > at and raw[at - 1 : at] == b"\0" and (hw := _cstr(raw[at:])):
            if hw != out.get("software_version"):
                out["hardware_version"] = hw
                break
    return out


def decode_ascii(values: Sequence[int]) -> str:
    return _cstr(regs_to_bytes(values))


def decode_block(start: int, values: Sequence[int], *, invert_current: bool = False) -> dict[str, Any]:
    """Any D2 read reply, given where it started: the fields its registers carry."""
    regs = registers_at(start, values)
    out: dict[str, Any] = {"start_register": f"0x{start:04X}", "registers": len(values)}
    if start < 0x80:
        out.update(decode_status(regs, invert_current=invert_current))
        if start == 0x3E:
            if (v := regs.get(0x40)) is not None:
                out["balance_current_a"] = round((v - CURRENT_OFFSET) / 1000, 3)
            if (v := regs.get(0x42)) is not None and (t := _temp(v)) is not None:
                out["mos_temp_c"] = t
    elif start < VERSION_START:
        out.update(decode_settings(regs))
    elif start < 0xC9:
        out.update(decode_version(regs, start=start))
    elif start == 0xC9:
        out["password"] = decode_ascii(values)
    else:
        out["values"] = list(values)
    return out
