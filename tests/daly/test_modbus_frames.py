"""Every D2 / 0x81 frame of the shared reference decodes to its expected values through
``trackingbms decode`` (the CLI, as a user pastes them); requests re-encode byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trackingbms.daly import d2, p81
from trackingbms.daly.modbus import crc16, encode_read, encode_write, encode_write_multiple

REF = Path("/work/shared/reference/daly-frames.json")
_LOCAL = Path(__file__).parent / "daly-frames.json"
FRAMES_FILE = REF if REF.exists() else _LOCAL
ENTRIES = json.loads(FRAMES_FILE.read_text()) if FRAMES_FILE.exists() else []
MODBUS = [e for e in ENTRIES if e["protocol"] in ("daly_d2_modbus", "daly_p81_modbus")]

pytestmark = pytest.mark.skipif(not MODBUS, reason="daly-frames.json not available")

CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]


def _decode_cli(*args: str) -> list[dict]:
    proc = subprocess.run([*CLI, "decode", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.fixture(scope="module")
def decoded() -> dict[str, dict]:
    """The reference frames through the CLI, a few runs in all: the requests together, the replies
    grouped by their start register (given with --start, since a reply does not carry it)."""
    groups: dict[str | None, list[dict]] = {}
    for e in MODBUS:
        start = e["expected"].get("start_register") if e["direction"] == "response" else "requests"
        groups.setdefault(start, []).append(e)
    out: dict[str, dict] = {}
    for start, entries in groups.items():
        args = ["".join(e["hex"] for e in entries)]
        if start not in (None, "requests"):
            args += ["--start", start]
        objs = {o["offset"]: o for o in _decode_cli(*args)}
        offset = 0
        for e in entries:
            assert offset in objs, (e["hex"], objs.keys())
            out[e["hex"]] = objs[offset]
            offset += len(e["hex"]) // 2
        assert len(objs) == len(entries)
    return out


def _id(e: dict) -> str:
    return f"{e['protocol'][5:8]}-{e['direction']}-{e['hex'][:24]}"


#: reference name → (our field, conversion of the reference value)
NAMES = {
    "total_voltage_v": ("voltage_v", None),
    "current_a": ("current_a", None),
    "soc_percent": ("soc_pct", None),
    "cell_count": ("cell_count", None),
    "temp_sensor_count": ("temp_sensor_count", None),
    "cell_voltages_mv": ("cells_mv", None),
    "cell_voltages_v": ("cells_mv", lambda vs: [round(v * 1000) for v in vs]),
    "temperatures_c": ("temps_c", lambda vs: [float(v) for v in vs]),
    "max_cell_mv": ("max_cell_mv", None),
    "min_cell_mv": ("min_cell_mv", None),
    "max_temp_c": ("max_temp_c", float),
    "min_temp_c": ("min_temp_c", float),
    "status": ("state", lambda v: {0: "idle", 1: "charging", 2: "discharging"}[v]),
    "remaining_capacity_ah": ("remaining_ah", None),
    "cycles": ("cycles", None),
    "balancing": ("balancing_state", None),
    "charge_mos": ("charge_mos", None),
    "discharge_mos": ("discharge_mos", None),
    "avg_cell_mv": ("avg_cell_mv", None),
    "delta_cell_mv": ("delta_cell_mv", None),
    "power_w": ("power_w", None),
    "mos_temp_c": ("mos_temp_c", float),
    "fault_registers": ("fault_registers", lambda vs: [v if isinstance(v, int) else int(v, 16) for v in vs]),
    "software_version": ("software_version", None),
    "hardware_version": ("hardware_version", None),
    "password_ascii": ("password", None),
    "rated_capacity_ah": ("rated_capacity_ah", None),
    "cell_ref_mv": ("nominal_cell_mv", None),
    "soc_setting_percent": ("soc_setting_pct", None),
    "start_register": ("start_register", None),
    "function": ("function", None),
    "value": ("value", None),
    "count": ("count", None),
    "values": ("values", None),
}
# the settings frame's names are ours already (sleep_s, cell_ov_warn_mv, chg_oc_warn_a, ...)
SAME_NAME = {
    "boards", "board1_cells", "board1_temp_sensors", "battery_type", "sleep_s", "cell_ov_warn_mv",
    "cell_ov_alarm_mv", "cell_uv_warn_mv", "cell_uv_alarm_mv", "pack_ov_warn_v", "pack_uv_warn_v",
    "chg_oc_warn_a", "chg_oc_alarm_a", "dsg_oc_warn_a", "dsg_oc_alarm_a", "chg_ot_c", "chg_ut_c", "dsg_ot_c",
    "dsg_ut_c", "balance_start_mv", "balance_diff_mv", "charge_mos_switch", "discharge_mos_switch",
    "mos_ot_alarm_c",
}  # fmt: skip


@pytest.mark.parametrize("entry", MODBUS, ids=_id)
def test_reference_frame_decodes_to_its_values(entry: dict, decoded: dict[str, dict]) -> None:
    got = decoded[entry["hex"]]
    exp = entry["expected"]
    checked = 0
    for name, want in exp.items():
        if name in SAME_NAME:
            ours, conv = name, None
        elif name in NAMES:
            ours, conv = NAMES[name]
        elif name == "register" or name == "start_register":
            ours, conv = name, None
        else:
            continue
        if name == "start_register" and "start_register" not in got:
            continue
        want = conv(want) if conv else want
        if name == "registers":
            continue
        if isinstance(want, float):
            assert got[ours] == pytest.approx(want, abs=0.051), name
        else:
            assert got[ours] == want, name
        checked += 1
    if "register" in exp:
        assert got["register"] == exp["register"]
        checked += 1
    if isinstance(exp.get("registers"), int):
        assert got.get("registers", got.get("count")) == exp["registers"]
    elif isinstance(exp.get("registers"), list):
        assert got["values"] == exp["registers"]
        checked += 1
    if "slave" in exp:
        assert got["address"] == exp["slave"].split()[0].upper().replace("0X", "0x")
    if "alarm" in exp:
        assert got["faults"] == ["cell_voltage_high_l1"]
    assert checked or "reg_0x40_balance_current_raw" in exp, f"nothing compared for {exp}"
    if "reg_0x42_mos_temp_raw" in exp:
        assert "mos_temp_c" not in got  # 0xFFFF: no sensor, not -40 °C


@pytest.mark.parametrize("entry", [e for e in MODBUS if e["direction"] == "request"], ids=_id)
def test_requests_encode_exactly(entry: dict) -> None:
    raw = bytes.fromhex(entry["hex"])
    addr, fn = raw[0], raw[1]
    reg, value = int.from_bytes(raw[2:4], "big"), int.from_bytes(raw[4:6], "big")
    if fn == 3:
        assert encode_read(addr, reg, value) == raw
    elif fn == 6:
        assert encode_write(addr, reg, value) == raw
    else:
        values = [int.from_bytes(raw[6 + 2 * i : 8 + 2 * i], "big") for i in range(value)]
        assert encode_write_multiple(addr, reg, values) == raw
    assert crc16(raw[:-2]).to_bytes(2, "little") == raw[-2:]


def test_request_and_reply_together_take_the_start_from_the_request() -> None:
    settings = next(
        e for e in MODBUS if e["expected"].get("start_register") == "0x0080" and e["direction"] == "response"
    )
    request = encode_read(d2.ADDRESS, 0x80, 41).hex()
    objs = _decode_cli(request, settings["hex"])
    assert [o["direction"] for o in objs] == ["request", "reply"]
    assert objs[1]["rated_capacity_ah"] == 105.0 and objs[1]["start_register"] == "0x0080"


def test_a_0x81_reply_names_its_board() -> None:
    regs = [3300] * 4 + [0] * 44 + [65] * 8 + [532, 30089, 555, 7, 4, 1]
    body = bytes((p81.reply_address(3), 3, 2 * len(regs))) + b"".join(v.to_bytes(2, "big") for v in regs)
    frame = body + crc16(body).to_bytes(2, "little")
    (obj,) = _decode_cli(frame.hex())
    assert obj["board"] == 3 and obj["protocol"] == "p81"
    assert obj["cells_mv"] == [3300] * 4 and obj["voltage_v"] == 53.2 and obj["current_a"] == 8.9


def test_corrupt_input_is_a_clear_error_not_a_traceback() -> None:
    bad = MODBUS[-1]["hex"][:-2] + "00"
    proc = subprocess.run([*CLI, "decode", bad], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "no D2 / 0x81 frame with a good CRC" in proc.stderr
    proc = subprocess.run([*CLI, "decode", "--start", "zz", "d203020001fc56"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--start 'zz' is not a register number" in proc.stderr
