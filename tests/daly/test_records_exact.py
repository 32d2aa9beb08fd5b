"""Every A5 decoder value for value, with the edges where a reading turns into "not a date" or "no value",
the exact errors, and multi-frame assembly (order, duplicates, foreign frames, trimming, text replies).

Fast on purpose (no I/O, no hypothesis): bench/mutation.py runs this file against every mutant of
records.py. Payloads are laid out from reference/daly-protocol.md §2 by hand, as the simulator does.
"""

from __future__ import annotations

import pytest

from trackingbms.daly.a5 import DalyError, Frame
from trackingbms.daly.records import (
    CURRENT_OFFSET,
    KNOWN_IDS,
    MULTI_FRAME,
    SINGLE_DECODERS,
    STATE_NAMES,
    TEMP_OFFSET,
    TEXT_FIELD,
    DecodeError,
    assemble,
    current_from_raw,
    current_to_raw,
    decode_frames,
    decode_pack,
    decode_payload,
    frames_needed,
)


def u16(*values: int) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


def test_constants() -> None:
    assert (CURRENT_OFFSET, TEMP_OFFSET) == (30000, 40)
    assert STATE_NAMES == {0: "idle", 1: "charging", 2: "discharging"}
    assert MULTI_FRAME == {0x95: (3, 16), 0x96: (7, 3), 0x57: (7, 5), 0x62: (7, 2), 0x63: (7, 2)}
    assert TEXT_FIELD == {0x57: "serial", 0x62: "software_version", 0x63: "hardware_version"}
    singles = {0x90, 0x91, 0x92, 0x93, 0x94, 0x97, 0x98, 0x50, 0x51, 0x52, 0x53, 0x54, 0x61}
    singles |= set(range(0x59, 0x61)) | {0xD9, 0xDA, 0x21, 0x00}
    assert set(SINGLE_DECODERS) == singles
    assert KNOWN_IDS == singles | set(MULTI_FRAME)
    assert issubclass(DecodeError, DalyError)


def test_current_sign_convention() -> None:
    assert current_from_raw(30021) == -2.1  # above the offset: discharging
    assert current_from_raw(29979) == 2.1
    assert current_from_raw(30021, invert_current=True) == 2.1
    assert current_from_raw(0) == 3000.0
    for invert in (False, True):
        zero = current_from_raw(30000, invert_current=invert)
        assert str(zero) == "0.0"
    assert current_to_raw(-2.1) == 30021 and current_to_raw(-2.1, invert_current=True) == 29979
    assert current_to_raw(2.1) == 29979


def test_pack_cell_range_temp_range() -> None:
    pack = decode_payload(0x90, u16(532, 531, 30021, 888))
    assert pack.to_json() == {
        "data_id": "0x90",
        "voltage_v": 53.2,
        "acquisition_voltage_v": 53.1,
        "current_raw": 30021,
        "current_a": -2.1,
        "soc_pct": 88.8,
    }
    assert decode_payload(0x90, u16(532, 0, 30021, 888), invert_current=True).current_a == 2.1
    assert decode_pack(u16(532, 0, 30021, 888)).current_a == -2.1  # the default: raw above 30000 discharges
    cr = decode_payload(0x91, u16(3345) + bytes([7]) + u16(3301) + bytes([12, 0xAB, 0xCD]))
    assert cr.fields() == {
        "max_cell_mv": 3345,
        "max_cell_no": 7,
        "min_cell_mv": 3301,
        "min_cell_no": 12,
        "cell_delta_mv": 44,
    }
    tr = decode_payload(0x92, bytes([71, 2, 35, 4, 0xAA, 0xAA, 0xAA, 0xAA]))
    assert tr.to_json() == {
        "data_id": "0x92",
        "max_temp_c": 31,
        "max_temp_sensor": 2,
        "min_temp_c": -5,
        "min_temp_sensor": 4,
    }


def test_mos_and_status() -> None:
    mos = decode_payload(0x93, bytes([2, 1, 0, 0x78]) + (0x01020304).to_bytes(4, "big"))
    assert mos.data_id == 0x93 and mos.fields() == {
        "state": "discharging",
        "state_raw": 2,
        "charge_mos": True,
        "discharge_mos": False,
        "heartbeat": 0x78,
        "remaining_ah": 16909.06,
    }
    odd = decode_payload(0x93, bytes([7, 0, 2, 0, 0, 0, 0, 1]))
    assert odd.fields() == {  # an unknown state has no name, its raw byte stays
        "state_raw": 7,
        "charge_mos": False,
        "discharge_mos": True,
        "heartbeat": 0,
        "remaining_ah": 0.001,
    }
    assert [decode_payload(0x93, bytes([s]) + bytes(7)).state for s in (0, 1)] == ["idle", "charging"]
    other = decode_payload(0x94, bytes([4, 1, 0, 1, 0, 0, 0, 0]))
    assert (other.charger_connected, other.load_connected) == (False, True)
    st = decode_payload(0x94, bytes([16, 3, 1, 0, 0b1010_0101]) + u16(1234) + b"\xee")
    assert st.to_json() == {
        "data_id": "0x94",
        "cell_count": 16,
        "temp_sensor_count": 3,
        "charger_connected": True,
        "load_connected": False,
        "dio_bits": 0b1010_0101,
        "cycles": 1234,
        "dio": {
            "DI1": True,
            "DI2": False,
            "DI3": True,
            "DI4": False,
            "DO1": False,
            "DO2": True,
            "DO3": False,
            "DO4": True,
        },
    }


def test_balancing_faults_and_write_acks() -> None:
    bal = decode_payload(0x97, bytes([0b1000_0001, 0, 0, 0, 0, 0b1000_0000, 0xFF, 0xFF]))
    assert bal.to_json() == {"data_id": "0x97", "balancing": [1, 8, 48]}
    assert decode_payload(0x97, bytes([0b1000_0001, 0, 0, 0, 0, 0x80, 0, 0]), cell_count=8).balancing == [
        1,
        8,
    ]
    faults = decode_payload(0x98, bytes([1, 0, 0, 0, 0, 0, 0, 9]))
    assert faults.to_json() == {"data_id": "0x98", "faults": ["cell_voltage_high_l1"], "fault_code": 9}
    for did in (0xD9, 0xDA, 0x21, 0x00):
        ack = decode_payload(did, bytes([1, 2, 3, 4, 5, 6, 7, 8]))
        assert ack.to_json() == {"data_id": f"0x{did:02X}", "value": 1, "payload_hex": "0102030405060708"}


def test_info_replies() -> None:
    # u32 values with a non-zero high byte: a field read from the wrong offset cannot match by chance
    assert decode_payload(
        0x50, (0x01000000).to_bytes(4, "big") + (0x01000C80).to_bytes(4, "big")
    ).to_json() == {
        "data_id": "0x50",
        "rated_capacity_ah": 16777.216,
        "nominal_cell_mv": 0x01000C80,
    }
    assert decode_payload(0x51, bytes([1, 16, 2, 3, 4, 5, 6, 0xFF])).to_json() == {
        "data_id": "0x51",
        "boards": 1,
        "cells_per_board": [16, 2, 3],
        "ntc_per_board": [4, 5, 6],
    }
    assert decode_payload(
        0x52, (0x02000001).to_bytes(4, "big") + (0x03000005).to_bytes(4, "big")
    ).to_json() == {
        "data_id": "0x52",
        "cumulative_charge_ah": 0x02000001,
        "cumulative_discharge_ah": 0x03000005,
    }
    assert decode_payload(0x53, bytes([3, 1, 23, 5, 17]) + u16(3600) + b"\x00").to_json() == {
        "data_id": "0x53",
        "operating_mode": 3,
        "battery_type": 1,
        "production_date": "2023-05-17",
        "sleep_raw": 3600,
    }
    assert decode_payload(0x54, b" 2023\x00x ").to_json() == {"data_id": "0x54", "firmware_text": "2023"}
    assert decode_payload(0x54, b"V1.2\xffab\x00").firmware_text == "V1.2\ufffdab"


@pytest.mark.parametrize(
    ("ymd", "date"),
    [
        ((0, 1, 1), "2000-01-01"),
        ((99, 12, 31), "2099-12-31"),
        ((24, 0, 5), None),
        ((24, 13, 5), None),
        ((24, 3, 0), None),
        ((24, 3, 32), None),
    ],
)
def test_dates_outside_the_calendar_are_not_dates(ymd: tuple[int, int, int], date: str | None) -> None:
    assert decode_payload(0x53, bytes([0, 0, *ymd, 0, 0, 0])).production_date == date
    rtc = decode_payload(0x61, bytes([*ymd, 1, 2, 3, 0xAA, 0xBB]))
    assert rtc.data_id == 0x61
    assert rtc.rtc == (None if date is None else f"{date}T01:02:03")
    assert rtc.rtc_raw == bytes([*ymd, 1, 2, 3]).hex()


@pytest.mark.parametrize(
    ("hms", "ok"),
    [((23, 59, 59), True), ((24, 0, 0), False), ((0, 60, 0), False), ((0, 0, 60), False), ((0, 0, 0), True)],
)
def test_rtc_times_outside_the_clock_are_not_times(hms: tuple[int, int, int], ok: bool) -> None:
    rtc = decode_payload(0x61, bytes([24, 3, 5, *hms, 0, 0]))
    assert rtc.rtc == (f"2024-03-05T{hms[0]:02d}:{hms[1]:02d}:{hms[2]:02d}" if ok else None)


def test_every_threshold_reply() -> None:
    def th(did: int, p: bytes) -> dict:
        return decode_payload(did, p).fields()

    assert th(0x59, u16(3700, 3800, 2600, 2560)) == {
        "cell_high_l1_mv": 3700,
        "cell_high_l2_mv": 3800,
        "cell_low_l1_mv": 2600,
        "cell_low_l2_mv": 2560,
    }
    assert th(0x5A, u16(590, 600, 520, 512)) == {
        "pack_high_l1_v": 59.0,
        "pack_high_l2_v": 60.0,
        "pack_low_l1_v": 52.0,
        "pack_low_l2_v": 51.2,
    }
    # offset encoding, magnitude reported whatever the sign convention of the unit
    assert th(0x5B, u16(29000, 28500, 31000, 31505)) == {
        "charge_overcurrent_l1_a": 100.0,
        "charge_overcurrent_l2_a": 150.0,
        "discharge_overcurrent_l1_a": 100.0,
        "discharge_overcurrent_l2_a": 150.5,
    }
    assert th(0x5C, bytes([95, 100, 40, 35, 101, 105, 20, 15])) == {
        "charge_temp_high_l1_c": 55,
        "charge_temp_high_l2_c": 60,
        "charge_temp_low_l1_c": 0,
        "charge_temp_low_l2_c": -5,
        "discharge_temp_high_l1_c": 61,
        "discharge_temp_high_l2_c": 65,
        "discharge_temp_low_l1_c": -20,
        "discharge_temp_low_l2_c": -25,
    }
    assert th(0x5D, u16(1000, 995, 100, 55)) == {
        "soc_high_l1_pct": 100.0,
        "soc_high_l2_pct": 99.5,
        "soc_low_l1_pct": 10.0,
        "soc_low_l2_pct": 5.5,
    }
    assert th(0x5E, u16(100, 300) + bytes([45, 50, 0, 0])) == {
        "cell_diff_l1_mv": 100,
        "cell_diff_l2_mv": 300,
        "temp_diff_l1_c": 5,
        "temp_diff_l2_c": 10,
    }
    assert th(0x5F, u16(3400, 30, 0, 0)) == {"balance_start_mv": 3400, "balance_diff_mv": 30}
    assert th(0x60, u16(500, 250, 0, 0)) == {"short_circuit_a": 500, "sampling_resistor_mohm": 0.25}
    assert decode_payload(0x60, u16(500, 250, 0, 0)).to_json()["data_id"] == "0x60"
    from trackingbms.daly.records import decode_thresholds

    with pytest.raises(DecodeError, match=r"^0x58 is not a threshold reply$"):
        decode_thresholds(0x58, bytes(8))


def test_bad_input_is_a_clear_decode_error() -> None:
    for n in (7, 9):
        with pytest.raises(DecodeError, match=rf"^an A5 payload is 8 bytes, got {n}$"):
            decode_payload(0x91, bytes(n))
    with pytest.raises(DecodeError, match=r"^an A5 payload is 8 bytes, got 7$"):
        decode_payload(0x90, bytes(7))
    with pytest.raises(DecodeError, match=r"^0x95 is multi-frame: use assemble\(\)$"):
        decode_payload(0x95, bytes(8))
    with pytest.raises(DecodeError, match=r"^unknown A5 data id 0x58$"):
        decode_payload(0x58, bytes(8))
    with pytest.raises(DecodeError, match=r"^no frames$"):
        decode_frames([])
    with pytest.raises(DecodeError, match=r"^0x90 is not a multi-frame reply$"):
        assemble(0x90, [])
    # payloads arrive as bytearray/memoryview from parsers: decoded as bytes
    assert (
        decode_payload(0x91, bytearray(u16(3345) + bytes([7]) + u16(3301) + bytes([12, 0, 0]))).min_cell_no
        == 12
    )


def test_frames_needed() -> None:
    assert [frames_needed(0x95, n) for n in (0, 1, 3, 4, 16, 48, 49, 200)] == [1, 1, 1, 2, 6, 16, 16, 16]
    assert [frames_needed(0x96, n) for n in (1, 7, 8, 21, 30)] == [1, 1, 2, 3, 3]
    assert frames_needed(0x95) is None and frames_needed(0x96, None) is None
    assert [frames_needed(i) for i in (0x57, 0x62, 0x63)] == [5, 2, 2]
    assert frames_needed(0x90) == 1 and frames_needed(0x90, 16) == 1


def _cells(values: list[int], no: int) -> Frame:
    return Frame(1, 0x95, bytes([no]) + u16(*values) + b"\x00")


def test_cells_assemble_in_any_order_keeping_the_latest_copy() -> None:
    frames = [_cells([3303, 3304, 3305], 2), _cells([1, 1, 1], 1), _cells([3300, 3301, 3302], 1)]
    rec = assemble(0x95, frames, 5)
    assert rec.to_json() == {"data_id": "0x95", "frames": 2, "cells_mv": [3300, 3301, 3302, 3303, 3304]}
    assert rec.complete
    # frames of another data id, frame number 0 or beyond 16 are not placed
    noise = [Frame(1, 0x96, bytes([1, 65, 0, 0, 0, 0, 0, 0])), _cells([9, 9, 9], 0), _cells([9, 9, 9], 17)]
    rec = assemble(0x95, [*noise, frames[0]], 6)
    assert rec.fields() == {
        "frames": 1,
        "missing_frames": [1],
        "cells_mv": [None, None, None, 3303, 3304, 3305],
    }
    assert not rec.complete
    last = _cells([3310, 3311, 3312], 16)
    assert assemble(0x95, [last], 48).cells_mv[45:] == [3310, 3311, 3312]
    # without a count: every frame received, zero cells at the end trimmed, zeros inside kept
    rec = assemble(0x95, [_cells([3300, 0, 3302], 1), _cells([0, 0, 0], 2)])
    assert rec.fields() == {"frames": 2, "cells_mv": [3300, 0, 3302]}
    assert assemble(0x95, []).fields() == {"frames": 0, "cells_mv": []}


def test_temperatures_assemble_as_floats() -> None:
    frames = [
        Frame(1, 0x96, bytes([2, 30, 0, 0, 0, 0, 0, 0])),
        Frame(1, 0x96, bytes([1, 65, 20, 40, 41, 42, 43, 44])),
    ]
    rec = assemble(0x96, frames, 8)
    assert rec.to_json() == {
        "data_id": "0x96",
        "frames": 2,
        "temps_c": [25.0, -20.0, 0.0, 1.0, 2.0, 3.0, 4.0, -10.0],
    }
    assert all(type(t) is float for t in rec.temps_c)
    rec = assemble(0x96, frames[1:], 8)
    assert rec.temps_c == [25.0, -20.0, 0.0, 1.0, 2.0, 3.0, 4.0, None] and rec.missing_frames == [2]
    rec = assemble(0x96, frames[:1], 8)  # frame 1 missing: 7 sensors unknown, the 8th known
    assert rec.temps_c == [None] * 7 + [-10.0] and rec.missing_frames == [1]
    # no count: the zero-filled tail (raw 0 = -40 °C) is trimmed
    rec = decode_frames(
        [Frame(1, 0x96, bytes([1, 65, 66, 0, 0, 0, 0, 0])), Frame(1, 0x96, bytes([2] + [0] * 7))]
    )
    assert rec.temps_c == [25.0, 26.0]
    rec = decode_frames([Frame(1, 0x96, bytes([1, 65, 66, 67, 0, 0, 0, 0]))], sensor_count=2, cell_count=1)
    assert rec.temps_c == [25.0, 26.0]


def test_text_replies() -> None:
    frames = [Frame(1, 0x62, bytes([2]) + b"7-V1.2\x00"), Frame(1, 0x62, bytes([1]) + b" 202305")]
    assert assemble(0x62, frames).to_json() == {
        "data_id": "0x62",
        "frames": 2,
        "software_version": "2023057-V1.2",
    }
    rec = assemble(0x57, [Frame(1, 0x57, bytes([1]) + b"ABCDEFG")], 99)
    assert rec.fields() == {"frames": 1, "missing_frames": [2, 3, 4, 5]}
    assert rec.serial is None and rec.software_version is None
    rec = decode_frames([Frame(1, 0x63, bytes([i]) + b"HW-V2\x00\x00") for i in (1, 2)])
    assert rec.fields() == {"frames": 2, "hardware_version": "HW-V2"}


def test_decode_frames_dispatches_counts_by_data_id() -> None:
    cells = [_cells([3300, 3301, 3302], 1), _cells([3303, 3304, 3305], 2)]
    assert decode_frames(cells, cell_count=4, sensor_count=1).cells_mv == [3300, 3301, 3302, 3303]
    bal = Frame(1, 0x97, bytes([0xFF, 0, 0, 0, 0, 0, 0, 0]))
    assert decode_frames([bal], cell_count=3).balancing == [1, 2, 3]
    pack = Frame(1, 0x90, u16(532, 0, 30021, 888))
    assert decode_frames([pack], invert_current=True).current_a == 2.1
    assert decode_frames([pack]).current_a == -2.1
