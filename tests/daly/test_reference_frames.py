"""Every A5 frame in the shared reference decodes to the values given there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trackingbms.daly.a5 import A5Parser, Frame, checksum, encode_frame
from trackingbms.daly.records import decode_frames, decode_payload
from trackingbms.daly.stream import decode_hex_stream

REF = Path("/work/shared/reference/daly-frames.json")
_LOCAL = Path(__file__).parent / "daly-frames.json"
FRAMES_FILE = REF if REF.exists() else _LOCAL
ENTRIES = json.loads(FRAMES_FILE.read_text()) if FRAMES_FILE.exists() else []
A5 = [e for e in ENTRIES if e["protocol"] == "daly_a5_uart"]
PAYLOADS = [e for e in ENTRIES if e["protocol"] == "daly_a5_payload_only"]

pytestmark = pytest.mark.skipif(not ENTRIES, reason="daly-frames.json not available")


def _id(e: dict) -> str:
    return f"{e['direction']}-{e['expected'].get('data_id')}-{e['hex'][:30]}"


@pytest.mark.parametrize("entry", [e for e in A5 if e["direction"] == "request"], ids=_id)
def test_requests_encode_exactly(entry: dict) -> None:
    raw = bytes.fromhex(entry["hex"])
    frame = Frame.from_bytes(raw)
    assert encode_frame(frame.address, frame.data_id, frame.payload) == raw
    exp = entry["expected"]
    assert f"0x{frame.data_id:02X}" == exp["data_id"].upper().replace("0X", "0x")
    if "host_address" in exp:
        assert frame.address == int(exp["host_address"], 16)
    # the board's parser never mistakes a request (our own echo) for a reply
    parser = A5Parser(board=1)
    assert parser.feed(raw) == []
    assert parser.drops["echo"] == 1


def _single(hex_: str) -> list[Frame]:
    parser = A5Parser(board=1)
    return parser.feed(bytes.fromhex(hex_))


@pytest.mark.parametrize(
    "entry", [e for e in A5 if e["direction"] == "response" and not e["expected"].get("broken")], ids=_id
)
def test_responses_decode_to_reference_values(entry: dict) -> None:
    exp = entry["expected"]
    frames = _single(entry["hex"])
    assert frames, "no frame recovered"
    rec = decode_frames(frames, sensor_count=exp.get("temp_sensor_count"), cell_count=exp.get("cell_count"))
    f = rec.fields()
    did = int(exp["data_id"], 16)
    assert rec.data_id == did
    if did == 0x90:
        assert f["voltage_v"] == pytest.approx(exp["total_voltage_v"])
        assert f["acquisition_voltage_v"] == pytest.approx(exp["acquisition_voltage_v"])
        raw_a = exp.get("current_a_raw_minus_30000_div10", exp.get("current_a"))
        # Sample convention on A5: raw above 30000 is discharge, so current_a is the negated raw formula
        assert f["current_a"] == pytest.approx(-raw_a)
        if "current_raw" in exp:
            assert f["current_raw"] == exp["current_raw"]
        assert f["soc_pct"] == pytest.approx(exp["soc_percent"])
    elif did == 0x91:
        assert f["max_cell_mv"] == round(exp["max_cell_v"] * 1000)
        assert f["max_cell_no"] == exp["max_cell_no"]
        assert f["min_cell_mv"] == round(exp["min_cell_v"] * 1000)
        assert f["min_cell_no"] == exp["min_cell_no"]
    elif did == 0x92:
        assert (f["max_temp_c"], f["max_temp_sensor"]) == (exp["max_temp_c"], exp["max_temp_sensor"])
        assert (f["min_temp_c"], f["min_temp_sensor"]) == (exp["min_temp_c"], exp["min_temp_sensor"])
    elif did == 0x93:
        names = {"stationary": "idle", "charging": "charging", "discharging": "discharging"}
        assert f["state"] == names[exp["state_name"]]
        assert f["charge_mos"] is exp["charge_mos"]
        assert f["discharge_mos"] is exp["discharge_mos"]
        assert f["heartbeat"] == exp["bms_life_byte"]
        assert f["remaining_ah"] == pytest.approx(exp["remaining_capacity_mah"] / 1000)
    elif did == 0x94:
        assert f["cell_count"] == exp["cell_count"]
        assert f["temp_sensor_count"] == exp["temp_sensor_count"]
        assert f["charger_connected"] is exp["charger_connected"]
        assert f["load_connected"] is exp["load_connected"]
        assert f["cycles"] == exp["cycles"]
    elif did == 0x95:
        assert f["frames"] == exp["frames"]
        assert f["cells_mv"] == [round(v * 1000) for v in exp["cell_voltages_v"]]
        assert "missing_frames" not in f
    elif did == 0x96:
        assert f["frames"] == exp["frames"]
        assert f["temps_c"] == exp["temperatures_c"]
    elif did in (0xD9, 0xDA):
        assert f["value"] == exp["data_byte0_echo"]
    else:  # pragma: no cover - a new kind of entry needs a new check
        pytest.fail(f"no check for {exp['data_id']}")


@pytest.mark.parametrize("entry", PAYLOADS, ids=_id)
def test_payload_only_entries_decode(entry: dict) -> None:
    exp = entry["expected"]
    did = int(exp["data_id"], 16)
    payload = bytes.fromhex(entry["hex"])
    # wrap as the note says and go through the parser, so the whole path is exercised
    body = bytes((0xA5, 0x01, did, 0x08)) + payload
    frames = A5Parser(board=1).feed(body + bytes((checksum(body),)))
    f = decode_payload(did, frames[0].payload).fields()
    if did == 0x50:
        assert f["rated_capacity_ah"] == exp["rated_capacity_mah"] / 1000
        assert f["nominal_cell_mv"] == exp["nominal_cell_mv"]
    elif did == 0x51:
        assert f["boards"] == exp["boards"]
        assert f["cells_per_board"] == exp["cells_per_board"]
        assert f["ntc_per_board"] == exp["ntc_per_board"]
    elif did == 0x5F:
        assert f["balance_start_mv"] == exp["balance_start_mv"]
        assert f["balance_diff_mv"] == exp["balance_diff_mv"]
    elif did == 0x60:
        assert f["short_circuit_a"] == exp["short_circuit_a"]
        assert f["sampling_resistor_mohm"] == pytest.approx(exp["sampling_resistor_mohm"])
    elif did == 0x54:
        assert f["firmware_text"] == exp["firmware_text"]
    elif did == 0x94:
        assert f["cell_count"] == exp["cell_count"]
        assert f["temp_sensor_count"] == exp["temp_sensor_count"]
        assert f["cycles"] == exp["cycles"]
        assert f["dio"]["DI2"] is exp["DI2"]
    else:  # pragma: no cover
        pytest.fail(f"no check for {exp['data_id']}")


def test_broken_burst_recovers_every_intact_frame() -> None:
    """dbus-serialbattery#165: frame 5 lost 4 bytes, a 0x90 reply follows in the same buffer."""
    (entry,) = [e for e in A5 if e["expected"].get("broken")]
    raw = bytes.fromhex(entry["hex"])
    exp = entry["expected"]
    # fed in awkward chunks, as a serial port delivers it
    parser = A5Parser(board=1)
    frames: list[Frame] = []
    for i in range(0, len(raw), 5):
        frames += parser.feed(raw[i : i + 5])
    cells = [f for f in frames if f.data_id == 0x95]
    assert [f.frame_no for f in cells] == exp["frames_ok"]
    assert [f.data_id for f in frames][-1] == 0x90
    assert parser.drops["truncated"] == 1
    # assembled for a 16-cell pack: frame 5 is reported missing, its cells are not invented
    rec = decode_frames(cells, cell_count=16).fields()
    assert rec["missing_frames"] == [5]
    assert rec["cells_mv"][12:15] == [None, None, None]
    assert len(rec["cells_mv"]) == 16
    assert all(3300 < v < 3400 for v in rec["cells_mv"] if v is not None)
    # the decode stream names the damaged bytes and still returns the rest
    objs, problems = decode_hex_stream(raw, cells=16)
    assert [o["data_id"] for o in objs] == ["0x95", "0x90"]
    assert len(problems) == 1 and problems[0].offset == 52 and problems[0].length == 9
    assert "truncated" in problems[0].reason
