"""Properties of the D2 / 0x81 reply parser and exchange (hypothesis): garbage, cut replies, bad CRCs,
several boards' replies interleaved on one bus."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from trackingbms.daly import p81
from trackingbms.daly.exchange import Done, Failed, Timing, run_offline
from trackingbms.daly.modbus import ModbusExchange, ModbusRequest, ReplyParser, crc16, crc_ok

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=150)

registers = st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=60)
boards = st.integers(1, 16)


def read_reply(address: int, values: list[int]) -> bytes:
    body = bytes((address, 3, 2 * len(values))) + b"".join(v.to_bytes(2, "big") for v in values)
    return body + crc16(body).to_bytes(2, "little")


def parse_all(parser: ReplyParser, data: bytes, chunk: int) -> list:
    out = []
    for i in range(0, len(data), chunk):
        out += parser.feed(data[i : i + chunk])
    return out + parser.flush()


@SETTINGS
@given(st.lists(st.binary(max_size=50), max_size=20), st.sampled_from([None, 0xD2, 0x51, 0x5F]))
def test_garbage_never_raises_and_only_checked_frames_come_out(
    chunks: list[bytes], address: int | None
) -> None:
    parser = ReplyParser(address)
    frames = []
    for c in chunks:
        frames += parser.feed(c)
    frames += parser.flush()
    for f in frames:
        assert crc_ok(f.raw)
        assert address is None or f.address == address
    assert parser.pending == 0  # a quiet line settles everything


@SETTINGS
@given(
    garbage=st.binary(max_size=40).filter(lambda g: 0xD2 not in g),
    values=registers,
    chunk=st.integers(1, 64),
)
def test_a_reply_after_garbage_is_recovered_whatever_the_chunking(
    garbage: bytes, values: list[int], chunk: int
) -> None:
    reply = read_reply(0xD2, values)
    frames = parse_all(ReplyParser(0xD2), garbage + reply, chunk)
    assert [list(f.registers) for f in frames] == [values]


@SETTINGS
@given(values=registers, nxt=registers, cut=st.integers(1, 200), chunk=st.integers(1, 64))
def test_a_cut_reply_does_not_hide_the_next_one(
    values: list[int], nxt: list[int], cut: int, chunk: int
) -> None:
    first, second = read_reply(0xD2, values), read_reply(0xD2, nxt)
    cut = min(cut, len(first) - 1)
    # not a cut reply at all when the bytes it lacks are the next reply's first ones (e.g. a last CRC byte of
    # 0xD2): the line then carries the whole first reply, and the next one really has lost its address
    assume(not second.startswith(first[cut:]))
    frames = parse_all(ReplyParser(0xD2), first[:cut] + second, chunk)
    assert list(frames[-1].registers) == nxt
    assert all(crc_ok(f.raw) for f in frames)


@SETTINGS
@given(values=registers, flip=st.integers(1, 255), at=st.integers(0, 300))
def test_a_bad_crc_is_never_a_frame(values: list[int], flip: int, at: int) -> None:
    raw = bytearray(read_reply(0x51, values))
    at = 3 + at % (len(raw) - 3)  # anywhere past the header: data or CRC
    raw[at] ^= flip
    parser = ReplyParser(0x51)
    frames = parse_all(parser, bytes(raw), 7)
    assert all(list(f.registers) != values for f in frames)
    assert parser.drops["bad_crc"] + parser.drops["truncated"] + parser.drops["garbage"] >= 1


@SETTINGS
@given(st.lists(st.tuples(boards, registers), min_size=1, max_size=12), boards, st.integers(1, 64))
def test_several_boards_interleaved_each_parser_keeps_its_own(
    replies: list[tuple[int, list[int]]], mine: int, chunk: int
) -> None:
    stream = b"".join(read_reply(p81.reply_address(b), v) for b, v in replies)
    parser = ReplyParser(p81.reply_address(mine), addresses=p81.REPLY_ADDRESSES)
    frames = parse_all(parser, stream, chunk)
    assert [list(f.registers) for f in frames] == [v for b, v in replies if b == mine]
    assert parser.drops["other_address"] == sum(1 for b, _ in replies if b != mine)


@SETTINGS
@given(
    others=st.lists(st.tuples(boards, registers), max_size=5),
    mine=boards,
    values=st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4),
    corrupt_first=st.booleans(),
)
def test_exchange_gets_its_boards_reply_through_other_traffic_and_a_retry(
    others: list[tuple[int, list[int]]], mine: int, values: list[int], corrupt_first: bool
) -> None:
    others = [(b, v) for b, v in others if b != mine]
    attempts = []

    def bus(request: bytes) -> bytes:
        attempts.append(request)
        noise = b"".join(read_reply(p81.reply_address(b), v) for b, v in others)
        reply = bytearray(read_reply(p81.reply_address(mine), values))
        if corrupt_first and len(attempts) == 1:
            reply[-1] ^= 0xFF
        return noise + bytes(reply)

    ex = ModbusExchange(
        ModbusRequest("read", 0x00, 4),
        request_address=p81.request_address(mine),
        parser=ReplyParser(p81.reply_address(mine), addresses=p81.REPLY_ADDRESSES),
        timing=Timing(retries=1),
    )
    ev = run_offline(ex, bus)
    assert isinstance(ev, Done) and ev.value == values
    assert len(attempts) == 1 + corrupt_first
    assert attempts[0] == bytes.fromhex(f"{0x80 + mine:02x}03000000 04") + attempts[0][-2:]


def test_exchange_silence_and_corruption_are_told_apart() -> None:
    def silent(_: bytes) -> bytes:
        return b""

    def corrupt(_: bytes) -> bytes:
        raw = bytearray(read_reply(0xD2, [1, 2]))
        raw[-1] ^= 1
        return bytes(raw)

    for reply, kind in ((silent, "no_reply"), (corrupt, "corrupt")):
        ex = ModbusExchange(
            ModbusRequest("read", 0, 2),
            request_address=0xD2,
            parser=ReplyParser(0xD2),
            timing=Timing(retries=2),
        )
        ev = run_offline(ex, reply)
        assert isinstance(ev, Failed) and ev.failure.kind == kind, ev
        assert "3 attempts" in ev.failure.message
