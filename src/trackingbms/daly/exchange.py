"""One exchange with a BMS (a request, its reply, its retries), sans-I/O, in the style of h11's
``Connection``: the caller asks :meth:`Exchange.next_event` what to do, moves the bytes and keeps time.

    ex = A5Exchange(CommandPoll(0x90), stats=stats)
    while True:
        ev = ex.next_event(now())
        if isinstance(ev, Send):   link.reset_input(); link.write(ev.data)
        elif isinstance(ev, Wait): ex.receive(link.read(256, ev.timeout_s), now())   # b"" = quiet line
        elif isinstance(ev, Done): return ev.value
        else:                      raise ev.failure       # Failed: why (no reply / corrupt / refused)

The async client (:mod:`trackingbms.bms`), the CAN and BLE links, the demo's history filler and the tests
drive the same objects; none of them re-implements the timing or the retry rules. A frame-oriented link
(CAN) uses :meth:`Exchange.receive_frame` instead of :meth:`Exchange.receive`; ``Send.frame_id`` then
carries the arbitration id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from trackingbms.daly.a5 import A5Parser, frame_time_s
from trackingbms.daly.frozen import Frozen, frozen_dataclass
from trackingbms.daly.poll import CommandPoll
from trackingbms.daly.records import DecodeError

FailureKind = Literal["no_reply", "corrupt", "refused"]


class Counters(Protocol):
    """What an exchange counts (the client's link statistics satisfy it)."""

    frames_good: int
    frames_bad: int
    retries: int
    timeouts: int


@dataclass
class ExchangeCounters:
    frames_good: int = 0
    frames_bad: int = 0
    retries: int = 0
    timeouts: int = 0


@frozen_dataclass
class Failure(Frozen):
    """Why an exchange failed: ``no_reply`` (silence or only our echo), ``corrupt`` (something came back,
    never intact), ``refused`` (answered, but not what a write asked for). ``key`` names the command in
    ``Reading.errors`` (``"0x95"``, ``"0x0000+62"``)."""

    kind: FailureKind
    message: str
    key: str
    data_id: int | None = None


@frozen_dataclass
class Send(Frozen):
    data: bytes
    #: the CAN arbitration id for frame links; None on byte links
    frame_id: int | None = None


@frozen_dataclass
class Wait(Frozen):
    """Read for at most ``timeout_s``; hand over what came (``b""`` if nothing did)."""

    timeout_s: float


@frozen_dataclass
class Done(Frozen):
    value: Any


@frozen_dataclass
class Failed(Frozen):
    failure: Failure


Event = Send | Wait | Done | Failed


class Exchange(Protocol):
    key: str

    def next_event(self, now: float) -> Event: ...

    def receive(self, data: bytes, now: float) -> None: ...


@frozen_dataclass
class Timing(Frozen):
    """Wire timing of one link: baud (for wire times) and how long the BMS may take to start answering."""

    baud: int = 9600
    turnaround_s: float = 0.2
    retries: int = 2


def ranges_text(numbers: list[int]) -> str:
    """[1, 2, 3, 5] → "1–3, 5"."""
    out: list[str] = []
    for n in numbers:
        if out and out[-1].split("–")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('–')[0]}–{n}"
        else:
            out.append(str(n))
    return ", ".join(out)


class A5Exchange:
    """One A5 command with its retries. Waits for the request and the expected reply frames at the
    link's baud plus the turnaround; a burst ends when the line has been quiet for a few frame times.
    A retry re-sends at once and keeps the frames already received (only the missing ones are needed)."""

    def __init__(
        self,
        poll: CommandPoll,
        *,
        parser: A5Parser,
        timing: Timing = Timing(),
        stats: Counters | None = None,
    ) -> None:
        self.poll = poll
        self.parser = parser
        self.timing = timing
        self.stats: Counters = stats if stats is not None else ExchangeCounters()
        self.key = f"0x{poll.data_id:02X}"
        self._state: Literal["send", "wait", "over"] = "send"
        self._result: Event | None = None
        self._any_reply = False
        self._bad_total = 0
        self._echoes0 = parser.drops["echo"]

    # ---- timing
    @property
    def frame_s(self) -> float:
        return frame_time_s(self.timing.baud)

    @property
    def gap_s(self) -> float:
        """Quiet time that ends a burst: a few frame times (frames of a burst follow back to back)."""
        return max(3 * self.frame_s, 0.03)

    def first_reply_timeout_s(self) -> float:
        return 2 * self.frame_s + self.timing.turnaround_s

    # ---- events
    def next_event(self, now: float) -> Event:
        if self._result is not None:
            return self._result
        if self._state == "send":
            return self._start(now)
        poll = self.poll
        if poll.complete and not poll.extra_frames_possible:
            return self._end_attempt(now, timed_out=False)
        if poll.burst_over and not poll.complete:
            return self._end_attempt(now, timed_out=False)  # the BMS is done sending: re-ask at once
        if self._started:
            timeout = min(self.gap_s, self._hard_deadline - now)
            if timeout <= 0:
                return self._end_attempt(now, timed_out=not poll.complete)
        else:
            timeout = self._deadline - now
            if timeout <= 0:
                return self._end_attempt(now, timed_out=True)
        return Wait(timeout)

    def _start(self, now: float) -> Event:
        poll, parser = self.poll, self.parser
        if poll.attempts:
            self.stats.retries += 1
        parser.reset()
        self._bad0 = parser.drops["bad_checksum"] + parser.drops["truncated"]
        self._garbage0 = parser.garbage_bytes + parser.drops["wrong_address"]
        request = poll.start_attempt()
        self._deadline = now + self.first_reply_timeout_s()
        # a line that never goes quiet (noise) still ends the attempt once the whole reply had time
        self._hard_deadline = now + self.timing.turnaround_s + 1.5 * poll.expected_wire_s(self.timing.baud)
        self._hard_deadline += self.gap_s
        self._started = False
        self._fed = False
        self._bad = 0
        self._state = "wait"
        return Send(request)

    def receive(self, data: bytes, now: float) -> None:
        if self._state != "wait":
            return
        poll, parser = self.poll, self.parser
        if not data and parser.pending:
            held = parser.flush()  # quiet line: settle a frame held back by the parser
            for f in held:
                if poll.feed(f):
                    self.stats.frames_good += 1
                    self._fed = True
            if held:
                self._started = True
                return
        if not data:
            if self._started and parser.pending and not poll.complete:
                # the line went quiet inside a frame: it lost bytes (a corrupt frame, not silence)
                self._bad += 1
                poll.note_bad()
                self.stats.frames_bad += 1
                self._close_attempt(timed_out=False)
            else:
                self._close_attempt(timed_out=not poll.complete)
            return
        for f in parser.feed(data):
            if poll.feed(f):
                self.stats.frames_good += 1
                self._fed = True
        new_bad = parser.drops["bad_checksum"] + parser.drops["truncated"] - self._bad0 - self._bad
        if new_bad:
            self._bad += new_bad
            poll.note_bad(new_bad)
            self.stats.frames_bad += new_bad
        if self._fed or self._bad:
            self._started = True
        elif parser.garbage_bytes + parser.drops["wrong_address"] > self._garbage0:
            self._started = True  # noise counts as "answers, but corrupt"

    def _end_attempt(self, now: float, *, timed_out: bool) -> Event:
        self._close_attempt(timed_out=timed_out)
        return self.next_event(now)

    def _close_attempt(self, *, timed_out: bool) -> None:
        """The attempt is over: the result is in, or a retry is due (state "send"), or it failed."""
        poll, parser = self.poll, self.parser
        if timed_out:
            self.stats.timeouts += 1
        self._any_reply |= (
            self._started
            or self._fed
            or parser.garbage_bytes + parser.drops["wrong_address"] > self._garbage0
        )
        self._bad_total += self._bad
        if poll.complete:
            self._state = "over"
            try:
                self._result = Done(poll.record())
            except DecodeError as exc:
                self._result = Failed(
                    Failure("corrupt", f"0x{poll.data_id:02X}: {exc}", self.key, poll.data_id)
                )
        elif poll.attempts <= self.timing.retries:
            self._state = "send"
        else:
            self._state = "over"
            self._result = Failed(self._failure())

    def _failure(self) -> Failure:
        poll, tries = self.poll, self.poll.attempts
        if not self._any_reply:
            ms = round(self.first_reply_timeout_s() * 1000 * tries)
            plural = "s" if tries != 1 else ""
            alt = 0x80 if poll.address < 0x80 else 0x40
            msg = (
                f"no reply from BMS at address 0x{poll.address:02X} within {ms} ms "
                f"(asleep? wrong address? try --address 0x{alt:02X}) "
                f"[command 0x{poll.data_id:02X}, board {poll.board}, {tries} attempt{plural}]"
            )
            if self.parser.drops["echo"] > self._echoes0:
                msg += "; only the echo of the request came back (BMS falling asleep? echoing adapter?)"
            return Failure("no_reply", msg, self.key, poll.data_id)
        if poll.multi and poll.frames_needed is not None:
            msg = (
                f"0x{poll.data_id:02X}: frame(s) {ranges_text(poll.missing_frames)} of {poll.frames_needed} "
                f"never arrived intact after {tries} attempts ({self._bad_total} corrupt frames)"
            )
        else:
            msg = (
                f"corrupt reply to 0x{poll.data_id:02X} after {tries} attempts ({self._bad_total} bad frames)"
            )
        return Failure("corrupt", msg, self.key, poll.data_id)


def run_offline(ex: Exchange, reply: Any, now: float = 0.0) -> Event:
    """Drive an exchange against a function ``reply(request_bytes) -> bytes`` with no real clock (the demo's
    history filler, tests): what the far end sends arrives at once, then the line is quiet."""
    pending = b""
    for _ in range(1000):
        ev = ex.next_event(now)
        if isinstance(ev, Send):
            pending = reply(ev.data)
        elif isinstance(ev, Wait):
            if ev.timeout_s <= 0:
                continue
            ex.receive(pending, now)
            if not pending:
                now += ev.timeout_s
            pending = b""
        else:
            return ev
    raise RuntimeError("exchange did not finish")  # a bug in an exchange, not a BMS condition
