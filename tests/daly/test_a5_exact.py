"""A5 frames and the stream parser, value for value: encoding limits, the exact errors, and what the parser
drops, why, where and how much (the counters the gateway reports), on hand-built byte streams.

Fast on purpose (no I/O, no hypothesis): bench/mutation.py runs this file against every mutant of a5.py.
"""

from __future__ import annotations

import pytest

from trackingbms.daly.a5 import (
    DROP_REASONS,
    HOST_RS485,
    HOST_UART,
    A5Parser,
    Frame,
    FrameError,
    checksum,
    encode_frame,
    encode_request,
    frame_time_s,
    host_address,
    is_host_address,
)

#: a real 0x90 reply (mpp-solar test_daly_SOC: 53.2 V, 88.8 %), board 1
PACK = bytes.fromhex("a5019008021400007545037889")
#: a real 0x94 reply of the same unit, built the same way
STATUS = encode_frame(1, 0x94, bytes.fromhex("1001010000000340"))


def _zero(**kw: int) -> dict[str, int]:
    return {**dict.fromkeys(DROP_REASONS, 0), **kw}


def test_checksum_is_the_low_byte_of_the_sum() -> None:
    assert checksum(b"") == 0
    assert checksum(bytes([0xFF, 0x02])) == 0x01
    assert checksum(PACK[:12]) == PACK[12] == 0x89


def test_encode_frame_pads_with_the_filler_and_checks_its_limits() -> None:
    assert encode_frame(1, 0x90, bytes.fromhex("0214000075450378")) == PACK
    assert encode_frame(0x40, 0x90, b"\x01", filler=0xAA).hex() == "a54090080" + "1" + "aa" * 7 + "24"
    assert encode_frame(0xFF, 0xFF, bytes(8), filler=0xFF)[:4] == bytes((0xA5, 0xFF, 0xFF, 0x08))
    assert encode_frame(0, 0, b"", filler=0) == bytes((0xA5, 0, 0, 8)) + bytes(8) + bytes((0xAD,))
    with pytest.raises(ValueError, match=r"^A5 payload is at most 8 bytes, got 9$"):
        encode_frame(1, 0x90, bytes(9))
    for bad in (
        {"address": 256},
        {"address": -1},
        {"data_id": 256},
        {"data_id": -1},
        {"filler": 256},
        {"filler": -1},
    ):
        args = {"address": 1, "data_id": 0x90, **bad}
        filler = args.pop("filler", 0)
        with pytest.raises(ValueError, match=r"^address, data id and filler must be single bytes$"):
            encode_frame(args["address"], args["data_id"], b"", filler=filler)


def test_requests_and_host_addresses() -> None:
    assert (HOST_RS485, HOST_UART) == (0x40, 0x80)
    assert encode_request(0x90).hex() == "a540900800000000000000007d"
    assert encode_request(0x90, address=HOST_UART, payload=b"\x01", filler=0xAA) == encode_frame(
        0x80, 0x90, b"\x01", filler=0xAA
    )
    assert [host_address(b) for b in (1, 2, 16)] == [0x40, 0x41, 0x4F] and host_address() == 0x40
    assert host_address(3, base=HOST_UART) == 0x82
    for board in (0, 17):
        with pytest.raises(ValueError, match=rf"^board number must be 1–16, got {board}$"):
            host_address(board)


def test_wire_time_is_ten_bits_a_byte() -> None:
    assert frame_time_s(9600) == 13 * 10 / 9600
    assert frame_time_s(115200, 7) == 7 * 13 * 10 / 115200


def test_host_addresses_are_exactly_the_documented_ranges() -> None:
    hosts = [a for a in range(256) if is_host_address(a)]
    assert hosts == [0x20, *range(0x40, 0x50), *range(0x80, 0x90)]


def test_frame_from_bytes_names_the_reason_and_the_offset() -> None:
    f = Frame.from_bytes(PACK)
    assert (f.address, f.data_id, f.payload) == (1, 0x90, bytes.fromhex("0214000075450378"))
    assert f.to_bytes() == PACK
    assert Frame(1, 0x95, bytes([7, 0, 0, 0, 0, 0, 0, 0])).frame_no == 7
    cases = [
        (PACK[:12], 100, "an A5 frame is 13 bytes, got 12"),
        (b"\xa4" + PACK[1:], 100, "frame must start with 0xA5, got 0xA4"),
        (PACK[:3] + b"\x07" + PACK[4:], 103, "length byte must be 0x08, got 0x07"),
        (PACK[:12] + b"\x88", 112, "bad checksum 0x88 (expected 0x89)"),
    ]
    for raw, offset, message in cases:
        with pytest.raises(FrameError) as e:
            Frame.from_bytes(raw, offset=100)
        assert (str(e.value), e.value.offset) == (message, offset)
    assert FrameError("x").offset is None
    with pytest.raises(FrameError) as e:
        Frame.from_bytes(PACK[:12] + b"\x88")
    assert e.value.offset == 12  # offsets count from the start of what was given


def test_parser_starts_empty_and_refuses_what_is_not_bytes() -> None:
    p = A5Parser()
    assert (p.board, p.on_drop, p.pending, p.offset, p.garbage_bytes, p.frames_good) == (1, None, 0, 0, 0, 0)
    assert dict(p.drops) == _zero()
    for feed in (p.feed, p.feed_with_offsets):
        with pytest.raises(FrameError, match=r"^parser needs bytes, got str$"):
            feed("a5")  # type: ignore[arg-type]
    assert p.feed(bytearray(PACK[:5])) == [] and p.feed(memoryview(PACK[5:])) == [Frame.from_bytes(PACK)]
    assert p.feed_with_offsets(bytearray(STATUS)) == [(13, Frame.from_bytes(STATUS))]


def _parser(board: int | None = 1) -> tuple[A5Parser, list[tuple[int, int, str]]]:
    events: list[tuple[int, int, str]] = []
    return A5Parser(board=board, on_drop=lambda o, n, r: events.append((o, n, r))), events


def test_garbage_is_dropped_in_runs_with_its_stream_offset() -> None:
    p, events = _parser()
    out = p.feed_with_offsets(b"\x01\x02" + PACK + b"\x00\x11\x22" + STATUS)
    assert out == [(2, Frame.from_bytes(PACK)), (18, Frame.from_bytes(STATUS))]
    assert events == [(0, 2, "garbage"), (15, 3, "garbage")]
    assert dict(p.drops) == _zero(garbage=2) and p.garbage_bytes == 5
    assert (p.frames_good, p.offset, p.pending) == (2, 31, 0)
    assert p.feed(b"\x00\x11\x22") == [] and p.pending == 0 and p.garbage_bytes == 8


def test_a_stray_start_byte_is_dropped_as_soon_as_its_length_byte_is_wrong() -> None:
    p, events = _parser()
    assert p.feed(b"\xa5\x01") == [] and p.pending == 2 and events == []  # could still be a frame
    assert p.feed(b"\x90\x07") == []  # 4 bytes: the length byte says it is not
    assert events == [(0, 1, "garbage"), (1, 3, "garbage")] and p.pending == 0
    assert p.feed(PACK[:12]) == [] and p.pending == 12  # a frame in the making is waited for
    assert p.feed(PACK[12:]) == [Frame.from_bytes(PACK)] and p.offset == 17


def test_bad_checksum_drops_one_byte_and_resyncs() -> None:
    p, events = _parser()
    bad = PACK[:12] + b"\x00"
    assert p.feed(bad + STATUS) == [Frame.from_bytes(STATUS)]
    assert events == [(0, 1, "bad_checksum"), (1, 12, "garbage")]
    assert dict(p.drops) == _zero(bad_checksum=1, garbage=1) and p.garbage_bytes == 12


def test_a_frame_cut_short_by_the_next_reply_is_truncated_not_corrupt() -> None:
    # the header of the next reply at byte 9 of the candidate: the last place a whole header fits
    p, events = _parser()
    assert p.feed(STATUS[:9] + PACK) == [Frame.from_bytes(PACK)]
    assert events == [(0, 1, "truncated"), (1, 8, "garbage")]
    assert dict(p.drops) == _zero(truncated=1, garbage=1)
    # a start byte whose length byte is not 0x08 inside the candidate is not a header: bad checksum
    p, events = _parser()
    assert p.feed(STATUS[:9] + b"\xa5\x01\x90\x07") == []
    assert events[0] == (0, 1, "bad_checksum")


def test_echoes_are_dropped_whole_and_other_boards_byte_by_byte() -> None:
    p, events = _parser()
    request = encode_request(0x90)
    assert p.feed(request + PACK) == [Frame.from_bytes(PACK)]
    assert events == [(0, 13, "echo")] and p.drops["echo"] == 1
    board2 = encode_frame(2, 0x90, bytes(8))
    p, events = _parser()
    assert p.feed(board2) == []
    assert events == [(0, 1, "wrong_address"), (1, 12, "garbage")]
    assert A5Parser(board=2).feed(board2) == [Frame.from_bytes(board2)]
    # board=None (captures): any address, even a host's
    assert A5Parser(board=None).feed(request + board2) == [
        Frame.from_bytes(request),
        Frame.from_bytes(board2),
    ]


def test_reset_forgets_a_partial_frame_as_truncated() -> None:
    p, events = _parser()
    p.reset()
    assert events == [] and dict(p.drops) == _zero()
    p.feed(PACK[:5])
    p.reset()
    assert events == [(0, 5, "truncated")] and (p.pending, p.offset) == (0, 5)
    assert p.feed(PACK) == [Frame.from_bytes(PACK)]


def _with_header_at(k: int, board: int = 1, length: int = 8) -> bytes:
    """A valid board-1 0x95 frame whose payload holds ``A5 <board> 90 <length>`` at frame byte ``k``."""
    payload = bytearray([1, 0, 0, 0, 0, 0, 0, 0])
    header = [0xA5, board, 0x90, length]
    for i, b in enumerate(header):
        if 4 <= k + i < 12:
            payload[k + i - 4] = b
    return encode_frame(1, 0x95, bytes(payload))


def test_a_frame_holding_a_reply_header_waits_for_the_next_bytes_or_flush() -> None:
    held = _with_header_at(5)
    p, events = _parser()
    assert p.feed(held) == [] and p.pending == 13  # the inner reply might be the real one
    assert p.flush() == [Frame.from_bytes(held)] and p.pending == 0 and events == []
    p, _ = _parser()
    assert p.feed_with_offsets(held) == []  # not the end of input unless told so
    assert p.feed_with_offsets(b"", final=True) == [(0, Frame.from_bytes(held))]
    # the next bytes show the inner header is no reply (bad checksum): the outer frame stands
    p, _ = _parser()
    p.feed(held)
    assert p.feed(bytes(8))[0] == Frame.from_bytes(held)
    # not held: a header for another board, a wrong length byte, a start byte whose header is not all in
    for frame in (_with_header_at(5, board=2), _with_header_at(5, length=7), _with_header_at(10)):
        assert A5Parser(board=1).feed(frame) == [Frame.from_bytes(frame)]
    # with board=None any address makes a header
    p = A5Parser(board=None)
    assert p.feed(_with_header_at(5, board=2)) == [] and p.pending == 13


def test_a_good_checksum_loses_to_a_valid_reply_starting_inside_it() -> None:
    outer = _with_header_at(4)  # A5 01 95 08 | A5 01 90 08 00 00 00 00 | ck
    tail = bytes([5, 6, 7])
    inner12 = outer[4:] + tail
    inner = inner12 + bytes((checksum(inner12),))
    p, events = _parser()
    assert p.feed(outer + tail + inner[12:]) == [Frame.from_bytes(inner)]
    assert events == [(0, 1, "truncated"), (1, 3, "garbage")]
    assert p.frames_good == 1


def test_a_reply_one_byte_after_a_stray_start_byte_makes_the_candidate_truncated() -> None:
    # A5 | A5 01 08 08 ...: the candidate's length byte is right by chance (data id 0x08), its checksum
    # is not, and a whole header starts at its byte 1
    inner = encode_frame(1, 0x08, bytes(8))
    p, events = _parser()
    assert p.feed(b"\xa5" + inner) == [Frame.from_bytes(inner)]
    assert events == [(0, 1, "truncated")]


def test_the_inner_header_scan_covers_every_byte_and_skips_only_non_headers() -> None:
    # a frame from address 0xA5 (board=None: captures) holds a header at byte 1: held
    p = A5Parser(board=None)
    assert p.feed(encode_frame(0xA5, 0x01, bytes([8, 0, 0, 0, 0, 0, 0, 0]))) == [] and p.pending == 13
    # a header for another board at byte 4 does not end the scan: the one at byte 8 holds the frame
    frame = encode_frame(1, 0x95, bytes([0xA5, 2, 0x90, 8, 0xA5, 1, 0x90, 8]))
    p = A5Parser(board=1)
    assert p.feed(frame) == [] and p.pending == 13
    assert p.flush() == [Frame.from_bytes(frame)]
    # a header whose length byte is the frame's last byte (start byte at 9): held as well
    body = bytearray(encode_frame(1, 0x95, bytes([1, 0, 0, 0, 0, 0xA5, 1, 0]))[:12])
    body[11] = (8 - checksum(bytes(body[:11]))) & 0xFF  # makes the checksum byte 0x08
    frame = bytes(body) + bytes((checksum(bytes(body)),))
    assert frame[12] == 8
    p = A5Parser(board=1)
    assert p.feed(frame) == [] and p.flush() == [Frame.from_bytes(frame)]


def test_one_garbage_byte_before_a_start_byte_is_garbage_whatever_follows() -> None:
    inner = encode_frame(1, 0x08, bytes(8))  # its data id doubles as a length byte one place early
    p, events = _parser()
    assert p.feed(b"\x00" + inner) == [Frame.from_bytes(inner)]
    assert events == [(0, 1, "garbage")]


def test_an_empty_payload_is_all_filler() -> None:
    assert encode_frame(1, 0x90) == encode_frame(1, 0x90, bytes(8))
