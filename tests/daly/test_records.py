"""Decoders, multi-frame assembly, writes, poll logic and the Reading mapping."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackingbms.daly import FAULT_TEXT, fault_text
from trackingbms.daly.a5 import Frame, encode_frame, encode_request, frame_time_s, host_address
from trackingbms.daly.faults import FAULT_BITS, decode_fault_bits, encode_fault_bits
from trackingbms.daly.poll import CommandPoll, mos_payload, soc_payload
from trackingbms.daly.reading import to_reading
from trackingbms.daly.records import (
    assemble,
    balancing_cells,
    current_from_raw,
    current_to_raw,
    decode_faults,
    decode_frames,
    decode_payload,
)


def test_request_checksums_match_reference_table() -> None:
    # reference §1: zero-payload request checksums for host 0x40
    table = {0x90: 0x7D, 0x94: 0x81, 0x98: 0x85, 0x50: 0x3D, 0x57: 0x44, 0x62: 0x4F, 0x63: 0x50, 0x00: 0xED}
    for did, ck in table.items():
        assert encode_request(did)[-1] == ck
        assert encode_request(did, address=0x80)[-1] == (ck + 0x40) & 0xFF
    assert host_address(2) == 0x41
    with pytest.raises(ValueError):
        host_address(0)
    assert encode_request(0x90, filler=0xAA)[4:12] == b"\xaa" * 8


def test_frame_time_is_the_wire_floor() -> None:
    assert frame_time_s(9600) == pytest.approx(0.01354, abs=1e-4)


def test_fault_names_follow_the_reference_table() -> None:
    assert FAULT_BITS[(0, 0)] == "cell_voltage_high_l1"
    assert FAULT_BITS[(1, 1)] == "charge_temp_high_l2"
    assert FAULT_BITS[(2, 2)] == "discharge_overcurrent_l1"
    assert FAULT_BITS[(0, 7)] == "pack_voltage_low_l2"
    assert FAULT_BITS[(6, 2)] == "short_circuit_protection"
    assert FAULT_TEXT["cell_voltage_high_l1"] == "Cell voltage high (warning)"
    assert all(name in FAULT_TEXT for name in FAULT_BITS.values())
    rec = decode_faults(bytes([0b0000_0001, 0b0000_0010, 0b0000_0100, 0, 0, 0, 0, 3]))
    assert rec.faults == ["cell_voltage_high_l1", "charge_temp_high_l2", "discharge_overcurrent_l1"]
    assert rec.fault_code == 3
    # reserved bits are reported, not dropped
    assert decode_fault_bits(bytes([0, 0, 0, 0x80, 0, 0, 0])) == ["reserved_byte3_bit7"]
    assert "Undocumented" in fault_text("reserved_byte3_bit7")


@settings(deadline=None)
@given(st.binary(min_size=7, max_size=7))
def test_fault_bits_round_trip(flags: bytes) -> None:
    assert encode_fault_bits(decode_fault_bits(flags)) == flags


def test_balancing_bitmap_is_lsb_first_per_byte() -> None:
    assert balancing_cells(bytes([0b0000_0101, 0, 0b1000_0000, 0, 0, 0, 0xFF, 0xFF])) == [1, 3, 24]
    assert balancing_cells(bytes([0, 0, 0, 0, 0, 0x80, 0, 0])) == [48]
    assert balancing_cells(bytes([0xFF, 0xFF, 0, 0, 0, 0, 0, 0]), cell_count=12) == list(range(1, 13))


@settings(deadline=None)
@given(st.integers(0, 65535), st.booleans())
def test_current_convention_round_trips(raw: int, invert: bool) -> None:
    amps = current_from_raw(raw, invert_current=invert)
    assert current_to_raw(amps, invert_current=invert) == raw
    if raw != 30000:
        assert (amps < 0) == ((raw > 30000) != invert)
    else:
        assert amps == 0.0 and str(amps) == "0.0"  # never -0.0


def _cells_burst(cells: list[int], *, frames: int | None = None, stale: int = 0x40) -> list[Frame]:
    out = []
    n = frames or -(-len(cells) // 3)
    padded = cells + [0] * (3 * n - len(cells))
    for i in range(n):
        vals = padded[3 * i : 3 * i + 3]
        payload = bytes([i + 1]) + b"".join(v.to_bytes(2, "big") for v in vals) + bytes([stale])
        out.append(Frame(1, 0x95, payload))
    return out


def test_cells_are_truncated_to_the_count_and_missing_frames_reported() -> None:
    cells = [3300 + i for i in range(16)]
    burst = _cells_burst([*cells, 3339, 3340])  # garbage in unused slots of the last frame (#160)
    rec = assemble(0x95, burst, 16)
    assert rec.cells_mv == cells and rec.complete
    rec = assemble(0x95, [f for f in burst if f.frame_no != 2], 16)
    assert rec.missing_frames == [2]
    assert rec.cells_mv[3:6] == [None, None, None]
    reading = to_reading([rec])
    assert reading.cells_mv is None  # never a list with holes in a Sample


def test_zero_filled_host_0x80_frames_are_ignored() -> None:
    burst = _cells_burst([3300] * 4, frames=16)
    assert assemble(0x95, burst, 4).cells_mv == [3300] * 4
    assert assemble(0x95, burst).cells_mv == [3300] * 4  # no count: trailing zero cells trimmed


def test_text_replies_assemble_and_report_missing() -> None:
    text = b"DL-BMS-16S-100A"
    frames = [Frame(1, 0x63, bytes([i + 1]) + text[7 * i : 7 * i + 7].ljust(7, b"\0")) for i in range(2)]
    rec = decode_frames(frames).fields()
    assert rec["hardware_version"] == "DL-BMS-16S-100"
    rec = decode_frames(frames[:1]).fields()
    assert "hardware_version" not in rec and rec["missing_frames"] == [2]
    serial = [Frame(1, 0x57, bytes([i + 1]) + b"ABCDEFG") for i in range(5)]
    assert decode_frames(serial).fields()["serial"] == "ABCDEFG" * 5


def test_write_payloads() -> None:
    assert encode_request(0xD9, payload=mos_payload(True)).hex() == "a540d9080100000000000000c7"
    assert (
        encode_request(0xDA, address=0x80, payload=mos_payload(False)).hex() == "a580da08000000000000000007"
    )
    payload = soc_payload(30.0, datetime(2022, 12, 13, 21, 29, 39))
    assert encode_request(0x21, payload=payload).hex() == "a5402108160c0d151d27012cc3"
    with pytest.raises(ValueError):
        soc_payload(101, datetime(2022, 1, 1))


def test_thresholds_and_info_decoders() -> None:
    f = decode_payload(0x59, bytes.fromhex("0e740ed80a280a00")).fields()
    assert f == {
        "cell_high_l1_mv": 3700,
        "cell_high_l2_mv": 3800,
        "cell_low_l1_mv": 2600,
        "cell_low_l2_mv": 2560,
    }
    f = decode_payload(0x5A, bytes.fromhex("024e025802080200")).fields()
    assert f["pack_high_l1_v"] == 59.0
    f = decode_payload(0x5C, bytes([95, 100, 40, 35, 100, 105, 20, 15])).fields()
    assert f["charge_temp_high_l1_c"] == 55 and f["discharge_temp_low_l2_c"] == -25
    f = decode_payload(0x61, bytes([24, 3, 5, 13, 7, 9, 0, 0])).fields()
    assert f["rtc"] == "2024-03-05T13:07:09"
    f = decode_payload(0x53, bytes([0, 1, 22, 8, 10, 0, 60, 0])).fields()
    assert f["production_date"] == "2022-08-10"
    f = decode_payload(0x52, bytes.fromhex("0000012c00000064")).fields()
    assert f == {"cumulative_charge_ah": 300, "cumulative_discharge_ah": 100}


def test_poll_counts_frames_and_merges_retries() -> None:
    poll = CommandPoll(0x95, address=0x40, cell_count=16)
    assert poll.frames_needed == 6 and poll.frames_expected == 6
    burst = _cells_burst([3300 + i for i in range(16)])
    poll.start_attempt()
    for f in burst:
        if f.frame_no != 4:
            poll.feed(f)
    poll.note_bad()  # frame 4 arrived corrupt
    assert poll.burst_over and not poll.complete and poll.missing_frames == [4]
    poll.start_attempt()
    poll.feed(burst[3])
    assert poll.complete
    assert poll.record().cells_mv == [3300 + i for i in range(16)]
    # host 0x80: the unit sends all 16 frames
    assert CommandPoll(0x95, address=0x80, cell_count=16).frames_expected == 16
    # our own request echoed is not a frame of this poll
    poll = CommandPoll(0x90)
    assert not poll.feed(Frame(0x40, 0x90, bytes(8)))


def test_reading_from_records() -> None:
    recs = [
        decode_payload(0x90, bytes.fromhex("0214000075450378")),
        decode_payload(0x93, bytes.fromhex("020101780003cb40")),
        decode_payload(0x94, bytes.fromhex("1001010000000340")),
        decode_payload(0x97, bytes([0b11, 0, 0, 0, 0, 0, 0, 0])),
        decode_payload(0x98, bytes(8)),
        assemble(0x95, _cells_burst([3300] * 16), 16),
        assemble(0x96, [Frame(1, 0x96, bytes([1, 65, 66, 0, 0, 0, 0, 0]))], 2),
    ]
    r = to_reading(recs, errors={"0x92": "timeout"})
    assert r.voltage_v == 53.2 and r.current_a == -2.1 and r.soc_pct == 88.8
    assert r.state == "discharging" and r.remaining_ah == 248.64
    assert r.cycles == 3 and r.charger_connected is True
    assert r.cells_mv == [3300] * 16 and r.temps_c == [25.0, 26.0]
    assert r.balancing == [1, 2] and r.faults == [] and r.fault_code == 0
    assert r.is_partial
    assert encode_frame(1, 0x90, b"") == encode_frame(1, 0x90, bytes(8))
