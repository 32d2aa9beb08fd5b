"""The Daly A5 client: a sans-I/O codec (:mod:`trackingbms.daly`) driven over a byte link.

    link = await open_link("/dev/ttyUSB0")
    bms = DalyBMS(link, address=0x40)
    reading = await bms.snapshot()          # trackingbms.model.Reading, partial with .errors
    cells = await bms.cells()               # per-command methods return typed records

Timing comes from the wire: each attempt waits for the request and the expected reply frames at the
configured baud plus a turnaround allowance, and gives up on a burst when the line has been quiet for
a few frame times. A retry re-sends at once (the parser resynchronises; no sleeping) and keeps the
frames already received, so a retry only has to bring the missing ones. Errors tell "nothing came
back" (:class:`BmsNoReply`) from "something came back, but corrupt" (:class:`BmsCorrupt`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import datetime

from trackingbms.daly.a5 import A5Parser, frame_time_s
from trackingbms.daly.poll import (
    COMMAND_BY_ID,
    COMMANDS,
    SNAPSHOT_ORDER,
    WRITE_CHARGE_MOS,
    WRITE_DISCHARGE_MOS,
    WRITE_RESET,
    WRITE_SOC,
    CommandPoll,
    mos_payload,
    soc_payload,
)
from trackingbms.daly.reading import to_reading
from trackingbms.daly.records import (
    Balancing,
    CellRange,
    CellVoltages,
    Faults,
    MosStatus,
    MultiFrame,
    PackStatus,
    Record,
    StatusInfo,
    Temperatures,
    TempRange,
    WriteAck,
)
from trackingbms.links import ByteLink, LinkError, open_link
from trackingbms.model import Reading, Source

log = logging.getLogger(__name__)


class BmsError(Exception):
    """A command to the BMS failed; ``data_id`` names it."""

    def __init__(self, message: str, *, data_id: int | None = None) -> None:
        super().__init__(message)
        self.data_id = data_id


class BmsNoReply(BmsError):
    """Nothing came back at all (or only the echo of our request): asleep, wrong address, wiring."""


class BmsCorrupt(BmsError):
    """The BMS answers, but the replies were corrupt or incomplete after every retry."""


class BmsWriteError(BmsError):
    """A write was answered but not confirmed (wrong echo)."""


@dataclass
class LinkStats:
    frames_good: int = 0
    frames_bad: int = 0
    retries: int = 0
    timeouts: int = 0
    last_error: str | None = None
    consecutive_failures: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class DalyBMS:
    """Async client for one A5-family Daly BMS on a byte link.

    ``address``: host address (0x40 PC/RS485, 0x80 UART/app); ``board``: the BMS board number on a
    shared RS485 bus (replies carry it; with ``address=0x40`` the request goes to 0x40 + board − 1).
    ``turnaround_s`` is how long the BMS may take to start answering (real units: 50–80 ms).
    """

    def __init__(
        self,
        link: ByteLink,
        *,
        address: int = 0x40,
        board: int = 1,
        invert_current: bool = False,
        source: Source = "a5-uart",
        baud: int = 9600,
        retries: int = 2,
        turnaround_s: float = 0.2,
        filler: int = 0x00,
    ) -> None:
        if not 1 <= board <= 16:
            raise ValueError(f"board number must be 1–16, got {board}")
        if address in (0x40, 0x80) and board > 1:
            address += board - 1  # reference §1: board n answers host 0x40 + n − 1
        self.link = link
        self.address = address
        self.board = board
        self.invert_current = invert_current
        self.source: Source = source
        self.baud = baud
        self.retries = retries
        self.turnaround_s = turnaround_s
        self.filler = filler
        self.stats = LinkStats()
        self.cell_count: int | None = None
        self.sensor_count: int | None = None
        self._parser = A5Parser(board=board)
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ timing

    @property
    def frame_s(self) -> float:
        return frame_time_s(self.baud)

    @property
    def gap_s(self) -> float:
        """Quiet time that ends a burst: a few frame times (frames of a burst follow back to back)."""
        return max(3 * self.frame_s, 0.03)

    def first_reply_timeout_s(self) -> float:
        """Request on the wire + turnaround + the first reply frame."""
        return 2 * self.frame_s + self.turnaround_s

    def _no_reply_message(self, data_id: int, attempts: int) -> str:
        ms = round(self.first_reply_timeout_s() * 1000 * attempts)
        alt = 0x80 if self.address < 0x80 else 0x40
        return (
            f"no reply from BMS at address 0x{self.address:02X} within {ms} ms "
            f"(asleep? wrong address? try --address 0x{alt:02X}) "
            f"[command 0x{data_id:02X}, board {self.board}, {attempts} attempt{'s' if attempts != 1 else ''}]"
        )

    # ------------------------------------------------------------------ core

    def _new_poll(self, data_id: int, payload: bytes = b"") -> CommandPoll:
        return CommandPoll(
            data_id,
            address=self.address,
            board=self.board,
            payload=payload,
            filler=self.filler if not payload else 0x00,
            cell_count=self.cell_count,
            sensor_count=self.sensor_count,
            invert_current=self.invert_current,
        )

    async def _attempt(self, poll: CommandPoll) -> tuple[bool, int]:
        """One request/response exchange. Returns (any reply bytes beyond echoes, corrupt frames)."""
        loop = asyncio.get_running_loop()
        parser = self._parser
        self.link.reset_input()
        parser.reset()
        bad0 = parser.drops["bad_checksum"] + parser.drops["truncated"]
        garbage0 = parser.garbage_bytes + parser.drops["wrong_address"]
        request = poll.start_attempt()
        await self.link.write(request)
        start = loop.time()
        deadline = start + self.first_reply_timeout_s()
        # even a line that never goes quiet (noise) ends the attempt once the whole expected reply
        # has had time to arrive, with room for a retransmission-free margin
        hard_deadline = start + self.turnaround_s + 1.5 * poll.expected_wire_s(self.baud) + self.gap_s
        started = False
        timed_out = False
        fed = False
        bad = 0
        while True:
            if poll.complete and not poll.extra_frames_possible:
                break
            if poll.burst_over and not poll.complete:
                break  # the BMS is done sending; re-ask at once
            now = loop.time()
            if started:
                # a burst in progress: a quiet line means it ended
                timeout = min(self.gap_s, hard_deadline - now)
                if timeout <= 0:
                    timed_out = not poll.complete
                    break
            else:
                timeout = deadline - now
                if timeout <= 0:
                    timed_out = True
                    break
            chunk = await self.link.read(256, timeout)
            if not chunk and parser.pending:
                held = parser.flush()  # quiet line: settle a frame held back by the parser
                for f in held:
                    if poll.feed(f):
                        self.stats.frames_good += 1
                        fed = True
                if held:
                    started = True
                    continue
            if not chunk:
                if started and parser.pending and not poll.complete:
                    # the line went quiet inside a frame: it lost bytes (a corrupt frame, not silence)
                    bad += 1
                    poll.note_bad()
                    self.stats.frames_bad += 1
                else:
                    timed_out = not poll.complete
                break
            frames = parser.feed(chunk)
            for f in frames:
                if poll.feed(f):
                    self.stats.frames_good += 1
                    fed = True
            new_bad = parser.drops["bad_checksum"] + parser.drops["truncated"] - bad0 - bad
            if new_bad:
                bad += new_bad
                poll.note_bad(new_bad)
                self.stats.frames_bad += new_bad
            if fed or bad:  # this attempt's reply (frames merged from earlier attempts do not count)
                started = True
            elif parser.garbage_bytes + parser.drops["wrong_address"] > garbage0:
                started = True  # noise counts as "answers, but corrupt"
        if timed_out:
            self.stats.timeouts += 1
            log.debug(
                "0x%02X attempt %d timed out after %.0f ms: started=%s got=%s missing=%s bad=%d pending=%d",
                poll.data_id,
                poll.attempts,
                (loop.time() - start) * 1000,
                started,
                poll.got_any,
                poll.missing_frames,
                bad,
                parser.pending,
            )
        got = started or fed or parser.garbage_bytes + parser.drops["wrong_address"] > garbage0
        return got, bad

    async def _run(self, poll: CommandPoll) -> Record:
        async with self._lock:
            any_reply = False
            bad_total = 0
            echoes0 = self._parser.drops["echo"]
            try:
                for attempt in range(self.retries + 1):
                    if attempt:
                        self.stats.retries += 1
                    got, bad = await self._attempt(poll)
                    any_reply |= got
                    bad_total += bad
                    if poll.complete:
                        self.stats.consecutive_failures = 0
                        return poll.record()
            except LinkError as exc:
                # the byte stream itself is gone: not an answer of the BMS; the caller reopens the link
                self._fail(str(exc))
                raise
            tries = poll.attempts
            if not any_reply:
                msg = self._no_reply_message(poll.data_id, tries)
                if self._parser.drops["echo"] > echoes0:
                    msg += "; only the echo of the request came back (BMS falling asleep? echoing adapter?)"
                self._fail(msg)
                raise BmsNoReply(msg, data_id=poll.data_id)
            if poll.multi and poll.frames_needed is not None:
                missing = _ranges(poll.missing_frames)
                msg = (
                    f"0x{poll.data_id:02X}: frame(s) {missing} of {poll.frames_needed} never arrived intact "
                    f"after {tries} attempts ({bad_total} corrupt frames)"
                )
            else:
                msg = f"corrupt reply to 0x{poll.data_id:02X} after {tries} attempts ({bad_total} bad frames)"
            self._fail(msg)
            raise BmsCorrupt(msg, data_id=poll.data_id)

    def _fail(self, msg: str) -> None:
        self.stats.last_error = msg
        self.stats.consecutive_failures += 1

    async def query(self, data_id: int, payload: bytes = b"") -> Record:
        """Send one command and return its decoded reply (any data id the codec knows)."""
        if data_id in (0x95, 0x96, 0x97) and self.cell_count is None:
            try:
                await self.status()
            except BmsError as exc:
                # without the counts from 0x94 the reply cannot be sized: say so under this command
                raise type(exc)(
                    f"needs the cell/sensor count from 0x94 first: {exc}", data_id=data_id
                ) from exc
        rec = await self._run(self._new_poll(data_id, payload))
        if isinstance(rec, StatusInfo):
            self.cell_count, self.sensor_count = rec.cell_count, rec.temp_sensor_count
        return rec

    # ------------------------------------------------------------------ reads

    async def pack(self) -> PackStatus:
        return await self.query(0x90)  # type: ignore[return-value]

    async def cell_range(self) -> CellRange:
        return await self.query(0x91)  # type: ignore[return-value]

    async def temp_range(self) -> TempRange:
        return await self.query(0x92)  # type: ignore[return-value]

    async def mos(self) -> MosStatus:
        return await self.query(0x93)  # type: ignore[return-value]

    async def status(self) -> StatusInfo:
        return await self.query(0x94)  # type: ignore[return-value]

    async def cells(self) -> CellVoltages:
        return await self.query(0x95)  # type: ignore[return-value]

    async def temps(self) -> Temperatures:
        return await self.query(0x96)  # type: ignore[return-value]

    async def balancing(self) -> Balancing:
        return await self.query(0x97)  # type: ignore[return-value]

    async def faults(self) -> Faults:
        return await self.query(0x98)  # type: ignore[return-value]

    async def info(self) -> dict[str, object]:
        """Identity and settings: rated capacity, board layout, battery info, serial, firmware and
        hardware versions, RTC and the alarm thresholds (0x50–0x63). What a unit does not answer is
        left out (many firmwares lack some of these undocumented reads); errors are under "errors"."""
        out: dict[str, object] = {}
        errors: dict[str, str] = {}
        info_ids = (0x50, 0x51, 0x52, 0x53, 0x57, 0x62, 0x63, 0x61, 0x59, 0x5A, 0x5B, 0x5C, 0x5D, 0x5E, 0x5F)
        for data_id in info_ids:
            try:
                out.update((await self.query(data_id)).fields())
            except BmsError as exc:
                errors[f"0x{data_id:02X}"] = str(exc)
        for key in ("frames", "missing_frames"):
            out.pop(key, None)
        if errors:
            out["errors"] = errors
        return out

    async def snapshot(self, commands: Collection[str] | None = None) -> Reading:
        """One reading from the named commands (None = all). A failed command leaves its fields absent
        and its reason in ``Reading.errors`` (``{"0x95": "..."}``). If the BMS does not answer at all,
        :class:`BmsNoReply` is raised instead of returning an empty reading."""
        names = list(SNAPSHOT_ORDER) if commands is None else [n for n in SNAPSHOT_ORDER if n in commands]
        unknown = set(commands or ()) - set(COMMANDS)
        if unknown:
            raise ValueError(f"unknown command(s) {sorted(unknown)}; known: {', '.join(COMMANDS)}")
        records: list[Record] = []
        errors: dict[str, str] = {}
        for name in names:
            cmd = COMMANDS[name]
            try:
                records.append(await self.query(cmd.data_id))
            except BmsNoReply as exc:
                if not records:
                    raise  # nothing answers: asleep / wrong address, not a partial reading
                errors[f"0x{cmd.data_id:02X}"] = str(exc)
            except BmsError as exc:
                errors[f"0x{cmd.data_id:02X}"] = str(exc)
        return to_reading(records, source=self.source, errors=errors or None)

    # ------------------------------------------------------------------ writes

    async def _write(self, data_id: int, payload: bytes) -> WriteAck:
        rec = await self._run(self._new_poll(data_id, payload))
        assert isinstance(rec, WriteAck)
        return rec

    async def _set_mos(self, data_id: int, on: bool) -> MosStatus:
        ack = await self._write(data_id, mos_payload(on))
        if ack.value != (1 if on else 0):
            name = "charge" if data_id == WRITE_CHARGE_MOS else "discharge"
            msg = f"BMS answered the {name} MOSFET write with {ack.value}, not {int(on)}: not switched"
            self._fail(msg)
            raise BmsWriteError(msg, data_id=data_id)
        return await self.mos()

    async def set_charge_mos(self, on: bool) -> MosStatus:
        """Switch the charge MOSFET (0xDA), check the echo, and return the MOSFET state read back."""
        return await self._set_mos(WRITE_CHARGE_MOS, on)

    async def set_discharge_mos(self, on: bool) -> MosStatus:
        """Switch the discharge MOSFET (0xD9), check the echo, and return the state read back."""
        return await self._set_mos(WRITE_DISCHARGE_MOS, on)

    async def set_soc(self, soc_pct: float, when: datetime | None = None) -> PackStatus:
        """Set the BMS's SOC (0x21, with its RTC set to ``when``, default now) and read it back."""
        when = when or datetime.now()
        await self._write(WRITE_SOC, soc_payload(soc_pct, when))
        return await self.pack()

    async def reset(self) -> bool:
        """Restart the BMS (0x00). The reply's shape is undocumented: True if one came, False if the
        BMS went quiet (as a restarting board may)."""
        try:
            await self._write(WRITE_RESET, b"")
        except BmsNoReply:
            return False
        self.cell_count = self.sensor_count = None
        return True


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 5] → "1–3, 5"."""
    out: list[str] = []
    for n in numbers:
        if out and out[-1].split("–")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('–')[0]}–{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


# re-exported so that the gateway reaches the BMS through this package only (design.md layers)
__all__ = [
    "COMMANDS",
    "COMMAND_BY_ID",
    "SNAPSHOT_ORDER",
    "BmsCorrupt",
    "BmsError",
    "BmsNoReply",
    "BmsWriteError",
    "DalyBMS",
    "LinkError",
    "LinkStats",
    "MultiFrame",
    "open_link",
]
