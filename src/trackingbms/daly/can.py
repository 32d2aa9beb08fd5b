"""Daly over CAN, sans-I/O: legacy A5-on-CAN ids and frames, the H/K/M/S broadcast, candump text.

Legacy Daly CAN (reference §4.1): 250 kbit/s, 29-bit ids ``0x18 <data id> <destination> <source>``.
A request goes from the host (0x40) to the board (``0x18900140``), the reply comes back with the two
address bytes swapped (``0x18904001``). The 8 data bytes are exactly the A5 payload: no start byte,
no checksum (the CAN controller checks its own CRC, so a corrupt frame never reaches us: it is lost,
not garbled). Every frame of a multi-frame reply (0x95, 0x96) uses the same id, the frame number is
payload byte 0. So a CAN reply converts 1:1 into an A5 :class:`~trackingbms.daly.a5.Frame`, and the
A5 poll logic (:class:`~trackingbms.daly.poll.CommandPoll`) and decoders serve CAN unchanged.

H/K/M/S broadcast (reference §4.2, **experimental**: the ids come from one community component and
are unverified on hardware): the host sends a keep-alive ``0x0400FF80`` (8 zero bytes) every 2 s and the
BMS broadcasts its data; message ids sit in the upper 16 bits of the CAN id, the board number in the
low byte. :class:`HkmsAssembler` collects one full set of broadcasts into a reading.

candump text (``18904001#0214000075450378``, also ``can0  18904001   [8]  02 14 ...`` and the log form
``(1700000000.000000) can0 18904001#...``) is parsed by :func:`parse_candump` for ``trackingbms decode``.
Hand-written: python-can's ``CanutilsLogReader`` reads only the ``candump -L`` log form, from a file;
users paste the screen form (``can0  18904001   [8]  02 14 ...``) as often, and a sans-I/O codec reads text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trackingbms.daly.a5 import DATA_LEN, HOST_RS485, A5Parser, DalyError, Frame
from trackingbms.daly.exchange import (
    A5Exchange,
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
from trackingbms.daly.poll import CommandPoll
from trackingbms.daly.records import CURRENT_OFFSET, TEMP_OFFSET

BITRATE = 250_000
PRIORITY = 0x18
#: bits of an extended data frame with 8 data bytes before bit stuffing (SOF, 29-bit id, SRR, IDE,
#: RTR, r1, r0, DLC, 64 data bits, CRC 15 + delimiter, ACK 2, EOF 7, intermission 3)
EXTENDED_FRAME_BITS = 131
#: worst-case stuff bits on such a frame (one per 4 bits of the 98 stuffed bits after SOF)
MAX_STUFF_BITS = 24


class CanError(DalyError):
    """A CAN id or candump line that is not what Daly sends."""


@dataclass(frozen=True, slots=True)
class CanFrame:
    """One CAN frame as the wire carries it: a 29-bit id and up to 8 data bytes."""

    arbitration_id: int
    data: bytes
    extended: bool = True

    def candump(self) -> str:
        """``18904001#0214...`` (the form ``cansend`` takes and ``candump -L`` prints)."""
        width = 8 if self.extended else 3
        return f"{self.arbitration_id:0{width}X}#{self.data.hex().upper()}"


def frame_time_s(bitrate: int = BITRATE, frames: int = 1, *, worst_case: bool = False) -> float:
    """Wire time of ``frames`` extended 8-byte frames: 0.52 ms each at 250 kbit/s (0.62 ms worst case)."""
    bits = EXTENDED_FRAME_BITS + (MAX_STUFF_BITS if worst_case else 0)
    return frames * bits / bitrate


# ---------------------------------------------------------------------------------------- legacy ids


def legacy_id(data_id: int, destination: int, source: int) -> int:
    """``0x18 <data id> <destination> <source>``."""
    for name, v in (("data id", data_id), ("destination", destination), ("source", source)):
        if not 0 <= v <= 0xFF:
            raise ValueError(f"{name} must be one byte, got {v}")
    return PRIORITY << 24 | data_id << 16 | destination << 8 | source


def split_legacy_id(arbitration_id: int) -> tuple[int, int, int] | None:
    """(data id, destination, source) of a legacy Daly id; None for any other id."""
    if arbitration_id >> 24 != PRIORITY or arbitration_id > 0x1FFFFFFF:
        return None
    return (arbitration_id >> 16) & 0xFF, (arbitration_id >> 8) & 0xFF, arbitration_id & 0xFF


def encode_request(
    data_id: int, *, board: int = 1, host: int = HOST_RS485, payload: bytes = b"", filler: int = 0x00
) -> CanFrame:
    """Host → board ``board``: id ``0x18 <id> <board> <host>``, the 8 A5 data bytes (padded)."""
    if not 1 <= board <= 0xFF:
        raise ValueError(f"board number must be 1–255, got {board}")
    if len(payload) > DATA_LEN:
        raise ValueError(f"a Daly CAN payload is at most {DATA_LEN} bytes, got {len(payload)}")
    data = bytes(payload) + bytes((filler,)) * (DATA_LEN - len(payload))
    return CanFrame(legacy_id(data_id, board, host), data)


def encode_reply(data_id: int, payload: bytes, *, board: int = 1, host: int = HOST_RS485) -> CanFrame:
    """Board → host: id ``0x18 <id> <host> <board>`` (the simulator's side)."""
    if len(payload) != DATA_LEN:
        raise ValueError(f"a Daly CAN reply carries {DATA_LEN} bytes, got {len(payload)}")
    return CanFrame(legacy_id(data_id, host, board), bytes(payload))


def to_a5(frame: CanFrame, *, host: int | None = None) -> Frame | None:
    """A legacy reply as the A5 frame it stands for (address = the board, as on UART); None for frames
    that are not a Daly reply (another id scheme, not 8 bytes, or addressed to another host)."""
    parts = split_legacy_id(frame.arbitration_id) if frame.extended else None
    if parts is None or len(frame.data) != DATA_LEN:
        return None
    data_id, destination, source = parts
    if host is not None and destination != host:
        return None
    return Frame(source, data_id, bytes(frame.data))


def request_of(frame: CanFrame) -> tuple[int, int, int, bytes] | None:
    """A legacy request as (data id, board, host, payload); None if it is not one (the simulator)."""
    parts = split_legacy_id(frame.arbitration_id) if frame.extended else None
    if parts is None or len(frame.data) != DATA_LEN:
        return None
    data_id, board, host = parts
    return data_id, board, host, bytes(frame.data)


# ------------------------------------------------------------------------------ H/K/M/S broadcast

#: keep-alive the host sends every :data:`KEEPALIVE_INTERVAL_S` so the BMS keeps broadcasting
KEEPALIVE_ID = 0x0400FF80
KEEPALIVE_INTERVAL_S = 2.0
#: message ids (upper 16 bits of the CAN id); experimental, see the module docstring
HKMS_CELL_VOLTS = 0x0400
HKMS_CELL_TEMPS = 0x0401
HKMS_INFO_0 = 0x0402  # voltage, current, SOC
HKMS_INFO_1 = 0x0403  # power, energy, MOS / board temperature
HKMS_CELL_STATS = 0x0404
HKMS_TEMP_STATS = 0x0405
HKMS_STATS_0 = 0x0406  # MOSFETs
HKMS_STATS_2 = 0x0408  # counts, remaining capacity, cycles
HKMS_BALANCE = 0x040A  # state, balance current, bitmap of cells 1–32
#: fault pages (0x0409, 0x040E: alarm levels) are not decoded: their layout is not documented well
#: enough to name faults, so readings of this family carry no ``faults``
HKMS_IDS = (
    HKMS_CELL_VOLTS, HKMS_CELL_TEMPS, HKMS_INFO_0, HKMS_INFO_1, HKMS_CELL_STATS, HKMS_TEMP_STATS,
    HKMS_STATS_0, 0x0407, HKMS_STATS_2, 0x0409, HKMS_BALANCE, 0x040B, 0x040C, 0x040D, 0x040E,
)  # fmt: skip
#: the destination byte of a broadcast (everyone)
HKMS_BROADCAST = 0xFF


def keepalive_frame() -> CanFrame:
    return CanFrame(KEEPALIVE_ID, bytes(DATA_LEN))


def hkms_id(message: int, board: int = 1) -> int:
    return message << 16 | HKMS_BROADCAST << 8 | board


def split_hkms_id(arbitration_id: int) -> tuple[int, int] | None:
    """(message id, board) of an H/K/M/S broadcast; None for the keep-alive or another scheme."""
    message, board = arbitration_id >> 16, arbitration_id & 0xFF
    if message not in HKMS_IDS or not 1 <= board <= 0x7F:
        return None
    return message, board


def hkms_current_a(raw: int) -> float:
    """H/K/M/S current: the D2 / 0x81 convention, raw above 30000 = charging (reference §2.1, Q7)."""
    return round((raw - CURRENT_OFFSET) / 10, 1) + 0.0


def _u16(b: bytes, i: int) -> int:
    return b[i] << 8 | b[i + 1]


@dataclass
class HkmsAssembler:
    """Collects the broadcasts of one board until a whole reading is in (sans-I/O).

    Feed every received frame; :attr:`complete` turns true once the pack values, the MOSFETs, the counts
    and every cell and temperature page have arrived. :meth:`fields` gives what arrived so far, under the
    Sample names; nothing is invented for a page that did not come.
    """

    board: int = 1
    invert_current: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    cell_pages: dict[int, list[int]] = field(default_factory=dict)
    temp_pages: dict[int, list[float]] = field(default_factory=dict)
    seen: set[int] = field(default_factory=set)
    cell_count: int | None = None
    sensor_count: int | None = None
    frames_good: int = 0
    frames_other: int = 0

    def reset(self) -> None:
        self.values.clear()
        self.cell_pages.clear()
        self.temp_pages.clear()
        self.seen.clear()

    def feed(self, frame: CanFrame) -> bool:
        """True when the frame was one of this board's broadcasts."""
        parts = split_hkms_id(frame.arbitration_id) if frame.extended else None
        if parts is None or parts[1] != self.board or len(frame.data) != DATA_LEN:
            self.frames_other += 1
            return False
        message, _ = parts
        d = frame.data
        v = self.values
        if message == HKMS_INFO_0:
            amps = hkms_current_a(_u16(d, 2))
            v.update(voltage_v=_u16(d, 0) / 10, current_a=-amps if self.invert_current else amps)
            v["soc_pct"] = _u16(d, 4) / 10
        elif message == HKMS_STATS_0:
            v.update(charge_mos=bool(d[0]), discharge_mos=bool(d[1]))
        elif message == HKMS_STATS_2:
            self.cell_count, self.sensor_count = d[0], d[1]
            v.update(remaining_ah=int.from_bytes(d[2:6], "big") / 1000, cycles=_u16(d, 6))
        elif message == HKMS_BALANCE:
            bits = int.from_bytes(d[4:8], "little")  # byte 4 bit 0 = cell 1 (LSB first)
            v["balancing"] = [i + 1 for i in range(32) if bits >> i & 1]
        elif message == HKMS_CELL_VOLTS and 1 <= d[0] <= 16:
            self.cell_pages[d[0]] = [_u16(d, 1), _u16(d, 3), _u16(d, 5)]
        elif message == HKMS_CELL_TEMPS and 1 <= d[0] <= 3:
            self.temp_pages[d[0]] = [float(x - TEMP_OFFSET) for x in d[1:8]]
        self.seen.add(message)
        self.frames_good += 1
        return True

    @property
    def missing(self) -> list[str]:
        """What a complete reading still lacks, by name."""
        out = [
            name
            for name, msg in (
                ("pack", HKMS_INFO_0),
                ("mos", HKMS_STATS_0),
                ("status", HKMS_STATS_2),
                ("balancing", HKMS_BALANCE),
            )
            if msg not in self.seen
        ]
        if self.cell_count is not None:
            pages = math.ceil(self.cell_count / 3)
            if any(p not in self.cell_pages for p in range(1, pages + 1)):
                out.append("cells")
        if self.sensor_count is not None:
            pages = math.ceil(self.sensor_count / 7)
            if any(p not in self.temp_pages for p in range(1, pages + 1)):
                out.append("temps")
        return out

    @property
    def complete(self) -> bool:
        return not self.missing

    def fields(self) -> dict[str, Any]:
        out = dict(self.values)
        if self.cell_count is not None and not self.missing.count("cells"):
            cells = [mv for p in sorted(self.cell_pages) for mv in self.cell_pages[p]]
            out["cells_mv"] = cells[: self.cell_count]
        if self.sensor_count is not None and not self.missing.count("temps"):
            temps = [t for p in sorted(self.temp_pages) for t in self.temp_pages[p]]
            out["temps_c"] = temps[: self.sensor_count]
        return out


def hkms_frames(
    *,
    board: int,
    voltage_v: float,
    current_a: float,
    soc_pct: float,
    cells_mv: list[int],
    temps_c: list[float],
    charge_mos: bool,
    discharge_mos: bool,
    remaining_ah: float,
    cycles: int,
    balancing: list[int] | None = None,
) -> list[CanFrame]:
    """One broadcast round of board ``board`` (the simulator's side; layouts as :class:`HkmsAssembler`)."""

    def u16(x: float) -> bytes:
        return max(0, min(0xFFFF, round(x))).to_bytes(2, "big")

    def t8(c: float) -> int:
        return max(0, min(255, round(c) + TEMP_OFFSET))

    out: list[CanFrame] = []
    for page in range(math.ceil(len(cells_mv) / 3)):
        part = [*cells_mv[3 * page : 3 * page + 3], 0, 0, 0][:3]
        out.append(
            CanFrame(hkms_id(HKMS_CELL_VOLTS, board), bytes((page + 1,)) + b"".join(map(u16, part)) + b"\0")
        )
    for page in range(math.ceil(len(temps_c) / 7)):
        part = [t8(t) for t in temps_c[7 * page : 7 * page + 7]]
        out.append(
            CanFrame(hkms_id(HKMS_CELL_TEMPS, board), bytes((page + 1, *part, *[0] * (7 - len(part)))))
        )
    out.append(
        CanFrame(
            hkms_id(HKMS_INFO_0, board),
            u16(voltage_v * 10) + u16(CURRENT_OFFSET + current_a * 10) + u16(soc_pct * 10) + b"\0\0",
        )
    )
    out.append(
        CanFrame(hkms_id(HKMS_STATS_0, board), bytes((int(charge_mos), int(discharge_mos), 0, 0, 0, 0, 0, 0)))
    )
    out.append(
        CanFrame(
            hkms_id(HKMS_STATS_2, board),
            bytes((len(cells_mv), len(temps_c)))
            + max(0, round(remaining_ah * 1000)).to_bytes(4, "big")
            + u16(cycles),
        )
    )
    bits = 0
    for cell in balancing or []:
        bits |= 1 << (cell - 1)
    out.append(
        CanFrame(
            hkms_id(HKMS_BALANCE, board),
            bytes((2 if bits else 0, 0)) + u16(CURRENT_OFFSET) + (bits & 0xFFFFFFFF).to_bytes(4, "little"),
        )
    )
    return out


# ----------------------------------------------------------------------------------------- candump

_CANDUMP_COMPACT = re.compile(
    r"^(?P<id>[0-9A-Fa-f]{3}|[0-9A-Fa-f]{8})#(?P<data>(?:[0-9A-Fa-f]{2}[.]?){0,8})$"
)
_CANDUMP_SPACED = re.compile(
    r"^(?P<id>[0-9A-Fa-f]{3}|[0-9A-Fa-f]{8})\s+\[(?P<dlc>\d)\]\s*(?P<data>(?:[0-9A-Fa-f]{2}\s*){0,8})$"
)


def looks_like_candump(text: str) -> bool:
    """True when ``text`` holds at least one ``ID#DATA`` or ``ID [n] ..`` CAN frame."""
    return any(_parse_line(line) is not None for line in text.splitlines() if line.strip())


def _parse_line(line: str) -> CanFrame | None:
    tokens = line.split()
    # strip a leading "(timestamp)" and an interface name such as can0 / vcan0 / slcan0
    if tokens and tokens[0].startswith("("):
        tokens = tokens[1:]
    if tokens and not re.fullmatch(r"[0-9A-Fa-f]{3}|[0-9A-Fa-f]{8}|[0-9A-Fa-f]{3,8}#.*", tokens[0]):
        tokens = tokens[1:]
    rest = " ".join(tokens)
    m = _CANDUMP_COMPACT.match(rest.replace(" ", "")) if "#" in rest else _CANDUMP_SPACED.match(rest)
    if m is None:
        return None
    ident = m.group("id")
    data = bytes.fromhex(re.sub(r"[\s.]", "", m.group("data")))
    if "dlc" in m.groupdict() and m.groupdict().get("dlc") is not None and int(m.group("dlc")) != len(data):
        return None
    return CanFrame(int(ident, 16), data, extended=len(ident) == 8)


def parse_candump(text: str) -> list[CanFrame]:
    """Every frame in candump text, one per line (or several ``ID#DATA`` tokens on one line).

    Raises :class:`CanError` naming the first line that is neither empty nor a frame.
    """
    out: list[CanFrame] = []
    for n, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        frame = _parse_line(line)
        if frame is None and "#" in line:
            # several compact frames on one line ("18904001#.. 18914001#..")
            parts = [_parse_line(tok) for tok in line.split() if "#" in tok]
            if parts and all(p is not None for p in parts):
                out.extend(p for p in parts if p is not None)
                continue
        if frame is None:
            raise CanError(f"line {n}: not a CAN frame in candump form (ID#DATA): {line[:60]!r}")
        out.append(frame)
    return out


def describe(frame: CanFrame) -> dict[str, Any]:
    """What a frame is, for ``trackingbms decode`` (the decoded values are added by the caller)."""
    out: dict[str, Any] = {"can_id": f"0x{frame.arbitration_id:08X}"}
    if frame.arbitration_id == KEEPALIVE_ID:
        out["kind"] = "hkms-keepalive"
        return out
    legacy = split_legacy_id(frame.arbitration_id) if frame.extended else None
    if legacy is not None:
        data_id, destination, source = legacy
        out["data_id"] = f"0x{data_id:02X}"
        if 0x40 <= source <= 0x4F or 0x80 <= source <= 0x8F:
            out.update(direction="request", host_address=f"0x{source:02X}", board=destination)
        else:
            out.update(direction="response", board=source)
        return out
    hk = split_hkms_id(frame.arbitration_id) if frame.extended else None
    if hk is not None:
        out.update(kind="hkms-broadcast", message=f"0x{hk[0]:04X}", board=hk[1], experimental=True)
    return out


def hkms_fields(frame: CanFrame) -> dict[str, Any]:
    """Decoded values of one H/K/M/S broadcast frame (what it alone carries)."""
    parts = split_hkms_id(frame.arbitration_id)
    if parts is None:
        return {}
    asm = HkmsAssembler(board=parts[1])
    asm.feed(frame)
    out = dict(asm.values)
    if parts[0] == HKMS_CELL_VOLTS:
        out.update(page=frame.data[0], cells_mv=asm.cell_pages.get(frame.data[0], []))
    elif parts[0] == HKMS_CELL_TEMPS:
        out.update(page=frame.data[0], temps_c=asm.temp_pages.get(frame.data[0], []))
    elif parts[0] == HKMS_STATS_2:
        out.update(cell_count=asm.cell_count, temp_sensor_count=asm.sensor_count)
    return out


__all__ = [
    "BITRATE",
    "KEEPALIVE_ID",
    "A5CanExchange",
    "CanError",
    "CanFrame",
    "HkmsAssembler",
    "HkmsListen",
    "describe",
    "encode_reply",
    "encode_request",
    "frame_time_s",
    "hkms_fields",
    "hkms_frames",
    "keepalive_frame",
    "legacy_id",
    "looks_like_candump",
    "parse_candump",
    "request_of",
    "split_legacy_id",
    "to_a5",
]


# ---------------------------------------------------------------------------------------- exchanges


class A5CanExchange(A5Exchange):
    """One A5 command over legacy Daly CAN, sans-I/O (drive it with ``receive_frame``).

    The A5 exchange's rules hold (retries keep the frames already in; a burst ends when the last frame
    number is in or the bus has been quiet for a few frame times); only the framing differs: the request
    is one CAN frame, each reply frame is converted to the A5 frame it stands for. A corrupt frame never
    reaches us on CAN (the controller drops it on its CRC): it simply goes missing.
    """

    def __init__(
        self,
        poll: CommandPoll,
        *,
        host: int = HOST_RS485,
        bitrate: int = BITRATE,
        timing: Timing = Timing(),
        stats: Counters | None = None,
        bus_name: str = "the CAN bus",
    ) -> None:
        super().__init__(poll, parser=A5Parser(board=poll.board), timing=timing, stats=stats)
        self.host = host
        self.bitrate = bitrate
        self.bus_name = bus_name

    @property
    def frame_s(self) -> float:
        return frame_time_s(self.bitrate)

    def next_event(self, now: float) -> Event:
        ev = super().next_event(now)
        if isinstance(ev, Send) and ev.frame_id is None:
            req = encode_request(
                self.poll.data_id, board=self.poll.board, host=self.host, payload=ev.data[4:12]
            )
            return Send(req.data, frame_id=req.arbitration_id)
        return ev

    def receive_frame(self, frame_id: int, data: bytes, now: float) -> None:
        if self._state != "wait":
            return
        a5 = to_a5(CanFrame(frame_id, bytes(data)), host=self.host)
        if a5 is not None and self.poll.feed(a5):
            self.stats.frames_good += 1
            self._fed = self._started = True

    def _failure(self) -> Failure:
        failure = super()._failure()
        if failure.kind != "no_reply":
            return failure
        poll, tries = self.poll, self.poll.attempts
        ms = round(self.first_reply_timeout_s() * 1000 * tries)
        msg = (
            f"no reply from board {poll.board} on {self.bus_name} within {ms} ms (asleep? wrong board "
            f"number? bus at {self.bitrate // 1000} kbit/s and terminated?) [command 0x{poll.data_id:02X}, "
            f"{tries} attempt{'s' if tries != 1 else ''}]"
        )
        return Failure("no_reply", msg, self.key, poll.data_id)


class HkmsListen:
    """One H/K/M/S reading, sans-I/O: send the keep-alive when it is due, then listen until a full round
    of broadcasts is in (Done with the fields), or ``listen_s`` passed (Done with what came and
    :attr:`missing`), or nothing came at all (Failed, no_reply)."""

    key = "broadcast"

    def __init__(
        self,
        assembler: HkmsAssembler,
        *,
        listen_s: float,
        keepalive_due: Callable[[float], bool],
        stats: Counters | None = None,
        bus_name: str = "the CAN bus",
    ) -> None:
        self.asm = assembler
        self.listen_s = listen_s
        self.keepalive_due = keepalive_due
        self.stats: Counters = stats if stats is not None else ExchangeCounters()
        self.bus_name = bus_name
        self._deadline: float | None = None
        self._result: Event | None = None

    def next_event(self, now: float) -> Event:
        if self._result is not None:
            return self._result
        if self._deadline is None:
            self._deadline = now + self.listen_s
        if self.keepalive_due(now):
            ka = keepalive_frame()
            return Send(ka.data, frame_id=ka.arbitration_id)
        if self.asm.complete and self.asm.seen:
            self._result = Done(self.asm.fields())
            return self._result
        remaining = self._deadline - now
        if remaining <= 0:
            if not self.asm.seen:
                self.stats.timeouts += 1
                msg = (
                    f"no broadcast from H/K/M/S board {self.asm.board} on {self.bus_name} within "
                    f"{self.listen_s:g} s of the keep-alive (wrong board number? an A5-CAN board? try "
                    "--family a5-can) [experimental family]"
                )
                self._result = Failed(Failure("no_reply", msg, self.key))
            else:
                self._result = Done(self.asm.fields())
            return self._result
        # wake up in time for the next keep-alive even if the bus stays quiet
        return Wait(min(remaining, KEEPALIVE_INTERVAL_S / 2))

    def receive(self, data: bytes, now: float) -> None:
        """A quiet bus (``b""``): nothing to do, the deadline decides."""

    def receive_frame(self, frame_id: int, data: bytes, now: float) -> None:
        if self._result is None and self.asm.feed(CanFrame(frame_id, bytes(data))):
            self.stats.frames_good += 1
