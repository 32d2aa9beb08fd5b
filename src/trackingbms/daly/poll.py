"""Sans-I/O poll logic for one A5 command: what to send, which frames to expect, when it is done.

Shared by the async client, the gateway and future CAN/BLE paths. The caller moves bytes and keeps
time; :class:`CommandPoll` only counts frames::

    poll = CommandPoll(0x95, address=0x40, board=1, cell_count=16)
    link.write(poll.request)
    for frame in parser.feed(chunk): poll.feed(frame)
    poll.note_bad(n)          # frames the parser dropped as corrupt since the request
    poll.complete             # every frame that carries data is in
    poll.burst_over           # the BMS has sent all it will: retry now if not complete
    poll.record()             # the decoded (possibly partial) record
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from trackingbms.daly.a5 import HOST_UART, Frame, encode_request, frame_time_s
from trackingbms.daly.frozen import Frozen, frozen_dataclass
from trackingbms.daly.records import (
    MULTI_FRAME,
    DecodeError,
    Record,
    assemble,
    decode_payload,
    frames_needed,
)


@frozen_dataclass
class Command(Frozen):
    name: str
    data_id: int
    description: str


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("pack", 0x90, "pack voltage, current, SOC"),
        Command("cell_range", 0x91, "highest / lowest cell voltage"),
        Command("temp_range", 0x92, "highest / lowest temperature"),
        Command("mos", 0x93, "state, MOSFETs, remaining capacity"),
        Command("status", 0x94, "cell / sensor counts, charger, load, cycles"),
        Command("cells", 0x95, "cell voltages"),
        Command("temps", 0x96, "temperatures"),
        Command("balancing", 0x97, "balancing cells"),
        Command("faults", 0x98, "faults and fault code"),
    )
}
#: snapshot order: status first, its counts size the multi-frame replies
SNAPSHOT_ORDER: tuple[str, ...] = (
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
COMMAND_BY_ID: dict[int, Command] = {c.data_id: c for c in COMMANDS.values()}

WRITE_DISCHARGE_MOS = 0xD9
WRITE_CHARGE_MOS = 0xDA
WRITE_SOC = 0x21
WRITE_RESET = 0x00


def mos_payload(on: bool) -> bytes:
    """0xD9 / 0xDA payload: byte 0 = 1 on, 0 off (the captures; dalybms.com's text says the reverse)."""
    return bytes((1 if on else 0,))


def soc_payload(soc_pct: float, when: datetime) -> bytes:
    """0x21 payload: YY MM DD hh mm ss (year − 2000), then SOC × 10 as u16."""
    if not 0 <= soc_pct <= 100:
        raise ValueError(f"SOC must be 0–100 %, got {soc_pct}")
    if not 2000 <= when.year <= 2255:
        raise ValueError(f"RTC year must be 2000–2255, got {when.year}")
    tenths = round(soc_pct * 10)
    return bytes(
        (when.year - 2000, when.month, when.day, when.hour, when.minute, when.second)
    ) + tenths.to_bytes(2, "big")


def frames_sent(data_id: int, *, address: int, count: int | None) -> int | None:
    """Frames a BMS sends for one request: with host 0x80 (UART / app) units send every frame of
    0x95 / 0x96, zero-filled (reference §2.1, Q5); with 0x40 only those that carry data."""
    need = frames_needed(data_id, count)
    if data_id in (0x95, 0x96) and HOST_UART <= address <= HOST_UART + 0x0F:
        return MULTI_FRAME[data_id][1]
    return need


class CommandPoll:
    """One request and the reply frames it collects; survives retries (frames from several attempts
    of the same request are merged: a retry only needs to bring the frames still missing)."""

    def __init__(
        self,
        data_id: int,
        *,
        address: int = 0x40,
        board: int = 1,
        payload: bytes = b"",
        filler: int = 0x00,
        cell_count: int | None = None,
        sensor_count: int | None = None,
        invert_current: bool = False,
    ) -> None:
        self.data_id = data_id
        self.address = address
        self.board = board
        self.cell_count = cell_count
        self.sensor_count = sensor_count
        self.invert_current = invert_current
        self.request = encode_request(data_id, address=address, payload=payload, filler=filler)
        self.multi = data_id in MULTI_FRAME
        count = cell_count if data_id == 0x95 else sensor_count if data_id == 0x96 else None
        self.count = count
        #: frames carrying data; None = unknown (multi-frame without a count: read until quiet)
        self.frames_needed = frames_needed(data_id, count)
        #: frames the BMS will send, including zero-filled extras
        self.frames_expected = frames_sent(data_id, address=address, count=count)
        self._frames: dict[int, Frame] = {}
        self.attempts = 0
        self._slots = 0  # frames of this attempt seen (good or corrupt)
        self._last_no = 0  # highest frame number seen in this attempt
        self.unexpected = 0  # valid frames of another data id (stale bursts)

    def start_attempt(self) -> bytes:
        """Begin (another) attempt; returns the request bytes to send."""
        self.attempts += 1
        self._slots = 0
        self._last_no = 0
        return self.request

    def feed(self, frame: Frame) -> bool:
        """Offer a frame from the parser; True when it belongs to this poll."""
        if frame.address != self.board or frame.data_id != self.data_id:
            self.unexpected += 1
            return False
        self._slots += 1
        key = frame.frame_no if self.multi else 1
        if self.multi and not 1 <= key <= MULTI_FRAME[self.data_id][1]:
            return False  # frame number 0 or beyond the maximum: not ours to invent a place for
        self._frames[key] = frame
        self._last_no = max(self._last_no, key)
        return True

    def feed_all(self, frames: Iterable[Frame]) -> None:
        for f in frames:
            self.feed(f)

    def note_bad(self, n: int = 1) -> None:
        """``n`` corrupt frames (bad checksum / truncated) arrived during this attempt."""
        self._slots += n

    @property
    def got_any(self) -> bool:
        return bool(self._frames)

    @property
    def missing_frames(self) -> list[int]:
        need = self.frames_needed
        if need is None:
            return [] if self._frames else [1]
        if not self.multi:
            return [] if self._frames else [1]
        return [n for n in range(1, need + 1) if n not in self._frames]

    @property
    def complete(self) -> bool:
        """All frames that carry data are in (for an unknown count: at least one frame; the caller
        then reads until the line is quiet)."""
        return not self.missing_frames

    @property
    def burst_over(self) -> bool:
        """The BMS has sent as many frames as it will for this attempt (good or corrupt)."""
        exp = self.frames_expected
        if exp is None:
            return False
        # a BMS sends a burst in frame order: once the last frame is in, nothing more is coming, even
        # if a damaged frame went unnoticed (bytes lost from its header look like line noise)
        return self._slots >= exp or (self.multi and self._last_no >= exp)

    @property
    def extra_frames_possible(self) -> bool:
        """Complete, but the BMS may still send zero-filled frames (host 0x80) or an unknown count."""
        if self.frames_expected is None:
            return True
        return self._slots < self.frames_expected

    def expected_wire_s(self, baud: int) -> float:
        """Wire time of the request plus the whole expected reply."""
        n = self.frames_expected if self.frames_expected is not None else MULTI_FRAME[self.data_id][1]
        return frame_time_s(baud, 1 + n)

    def record(self) -> Record:
        """The decoded reply. Multi-frame records list their missing frames; a single-frame command
        without its frame raises :class:`~trackingbms.daly.records.DecodeError`."""
        if self.multi:
            return assemble(self.data_id, self._frames.values(), self.count)
        if not self._frames:
            raise DecodeError(f"no reply frame for 0x{self.data_id:02X}")
        return decode_payload(
            self.data_id,
            self._frames[1].payload,
            invert_current=self.invert_current,
            cell_count=self.cell_count,
        )
