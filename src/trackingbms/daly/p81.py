"""0x81 family (H/K/M/S on RS485, ESS-DL, "100 balance"): register map and decoders, sans-I/O. Reference §6.

Requests go to 0x80 + board (boards 1–16: 0x81–0x90), replies come from 0x50 + board (0x51–0x60), so up
to 16 boards share one RS485 bus. Status block 0x00–0x5C (93 registers: 48 cells, 8 temperatures, then
the pack); writes 0x0121 charge MOS and 0x0122 discharge MOS (BMSTool V1.14.23). No SOC write register
is documented for this family. Framing and the reason it is hand-written: :mod:`trackingbms.daly.modbus`.
Current as D2: raw above 30000 = charging.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from trackingbms.daly.d2 import balancing_from_bitmap, current_a, decode_settings, registers_at
from trackingbms.daly.records import CURRENT_OFFSET, STATE_NAMES, TEMP_OFFSET

REQUEST_BASE = 0x80
REPLY_BASE = 0x50
STATUS_START = 0x00
STATUS_REGISTERS = 0x5D  # 0x00–0x5C
REG_CHARGE_MOS = 0x0121
REG_DISCHARGE_MOS = 0x0122
SETTINGS_BASE = 0x0100
ABSENT = 0xFFFF


def request_address(board: int) -> int:
    if not 1 <= board <= 16:
        raise ValueError(f"board number must be 1–16, got {board}")
    return REQUEST_BASE + board


def reply_address(board: int) -> int:
    if not 1 <= board <= 16:
        raise ValueError(f"board number must be 1–16, got {board}")
    return REPLY_BASE + board


#: every address a reply on a 0x81 bus can come from: a parser skips other boards' replies whole
REPLY_ADDRESSES = frozenset(range(REPLY_BASE + 1, REPLY_BASE + 17))


def board_of(address: int) -> int | None:
    """The board number of a request (0x81–0x90) or reply (0x51–0x60) address."""
    if REQUEST_BASE + 1 <= address <= REQUEST_BASE + 16:
        return address - REQUEST_BASE
    if REPLY_BASE + 1 <= address <= REPLY_BASE + 16:
        return address - REPLY_BASE
    return None


def _temp(raw: int) -> float | None:
    return None if raw in (ABSENT, 0xFF) else float(raw - TEMP_OFFSET)


def decode_status(regs: Mapping[int, int], *, invert_current: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    g = regs.get
    cells, sensors = g(0x3C), g(0x3D)
    if cells is not None:
        out["cell_count"] = cells
        vals = [g(i) for i in range(min(cells, 48))]
        if cells <= 48 and None not in vals:
            out["cells_mv"] = [int(v) for v in vals if v is not None]
    if sensors is not None:
        out["temp_sensor_count"] = sensors
        raw = [g(0x30 + i) for i in range(min(sensors, 8))]
        if None not in raw:
            out["temps_c"] = [t for v in raw if v is not None and (t := _temp(v)) is not None]
    if (v := g(0x38)) is not None:
        out["voltage_v"] = round(v / 10, 1)
    if (v := g(0x39)) is not None:
        out["current_a"] = current_a(v, invert_current=invert_current)
        out["current_raw"] = v
    if (v := g(0x3A)) is not None:
        out["soc_pct"] = round(v / 10, 1)
    if (v := g(0x3B)) is not None:
        out["heartbeat"] = v
    for reg, name in ((0x3E, "max_cell_mv"), (0x40, "min_cell_mv"), (0x42, "delta_cell_mv")):
        if (v := g(reg)) is not None:
            out[name] = v
    for reg, name in ((0x43, "max_temp_c"), (0x45, "min_temp_c")):
        if (v := g(reg)) is not None:
            out[name] = _temp(v)
    if (v := g(0x48)) is not None and v in STATE_NAMES:
        out["state"] = STATE_NAMES[v]
    if (v := g(0x4B)) is not None:
        out["remaining_ah"] = round(v / 10, 1)
    if (v := g(0x4C)) is not None:
        out["cycles"] = v
    if (v := g(0x4D)) is not None:
        out["balancing_state"] = v
    if (v := g(0x4E)) is not None:
        out["balance_current_a"] = round((v - CURRENT_OFFSET) / 1000, 3)
    bitmap = [g(0x4F), g(0x50), g(0x51)]
    if cells is not None and None not in bitmap:
        out["balancing"] = balancing_from_bitmap([b for b in bitmap if b is not None], cells)
    if (v := g(0x52)) is not None:
        out["charge_mos"] = bool(v)
    if (v := g(0x53)) is not None:
        out["discharge_mos"] = bool(v)
    if (v := g(0x57)) is not None:
        out["avg_cell_mv"] = v
    if (v := g(0x58)) is not None:
        out["power_w"] = v
    if (v := g(0x59)) is not None:
        out["energy_wh"] = v
    if (v := g(0x5A)) is not None and (t := _temp(v)) is not None:
        out["mos_temp_c"] = t
    if (v := g(0x5B)) is not None and (t := _temp(v)) is not None:
        out["board_temp_c"] = t
    return out


def decode_block(start: int, values: Sequence[int], *, invert_current: bool = False) -> dict[str, Any]:
    regs = registers_at(start, values)
    out: dict[str, Any] = {"start_register": f"0x{start:04X}", "registers": len(values)}
    if start < 0x100:
        out.update(decode_status(regs, invert_current=invert_current))
    else:
        out.update(decode_settings(regs, base=SETTINGS_BASE))
    return out
