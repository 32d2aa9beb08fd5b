"""Daly's Modbus-shaped framing (D2 and 0x81 families), sans-I/O: CRC, requests, a reply stream parser and
the exchange (one request, its reply, its retries). Reference §5.3 and §6.

Hand-written instead of pymodbus on purpose: these boards only *look* like Modbus RTU. D2 answers from
slave address 0xD2 (outside the legal 1–247 range), 0x81 boards are asked at 0x80 + board and answer from
0x50 + board, and function 16 requests carry no byte-count field. Checked against pymodbus 3.16: its
transaction manager rejects a reply whose device id is not the request's ("request uses device id=129 but
received 81"), so every 0x81 reply is dropped, and its WriteMultipleRegistersRequest always encodes a byte
count, which Daly boards do not expect. Working around both means subclassing its framer and PDUs and still
using its client's I/O, which our sans-I/O exchange replaces; the framing itself is 100 lines.

Frames: read ``A 03 start count CRC`` → ``A' 03 n <n bytes> CRC``; write single ``A 06 reg value CRC`` →
echo; write multiple ``A 10 start count <2·count bytes> CRC`` (no byte count) → ``A' 10 start count CRC``;
exception ``A' (fn|0x80) code CRC``. CRC-16/MODBUS, low byte first on the wire.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from trackingbms.daly.a5 import BITS_PER_BYTE
from trackingbms.daly.exchange import (
    Counters,
    Done,
    Event,
    ExchangeCounters,
    Failed,
    Failure,
    Send,
    Timing,
    Wait,
)

READ = 0x03
WRITE_SINGLE = 0x06
WRITE_MULTIPLE = 0x10
FUNCTIONS = (READ, WRITE_SINGLE, WRITE_MULTIPLE)
#: the longest read reply a Daly board sends (0x81: 0x00–0x5C and more; reply byte count is one byte)
MAX_READ_REGISTERS = 125

DROP_REASONS = ("garbage", "bad_crc", "truncated", "other_address", "exception")


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_crc(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


def crc_ok(frame: bytes | bytearray) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def _check_reg(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{name} must be 0–0xFFFF, got {value}")


def encode_read(address: int, start: int, count: int) -> bytes:
    _check_reg("start register", start)
    if not 1 <= count <= MAX_READ_REGISTERS:
        raise ValueError(f"register count must be 1–{MAX_READ_REGISTERS}, got {count}")
    return with_crc(bytes((address, READ)) + start.to_bytes(2, "big") + count.to_bytes(2, "big"))


def encode_write(address: int, register: int, value: int) -> bytes:
    """Function 6, one register; the board echoes the frame (or stays silent on an unknown register)."""
    _check_reg("register", register)
    _check_reg("value", value)
    return with_crc(bytes((address, WRITE_SINGLE)) + register.to_bytes(2, "big") + value.to_bytes(2, "big"))


def encode_write_multiple(address: int, start: int, values: Iterable[int]) -> bytes:
    """Function 16 as Daly frames it: no byte-count field (non-standard, reference §5.3)."""
    vals = list(values)
    _check_reg("start register", start)
    for v in vals:
        _check_reg("value", v)
    body = bytes((address, WRITE_MULTIPLE)) + start.to_bytes(2, "big") + len(vals).to_bytes(2, "big")
    return with_crc(body + b"".join(v.to_bytes(2, "big") for v in vals))


def wire_time_s(baud: int, n_bytes: int) -> float:
    return n_bytes * BITS_PER_BYTE / baud


@dataclass(frozen=True, slots=True)
class ModbusFrame:
    """One checked frame. ``registers`` for a read reply; ``register``/``value`` (start/count for
    function 16) for write replies and requests; ``exception`` for an exception reply."""

    address: int
    function: int
    registers: tuple[int, ...] = ()
    register: int | None = None
    value: int | None = None
    exception: int | None = None
    is_request: bool = False
    raw: bytes = b""

    @property
    def byte_count(self) -> int:
        return 2 * len(self.registers)


def _reply_length(buf: bytearray) -> int | None:
    """Length of the reply frame starting at buf[0] (None: not a reply header, or not enough bytes yet
    to tell: returns 0 then)."""
    fn = buf[1]
    if fn == READ:
        if len(buf) < 3:
            return 0
        n = buf[2]
        if n == 0 or n % 2:
            return None
        return 5 + n
    if fn in (WRITE_SINGLE, WRITE_MULTIPLE):
        return 8
    if fn in (READ | 0x80, WRITE_SINGLE | 0x80, WRITE_MULTIPLE | 0x80):
        return 5
    return None


def parse_reply(raw: bytes) -> ModbusFrame:
    fn = raw[1]
    if fn == READ:
        n = raw[2]
        regs = tuple(int.from_bytes(raw[3 + 2 * i : 5 + 2 * i], "big") for i in range(n // 2))
        return ModbusFrame(raw[0], fn, registers=regs, raw=raw)
    if fn in (WRITE_SINGLE, WRITE_MULTIPLE):
        reg = int.from_bytes(raw[2:4], "big")
        value = int.from_bytes(raw[4:6], "big")
        return ModbusFrame(raw[0], fn, register=reg, value=value, raw=raw)
    return ModbusFrame(raw[0], fn & 0x7F, exception=raw[2], raw=raw)


def parse_request(raw: bytes) -> ModbusFrame | None:
    """A host request (read, write single, Daly's write multiple), checked; None if ``raw`` is not one."""
    if len(raw) < 8 or not crc_ok(raw):
        return None
    fn = raw[1]
    reg = int.from_bytes(raw[2:4], "big")
    value = int.from_bytes(raw[4:6], "big")
    if fn in (READ, WRITE_SINGLE) and len(raw) == 8:
        return ModbusFrame(raw[0], fn, register=reg, value=value, is_request=True, raw=raw)
    if fn == WRITE_MULTIPLE and len(raw) == 8 + 2 * value:
        regs = tuple(int.from_bytes(raw[6 + 2 * i : 8 + 2 * i], "big") for i in range(value))
        return ModbusFrame(raw[0], fn, registers=regs, register=reg, value=value, is_request=True, raw=raw)
    return None


def request_length(buf: bytes | bytearray) -> int | None:
    """Length of the request starting at buf[0]; 0 = need more bytes; None = not a request header."""
    if len(buf) < 2:
        return 0
    fn = buf[1]
    if fn in (READ, WRITE_SINGLE):
        return 8
    if fn == WRITE_MULTIPLE:
        if len(buf) < 6:
            return 0
        count = int.from_bytes(buf[4:6], "big")
        return 8 + 2 * count if count <= MAX_READ_REGISTERS else None
    return None


class ReplyParser:
    """Stream parser for replies from one address (``address=None``: any, for decoding captures).

    Resynchronises byte by byte: a candidate is an address byte, a known function and (for reads) an
    even byte count; it is kept only when its CRC checks. A candidate waiting for bytes that never come
    (a cut reply, or garbage that looked like a long header) is settled by :meth:`flush` when the line
    goes quiet. Several boards on one bus: replies from other addresses are skipped whole when they check
    out (``other_address``). Never raises on content; drops are counted by reason in :attr:`drops`.
    """

    def __init__(self, address: int | None = None, *, addresses: Iterable[int] | None = None) -> None:
        self.addresses = frozenset(addresses) if addresses is not None else None
        self.address = address
        self._buf = bytearray()
        self.drops: Counter[str] = Counter(dict.fromkeys(DROP_REASONS, 0))
        self.garbage_bytes = 0
        self.frames_good = 0

    @property
    def pending(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        if self._buf:
            self._drop(len(self._buf), "truncated")

    def _drop(self, n: int, reason: str) -> None:
        del self._buf[:n]
        self.drops[reason] += 1
        if reason == "garbage":
            self.garbage_bytes += n

    def _is_start(self, b: int) -> bool:
        if self.address is not None:
            return b == self.address or (self.addresses is not None and b in self.addresses)
        if self.addresses is not None:
            return b in self.addresses
        return True

    def feed(self, data: bytes | bytearray | memoryview) -> list[ModbusFrame]:
        self._buf += data
        return self._extract(final=False)

    def flush(self) -> list[ModbusFrame]:
        """The line is quiet: a candidate still waiting for bytes is not a frame; look past it."""
        return self._extract(final=True)

    def _extract(self, *, final: bool) -> list[ModbusFrame]:
        out: list[ModbusFrame] = []
        buf = self._buf
        while buf:
            if not self._is_start(buf[0]):
                k = 1
                while k < len(buf) and not self._is_start(buf[k]):
                    k += 1
                self._drop(k, "garbage")
                continue
            if len(buf) < 2:
                if final:
                    self._drop(1, "truncated")
                break
            length = _reply_length(buf)
            if length is None:
                self._drop(1, "garbage")
                continue
            if length == 0 or len(buf) < length:
                if final:
                    self._drop(1, "truncated")
                    continue
                break
            raw = bytes(buf[:length])
            if not crc_ok(raw):
                self._drop(1, "bad_crc")
                continue
            frame = parse_reply(raw)
            if self.address is not None and frame.address != self.address:
                self._drop(length, "other_address")
                continue
            del buf[:length]
            self.frames_good += 1
            out.append(frame)
        return out


@dataclass(frozen=True)
class ModbusRequest:
    """What to ask: a read of ``count`` registers from ``start``, or a write of ``value`` to ``start``."""

    kind: Literal["read", "write"]
    start: int
    count: int = 1
    value: int = 0

    @property
    def key(self) -> str:
        return f"0x{self.start:04X}+{self.count}" if self.kind == "read" else f"write 0x{self.start:04X}"

    def encode(self, address: int) -> bytes:
        if self.kind == "read":
            return encode_read(address, self.start, self.count)
        return encode_write(address, self.start, self.value)

    def reply_bytes(self) -> int:
        return 5 + 2 * self.count if self.kind == "read" else 8


class ModbusExchange:
    """One Modbus-shaped request and its reply, with retries (sans-I/O, see :mod:`.exchange`).

    Done value: the register values (read) or the echoed value (write). A read reply of the wrong size,
    an exception reply or a write echo of another register / value count as corrupt; silence (or only
    frames of other boards) is ``no_reply``. The reply may arrive in pieces (BLE notifications): they are
    reassembled by byte count and the CRC is checked.
    """

    def __init__(
        self,
        request: ModbusRequest,
        *,
        request_address: int,
        parser: ReplyParser,
        timing: Timing = Timing(),
        stats: Counters | None = None,
        family: str = "D2",
    ) -> None:
        self.request = request
        self.request_address = request_address
        self.parser = parser
        self.timing = timing
        self.stats: Counters = stats if stats is not None else ExchangeCounters()
        self.family = family
        self.key = request.key
        self._frame = request.encode(request_address)
        self._attempts = 0
        self._state: Literal["send", "wait", "over"] = "send"
        self._result: Event | None = None
        self._answered = False
        self._bad_total = 0
        self._why_bad = ""

    def timeout_s(self) -> float:
        baud = self.timing.baud
        wire = wire_time_s(baud, len(self._frame)) + wire_time_s(baud, self.request.reply_bytes())
        return wire + self.timing.turnaround_s

    @property
    def gap_s(self) -> float:
        return max(wire_time_s(self.timing.baud, 40), 0.03)

    def next_event(self, now: float) -> Event:
        if self._result is not None:
            return self._result
        if self._state == "send":
            if self._attempts:
                self.stats.retries += 1
            self._attempts += 1
            self.parser.reset()
            self._deadline = now + self.timeout_s()
            self._last_rx: float | None = None
            self._bad0 = self.parser.drops["bad_crc"] + self.parser.drops["truncated"]
            self._state = "wait"
            return Send(self._frame)
        if self._last_rx is not None:
            # bytes came: a reply in progress ends when the line is quiet for a gap (or at the deadline)
            timeout = min(self.gap_s, max(self._deadline, self._last_rx + self.gap_s) - now)
        else:
            timeout = self._deadline - now
        if timeout <= 0:
            self._close_attempt(timed_out=True)
            return self.next_event(now)
        return Wait(timeout)

    def receive(self, data: bytes, now: float) -> None:
        if self._state != "wait":
            return
        parser = self.parser
        frames = parser.feed(data) if data else parser.flush()
        if data:
            self._last_rx = now
        for frame in frames:
            self._offer(frame)
            if self._state != "wait":
                return
        bad = parser.drops["bad_crc"] + parser.drops["truncated"] - self._bad0
        if bad:
            self._answered = True
            self.stats.frames_bad += bad
            self._bad_total += bad
            self._bad0 += bad
            self._why_bad = self._why_bad or "bad CRC or cut reply"
        if not data:
            # the line went quiet with no complete reply
            self._close_attempt(timed_out=self._last_rx is None)

    def _offer(self, frame: ModbusFrame) -> None:
        req = self.request
        self._answered = True
        if frame.exception is not None:
            self.stats.frames_good += 1
            self._why_bad = f"exception reply, code {frame.exception}"
            self._close_attempt(timed_out=False, final=True)
            return
        if req.kind == "read":
            ok = frame.function == READ and len(frame.registers) == req.count
            value: object = list(frame.registers)
        else:
            ok = frame.function == WRITE_SINGLE and frame.register == req.start and frame.value == req.value
            value = frame.value
        if not ok:
            self.stats.frames_bad += 1
            self._bad_total += 1
            self._why_bad = f"unexpected reply (function {frame.function}, {len(frame.registers)} registers)"
            return
        self.stats.frames_good += 1
        self._state = "over"
        self._result = Done(value)

    def _close_attempt(self, *, timed_out: bool, final: bool = False) -> None:
        if self._state == "over":
            return
        if timed_out:
            self.stats.timeouts += 1
        if not final and self._attempts <= self.timing.retries:
            self._state = "send"
            return
        self._state = "over"
        self._result = Failed(self._failure())

    def _failure(self) -> Failure:
        tries = self._attempts
        where = f"{self.family} board at 0x{self.request_address:02X}"
        what = f"{self.request.kind} 0x{self.request.start:04X}"
        if self.request.kind == "read":
            what += f" ×{self.request.count}"
        if not self._answered:
            ms = round(self.timeout_s() * 1000 * tries)
            msg = (
                f"no reply from the {where} within {ms} ms [{what}, {tries} attempt{'s' * (tries != 1)}] "
                "(asleep? wrong family or board number? an unknown register is answered with silence)"
            )
            return Failure("no_reply", msg, self.key, self.request.start)
        msg = (
            f"corrupt reply from the {where} [{what}] after {tries} attempts: "
            f"{self._why_bad or 'incomplete'} ({self._bad_total} bad frames)"
        )
        return Failure("corrupt", msg, self.key, self.request.start)
