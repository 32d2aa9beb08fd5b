"""The sans-I/O poll of one A5 command, state by state: which frames it needs and expects, when a burst is
over (so the exchange retries at once instead of waiting for its timeout), what a retry still has to bring,
and the write payloads. The frames are what the simulator's responder sends for the same requests.

Fast on purpose (no I/O, no hypothesis): bench/mutation.py runs this file against every mutant of poll.py.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from trackingbms.daly.a5 import Frame, encode_request
from trackingbms.daly.poll import (
    COMMAND_BY_ID,
    COMMANDS,
    SNAPSHOT_ORDER,
    WRITE_CHARGE_MOS,
    WRITE_DISCHARGE_MOS,
    WRITE_RESET,
    WRITE_SOC,
    CommandPoll,
    frames_sent,
    mos_payload,
    soc_payload,
)
from trackingbms.daly.records import DecodeError


def _cells(n_frames: int, *, board: int = 1, first_mv: int = 3300) -> list[Frame]:
    out = []
    for i in range(n_frames):
        mv = [first_mv + 3 * i + j for j in range(3)]
        out.append(Frame(board, 0x95, bytes([i + 1]) + b"".join(v.to_bytes(2, "big") for v in mv) + b"\x00"))
    return out


def test_the_command_table() -> None:
    assert {n: (c.data_id, c.description) for n, c in COMMANDS.items()} == {
        "pack": (0x90, "pack voltage, current, SOC"),
        "cell_range": (0x91, "highest / lowest cell voltage"),
        "temp_range": (0x92, "highest / lowest temperature"),
        "mos": (0x93, "state, MOSFETs, remaining capacity"),
        "status": (0x94, "cell / sensor counts, charger, load, cycles"),
        "cells": (0x95, "cell voltages"),
        "temps": (0x96, "temperatures"),
        "balancing": (0x97, "balancing cells"),
        "faults": (0x98, "faults and fault code"),
    }
    assert all(c.name == n for n, c in COMMANDS.items())
    assert SNAPSHOT_ORDER[0] == "status" and sorted(SNAPSHOT_ORDER) == sorted(COMMANDS)
    assert SNAPSHOT_ORDER == (
        "status",
        "pack",
        "cell_range",
        "temp_range",
        "mos",
        "cells",
        "temps",
        "balancing",
        "faults",
    )
    assert {i: c.name for i, c in COMMAND_BY_ID.items()} == {c.data_id: n for n, c in COMMANDS.items()}
    assert (WRITE_DISCHARGE_MOS, WRITE_CHARGE_MOS, WRITE_SOC, WRITE_RESET) == (0xD9, 0xDA, 0x21, 0x00)


def test_write_payloads_and_their_limits() -> None:
    assert (mos_payload(True), mos_payload(False)) == (b"\x01", b"\x00")
    assert soc_payload(55.5, datetime(2024, 2, 3, 4, 5, 6)) == bytes([24, 2, 3, 4, 5, 6, 0x02, 0x2B])
    assert soc_payload(0, datetime(2000, 1, 1)) == bytes([0, 1, 1, 0, 0, 0, 0, 0])
    assert soc_payload(100, datetime(2255, 12, 31, 23, 59, 59))[-3:] == bytes([59, 0x03, 0xE8])
    assert soc_payload(12.34, datetime(2001, 1, 1))[-2:] == (123).to_bytes(2, "big")
    for soc in (-0.1, 100.1):
        with pytest.raises(ValueError, match=rf"^SOC must be 0–100 %, got {soc}$"):
            soc_payload(soc, datetime(2024, 1, 1))
    for year in (1999, 2256):
        with pytest.raises(ValueError, match=rf"^RTC year must be 2000–2255, got {year}$"):
            soc_payload(50, datetime(year, 1, 1))


def test_frames_sent_zero_filled_only_to_uart_hosts() -> None:
    assert frames_sent(0x95, address=0x40, count=16) == 6
    assert frames_sent(0x95, address=0x7F, count=16) == 6
    assert frames_sent(0x95, address=0x80, count=16) == 16
    assert frames_sent(0x95, address=0x8F, count=4) == 16
    assert frames_sent(0x95, address=0x90, count=4) == 2
    assert frames_sent(0x96, address=0x80, count=2) == 3
    assert frames_sent(0x96, address=0x40, count=None) is None
    assert frames_sent(0x90, address=0x80, count=None) == 1
    assert frames_sent(0x57, address=0x80, count=None) == 5


def test_a_new_poll_knows_its_request_and_what_it_waits_for() -> None:
    p = CommandPoll(0x95, address=0x41, board=2, cell_count=16, sensor_count=2)
    assert p.request == encode_request(0x95, address=0x41)
    assert (p.data_id, p.address, p.board, p.multi, p.count) == (0x95, 0x41, 2, True, 16)
    assert (p.cell_count, p.sensor_count, p.invert_current) == (16, 2, False)
    assert (p.frames_needed, p.frames_expected, p.attempts, p.unexpected) == (6, 6, 0, 0)
    assert not p.got_any and not p.complete and p.missing_frames == [1, 2, 3, 4, 5, 6]
    t = CommandPoll(0x96, cell_count=16, sensor_count=8)
    assert (t.count, t.frames_needed, t.frames_expected) == (8, 2, 2)
    s = CommandPoll(0x90, cell_count=16, sensor_count=2)
    assert (s.multi, s.count, s.frames_needed, s.frames_expected, s.missing_frames) == (
        False,
        None,
        1,
        1,
        [1],
    )
    w = CommandPoll(0xD9, payload=mos_payload(True), filler=0xAA)
    assert w.request == encode_request(0xD9, payload=b"\x01", filler=0xAA)
    assert w.start_attempt() == w.request and w.attempts == 1


def test_a_single_frame_reply_completes_the_poll() -> None:
    p = CommandPoll(0x90)
    p.start_attempt()
    assert not p.burst_over and p.extra_frames_possible
    assert not p.feed(Frame(0x40, 0x90, bytes(8)))  # our own request, echoed
    assert not p.feed(Frame(1, 0x91, bytes(8)))  # a stale reply to another command
    assert p.unexpected == 2 and not p.got_any
    reply = Frame(1, 0x90, bytes.fromhex("0214000075450378"))
    assert p.feed(reply)
    assert p.got_any and p.complete and p.missing_frames == [] and p.burst_over
    assert not p.extra_frames_possible
    assert p.record().fields()["current_a"] == -2.1
    inv = CommandPoll(0x90, invert_current=True)
    inv.feed(reply)
    assert inv.record().fields()["current_a"] == 2.1


def test_a_single_frame_poll_without_its_reply_says_so() -> None:
    p = CommandPoll(0x92)
    with pytest.raises(DecodeError, match=r"^no reply frame for 0x92$"):
        p.record()
    p.start_attempt()
    p.note_bad()  # the reply came, corrupt: the burst is over, retry now
    assert p.burst_over and not p.complete and p.missing_frames == [1]


def test_balancing_is_cut_to_the_cell_count() -> None:
    p = CommandPoll(0x97, cell_count=4)
    p.feed(Frame(1, 0x97, bytes([0xFF, 0, 0, 0, 0, 0, 0, 0])))
    assert p.record().fields()["balancing"] == [1, 2, 3, 4]


def test_a_burst_is_over_at_its_last_frame_or_when_all_its_slots_came() -> None:
    burst = _cells(6)
    p = CommandPoll(0x95, cell_count=16)
    p.start_attempt()
    p.feed_all(burst[:4])
    assert not p.burst_over and p.extra_frames_possible and p.missing_frames == [5, 6]
    p.note_bad()  # frame 5 corrupt
    assert not p.burst_over
    p.feed(burst[5])
    assert p.burst_over and not p.extra_frames_possible and p.missing_frames == [5]
    # the retry starts counting again but keeps the frames already in
    p.start_attempt()
    assert p.attempts == 2 and not p.burst_over and p.extra_frames_possible
    p.feed(burst[4])
    assert p.complete and not p.burst_over  # 1 of 6 slots this attempt
    assert p.record().cells_mv == [3300 + i for i in range(16)]
    # a frame whose header was lost goes unnoticed: the last frame number still ends the burst
    q = CommandPoll(0x95, cell_count=16)
    q.feed(burst[5])
    assert q.burst_over and q.missing_frames == [1, 2, 3, 4, 5]
    q.start_attempt()
    assert not q.burst_over
    q.note_bad(5)
    assert not q.burst_over
    q.note_bad()
    assert q.burst_over


def test_frame_numbers_outside_the_reply_are_not_placed() -> None:
    p = CommandPoll(0x95, address=0x80, cell_count=16)
    assert p.frames_expected == 16
    bad0 = Frame(1, 0x95, bytes([0, 1, 2, 3, 4, 5, 6, 7]))
    bad17 = Frame(1, 0x95, bytes([17, 1, 2, 3, 4, 5, 6, 7]))
    assert not p.feed(bad0) and not p.feed(bad17)
    assert not p.got_any and p.unexpected == 0  # ours, but not placeable
    last = Frame(1, 0x95, bytes([16, 0, 0, 0, 0, 0, 0, 0]))
    assert p.feed(last) and p.burst_over  # frame 16 of a host-0x80 burst
    assert p.missing_frames == [1, 2, 3, 4, 5, 6]


def test_an_unknown_count_reads_until_the_line_is_quiet() -> None:
    p = CommandPoll(0x95, address=0x40)
    assert p.frames_needed is None and p.frames_expected is None
    assert p.missing_frames == [1] and not p.complete
    p.feed_all(_cells(2))
    assert p.missing_frames == [] and p.complete
    assert not p.burst_over and p.extra_frames_possible  # more may come
    assert p.record().cells_mv == [3300 + i for i in range(6)]
    assert p.expected_wire_s(9600) == 17 * 130 / 9600  # request + the most frames (16)
    assert CommandPoll(0x95, cell_count=16).expected_wire_s(9600) == 7 * 130 / 9600
    assert CommandPoll(0x96, sensor_count=2).expected_wire_s(19200) == 2 * 130 / 19200


def test_a_late_frame_from_an_earlier_attempt_replaces_the_old_copy() -> None:
    p = CommandPoll(0x96, sensor_count=2)
    p.feed(Frame(1, 0x96, bytes([1, 60, 61, 0, 0, 0, 0, 0])))
    p.feed(Frame(1, 0x96, bytes([1, 65, 66, 0, 0, 0, 0, 0])))
    assert p.record().temps_c == [25.0, 26.0]


def test_a_one_frame_burst_is_not_over_before_its_frame() -> None:
    p = CommandPoll(0x95, cell_count=3)  # 3 cells: one frame
    assert p.frames_expected == 1 and not p.burst_over
    p.start_attempt()
    assert not p.burst_over
    p.feed(_cells(1)[0])
    assert p.burst_over and p.complete
