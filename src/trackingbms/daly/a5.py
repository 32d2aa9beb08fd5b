"""A5 protocol (legacy Daly "Smart BMS"): fixed 13-byte frames with an 8-bit sum checksum.

Sans-I/O: pure functions and a stream parser over bytes; no sockets, no clocks. See
reference/daly-protocol.md §1–§3.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

START = 0xA5
FRAME_LEN = 13
DATA_LEN = 8

#: host addresses: 0x40 = PC / RS485 (board n → 0x40 + n - 1), 0x80 = UART / Bluetooth app
HOST_RS485 = 0x40
HOST_UART = 0x80

#: bits on the wire per byte (8N1: start + 8 data + stop)
BITS_PER_BYTE = 10


class DalyError(Exception):
    """Base of the errors raised by the sans-I/O Daly codecs."""


class FrameError(DalyError):
    """Bytes that are not a valid A5 frame (or a parser fed something that is not bytes)."""

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


def checksum(data: bytes) -> int:
    """Low byte of the sum of all bytes given (for a frame: bytes 0–11)."""
    return sum(data) & 0xFF


def encode_frame(address: int, data_id: int, payload: bytes = b"", *, filler: int = 0x00) -> bytes:
    """Build one 13-byte A5 frame; ``payload`` is padded with ``filler`` to 8 bytes."""
    if len(payload) > DATA_LEN:
        raise ValueError(f"A5 payload is at most {DATA_LEN} bytes, got {len(payload)}")
    if not (0 <= address <= 0xFF and 0 <= data_id <= 0xFF and 0 <= filler <= 0xFF):
        raise ValueError("address, data id and filler must be single bytes")
    body = bytes((START, address, data_id, DATA_LEN)) + payload + bytes((filler,)) * (DATA_LEN - len(payload))
    return body + bytes((checksum(body),))


def host_address(board: int = 1, *, base: int = HOST_RS485) -> int:
    """Host address for a board on a shared RS485 bus: 0x40 + board - 1 (the reply carries the board)."""
    if not 1 <= board <= 16:
        raise ValueError(f"board number must be 1–16, got {board}")
    return base + board - 1


def encode_request(
    data_id: int, *, address: int = HOST_RS485, payload: bytes = b"", filler: int = 0x00
) -> bytes:
    """A host → BMS request. Reads carry no data: the 8 bytes are ``filler`` (0x00, or 0xAA which some
    units sync on better, reference §1)."""
    return encode_frame(address, data_id, payload, filler=filler)


def frame_time_s(baud: int, frames: int = 1) -> float:
    """Wire time of ``frames`` 13-byte frames at ``baud`` (8N1): 13.5 ms per frame at 9600."""
    return frames * FRAME_LEN * BITS_PER_BYTE / baud


def is_host_address(address: int) -> bool:
    """Addresses hosts send from (0x20 GPRS, 0x40–0x4F PC/RS485 boards, 0x80–0x8F app/UART)."""
    return address == 0x20 or 0x40 <= address <= 0x4F or 0x80 <= address <= 0x8F


@dataclass(frozen=True, slots=True)
class Frame:
    """One checked 13-byte A5 frame."""

    address: int
    data_id: int
    payload: bytes

    @property
    def frame_no(self) -> int:
        """Byte 0 of the payload: the 1-based frame number of multi-frame replies."""
        return self.payload[0]

    def to_bytes(self) -> bytes:
        return encode_frame(self.address, self.data_id, self.payload)

    @classmethod
    def from_bytes(cls, raw: bytes, *, offset: int = 0) -> Frame:
        """Check and split exactly one frame; :class:`FrameError` names the offset and the reason."""
        if len(raw) != FRAME_LEN:
            raise FrameError(f"an A5 frame is {FRAME_LEN} bytes, got {len(raw)}", offset=offset)
        if raw[0] != START:
            raise FrameError(f"frame must start with 0xA5, got 0x{raw[0]:02X}", offset=offset)
        if raw[3] != DATA_LEN:
            raise FrameError(f"length byte must be 0x08, got 0x{raw[3]:02X}", offset=offset + 3)
        want = checksum(raw[:12])
        if raw[12] != want:
            raise FrameError(f"bad checksum 0x{raw[12]:02X} (expected 0x{want:02X})", offset=offset + 12)
        return cls(raw[1], raw[2], bytes(raw[4:12]))


#: drop reasons counted by :class:`A5Parser`
DROP_REASONS = ("garbage", "bad_checksum", "truncated", "echo", "wrong_address")


class A5Parser:
    """Stream parser: feed it arbitrary chunks, get back the valid frames addressed from ``board``.

    Resynchronises on ``A5 <addr> <id> 08`` plus a good checksum, so it recovers after line noise,
    frames that lost bytes mid-burst (the next reply follows in the same buffer), bad checksums and
    echoes of our own request (a reply's address byte is the board number, a request's is a host
    address). ``board=None`` accepts any address (for decoding captures). Never raises on content:
    what it drops is counted by reason in :attr:`drops` (events) and :attr:`garbage_bytes`.
    """

    def __init__(
        self, *, board: int | None = 1, on_drop: Callable[[int, int, str], None] | None = None
    ) -> None:
        self.board = board
        #: called with (stream offset, byte count, reason) for everything dropped
        self.on_drop = on_drop
        self._buf = bytearray()
        self._consumed = 0  # stream offset of _buf[0], for error messages
        self.drops: Counter[str] = Counter(dict.fromkeys(DROP_REASONS, 0))
        self.garbage_bytes = 0
        self.frames_good = 0

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)

    @property
    def offset(self) -> int:
        """Stream offset of the first byte not yet consumed."""
        return self._consumed

    def reset(self) -> None:
        """Forget buffered bytes (before a new request); the counters stay."""
        if self._buf:
            self._drop(len(self._buf), "truncated")

    def _drop(self, n: int, reason: str) -> None:
        if self.on_drop is not None:
            self.on_drop(self._consumed, n, reason)
        del self._buf[:n]
        self._consumed += n
        self.drops[reason] += 1
        if reason == "garbage":
            self.garbage_bytes += n

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add bytes, return the frames completed. A frame that contains a whole reply header is held
        back until the next bytes show which reading is right (rare: a cut frame, or a payload that
        contains ``A5 <board> <id> 08``); call :meth:`flush` when the line goes quiet."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise FrameError(f"parser needs bytes, got {type(data).__name__}")
        self._buf += data
        return self._extract()

    def feed_with_offsets(self, data: bytes, *, final: bool = False) -> list[tuple[int, Frame]]:
        """Like :meth:`feed` but each frame comes with its stream offset; ``final`` = end of input."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise FrameError(f"parser needs bytes, got {type(data).__name__}")
        self._buf += data
        return self._extract(with_offsets=True, final=final)  # type: ignore[return-value]

    def flush(self) -> list[Frame]:
        """The line went quiet: settle frames held back while waiting for the next bytes (see
        :meth:`feed`). Incomplete trailing bytes stay pending."""
        return self._extract(final=True)

    def _inner_reply(self, buf: bytearray, final: bool) -> int:
        """For the frame at the start of ``buf``: 1 if a valid reply starts inside it, 0 if none does,
        -1 if a whole reply header (A5, board, id, 08) sits inside it but its frame is not complete yet
        (rare for a real frame: its payload would have to contain such a header)."""
        undecided = False
        for k in range(1, FRAME_LEN):
            if buf[k] != START:
                continue
            if len(buf) <= k + 3:
                # the header is not all here yet: do not hold the frame for it (a checksum byte of
                # 0xA5 alone would stall 1 frame in 256); a cut frame matching by chance stays possible
                continue
            if buf[k + 3] != DATA_LEN or (self.board is not None and buf[k + 1] != self.board):
                continue
            if len(buf) < k + FRAME_LEN:
                undecided = True
                continue
            nxt = buf[k : k + FRAME_LEN]
            if nxt[12] == checksum(nxt[:12]):
                return 1
        return -1 if undecided and not final else 0

    def _extract(self, with_offsets: bool = False, final: bool = False) -> list:
        out: list = []
        buf = self._buf
        while buf:
            start = buf.find(START)
            if start < 0:
                self._drop(len(buf), "garbage")
                break
            if start > 0:
                self._drop(start, "garbage")
                continue
            if len(buf) >= 4 and buf[3] != DATA_LEN:
                self._drop(1, "garbage")  # a stray 0xA5 inside noise or data
                continue
            if len(buf) < FRAME_LEN:
                break  # wait for the rest
            raw = bytes(buf[:FRAME_LEN])
            if raw[12] != checksum(raw[:12]):
                # a frame header inside this candidate means bytes were lost and the next reply began
                self._drop(1, "truncated" if _inner_header(raw) else "bad_checksum")
                continue
            frame = Frame(raw[1], raw[2], raw[4:12])
            if self.board is not None and frame.address != self.board:
                if is_host_address(frame.address):
                    self._drop(FRAME_LEN, "echo")
                else:
                    # not a frame we expect: it may be noise that happens to check out, so give up
                    # only its first byte and keep looking inside it
                    self._drop(1, "wrong_address")
                continue
            # A good checksum, yet a valid reply starts inside: a truncated frame whose 8-bit sum
            # matched by chance (1 in 256) with the start of the next reply. Trust the inner one.
            inner = self._inner_reply(buf, final)
            if inner < 0:
                break  # decide when the next bytes are in (or at flush(), when the line is quiet)
            if inner:
                self._drop(1, "truncated")
                continue
            offset = self._consumed
            del buf[:FRAME_LEN]
            self._consumed += FRAME_LEN
            self.frames_good += 1
            out.append((offset, frame) if with_offsets else frame)
        return out


def _inner_header(raw: bytes) -> bool:
    for i in range(1, FRAME_LEN - 3):
        if raw[i] == START and raw[i + 3] == DATA_LEN:
            return True
    return False
