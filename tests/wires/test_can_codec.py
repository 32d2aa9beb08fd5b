"""The Daly CAN codec: legacy ids, replies as A5 frames, the H/K/M/S broadcast, candump text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trackingbms.daly import can as dcan
from trackingbms.daly.a5 import A5Parser, checksum
from trackingbms.daly.records import decode_payload

REF = Path("/work/shared/reference/daly-frames.json")
_LOCAL = Path(__file__).parent.parent / "daly" / "daly-frames.json"
ENTRIES = json.loads((REF if REF.exists() else _LOCAL).read_text())
CAN_ENTRIES = [e for e in ENTRIES if "CAN" in e["source"] or e["protocol"] == "daly_a5_payload_only"]


def test_request_id_puts_the_board_in_the_destination_byte() -> None:
    assert dcan.encode_request(0x90).arbitration_id == 0x18900140
    assert dcan.encode_request(0x90, board=2).arbitration_id == 0x18900240
    assert dcan.encode_request(0x90).data == bytes(8)
    assert dcan.encode_request(0xDA, payload=b"\x01").data == b"\x01" + bytes(7)


def test_reply_converts_to_the_a5_frame_it_stands_for() -> None:
    frame = dcan.CanFrame(0x18904001, bytes.fromhex("023a0000753001ed"))
    a5 = dcan.to_a5(frame, host=0x40)
    assert a5 is not None and (a5.address, a5.data_id) == (1, 0x90)
    rec = decode_payload(0x90, a5.payload)
    assert rec.fields()["voltage_v"] == 57.0 and rec.fields()["soc_pct"] == 49.3
    # a request (ours, seen on the bus) or a reply to another host is not a reply for us
    assert dcan.to_a5(dcan.CanFrame(0x18904002, bytes(8)), host=0x41) is None
    assert dcan.to_a5(dcan.CanFrame(0x18904001, bytes(7)), host=0x40) is None
    assert dcan.to_a5(dcan.CanFrame(0x0400FF80, bytes(8))) is None


@pytest.mark.parametrize("entry", CAN_ENTRIES, ids=lambda e: e["hex"])
def test_reference_can_payloads_decode(entry: dict) -> None:
    """The captures of bare 8-byte payloads are CAN data fields: as a reply on its legacy id each one
    decodes to the values given, and to exactly what the same payload gives on UART."""
    exp = entry["expected"]
    data_id = int(exp["data_id"], 16)
    payload = bytes.fromhex(entry["hex"])
    frame = dcan.CanFrame(dcan.legacy_id(data_id, 0x40, 0x01), payload)
    a5 = dcan.to_a5(frame, host=0x40)
    assert a5 is not None and a5.address == 1
    fields = decode_payload(data_id, a5.payload).fields()
    body = bytes((0xA5, 0x01, data_id, 0x08)) + payload
    (uart,) = A5Parser(board=1).feed(body + bytes((checksum(body),)))
    assert fields == decode_payload(data_id, uart.payload).fields()
    for key, value in exp.items():
        if key.endswith("_mah"):  # the codec names capacities in Ah
            assert fields[key.replace("_mah", "_ah")] == value / 1000
        elif key.startswith("DI"):
            assert fields["dio"][key] is value
        elif key != "data_id":
            assert fields[key] == pytest.approx(value)


def test_candump_forms_parse() -> None:
    text = """
    18904001#023A0000753001ED
    (1700000000.123456) can0 18914001#0D000F0CFE010378
    vcan0  18924001   [8]  37 01 37 01 FE 01 03 78
    """
    frames = dcan.parse_candump(text)
    assert [f.arbitration_id for f in frames] == [0x18904001, 0x18914001, 0x18924001]
    assert frames[2].data == bytes.fromhex("37013701FE010378")
    assert dcan.parse_candump("18904001#00 18914001#01") == [
        dcan.CanFrame(0x18904001, b"\0"),
        dcan.CanFrame(0x18914001, b"\1"),
    ]


def test_candump_garbage_names_the_line() -> None:
    with pytest.raises(dcan.CanError, match="line 2"):
        dcan.parse_candump("18904001#00\nhello world")
    assert not dcan.looks_like_candump("a5 01 90 08")


#: no deadline: a shared, loaded machine must not fail a property on time
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.integers(0, 0xFF), st.integers(1, 16), st.binary(min_size=8, max_size=8))
def test_request_and_reply_ids_round_trip(data_id: int, board: int, payload: bytes) -> None:
    req = dcan.encode_request(data_id, board=board, payload=payload)
    assert dcan.request_of(req) == (data_id, board, 0x40, payload)
    rep = dcan.encode_reply(data_id, payload, board=board)
    a5 = dcan.to_a5(rep, host=0x40)
    assert a5 is not None and (a5.address, a5.data_id, a5.payload) == (board, data_id, payload)
    assert dcan.parse_candump(rep.candump()) == [rep]


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 0x1FFFFFFF), st.binary(max_size=8)), max_size=30))
def test_hkms_assembler_never_raises_on_foreign_frames(frames: list[tuple[int, bytes]]) -> None:
    asm = dcan.HkmsAssembler(board=1)
    for ident, data in frames:
        asm.feed(dcan.CanFrame(ident, data))
    asm.fields()  # whatever arrived, nothing invented


def test_hkms_round_assembles_to_a_reading() -> None:
    cells = [3300 + i for i in range(16)]
    frames = dcan.hkms_frames(
        board=3, voltage_v=52.9, current_a=-12.5, soc_pct=61.2, cells_mv=cells, temps_c=[20.0, 21.0],
        charge_mos=True, discharge_mos=False, remaining_ah=61.2, cycles=7, balancing=[2, 16],
    )  # fmt: skip
    asm = dcan.HkmsAssembler(board=3)
    for f in reversed(frames):  # order does not matter
        assert not asm.complete
        asm.feed(f)
    assert asm.complete
    assert asm.fields() == {
        "voltage_v": 52.9, "current_a": -12.5, "soc_pct": 61.2, "charge_mos": True, "discharge_mos": False,
        "remaining_ah": 61.2, "cycles": 7, "balancing": [2, 16], "cells_mv": cells, "temps_c": [20.0, 21.0],
    }  # fmt: skip
    # another board's round is not ours
    other = dcan.HkmsAssembler(board=1)
    for f in frames:
        assert not other.feed(f)
    # a missing cell page leaves the cells out and says so
    partial = dcan.HkmsAssembler(board=3)
    for f in frames:
        if not (f.arbitration_id >> 16 == dcan.HKMS_CELL_VOLTS and f.data[0] == 2):
            partial.feed(f)
    assert partial.missing == ["cells"] and "cells_mv" not in partial.fields()


@SETTINGS
@given(st.text(max_size=200))
def test_candump_parser_never_raises_anything_but_its_error(text: str) -> None:
    try:
        frames = dcan.parse_candump(text)
    except dcan.CanError as exc:
        assert str(exc).startswith("line ")
    else:
        assert all(len(f.data) <= 8 for f in frames)
