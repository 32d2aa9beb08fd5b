"""A simulated pack: battery model + A5 responder + the simulated clock + sleep. Still no I/O.

Simulated time is ``clock.now() + skipped``: the default clock runs at ``speed`` × real time, and
:meth:`SimulatedPack.advance` jumps ahead (tests simulate a day without sleeping). Physics is integrated
lazily, in fixed steps, whenever someone looks (a request, :meth:`truth`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from trackingbms.sim.battery import Battery
from trackingbms.sim.config import PackConfig, Quirks, SimConfigError
from trackingbms.sim.modbus_responder import ModbusRequestParser, ModbusResponder
from trackingbms.sim.responder import ECHO_DELAY_S, A5Responder, Emission, RequestParser


class Clock(Protocol):
    def now(self) -> float:
        """Simulated seconds since the start."""
        ...


class RealTimeClock:
    """Simulated time = real (monotonic) time since creation × speed."""

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed
        self._t0 = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.speed


class ManualClock:
    """A clock that only moves when told to (tests)."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._t = start_s

    def now(self) -> float:
        return self._t

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._t += seconds


class SimulatedPack:
    """One virtual Daly pack. See the package docstring for the public API."""

    def __init__(
        self, config: PackConfig | None = None, quirks: Quirks | None = None, *, clock: Clock | None = None
    ) -> None:
        self.config = config or PackConfig()
        self.quirks = quirks or Quirks()
        self.battery = Battery(self.config)
        self.clock: Clock = clock or RealTimeClock(self.config.speed)
        self._skipped_s = 0.0
        self.asleep = False
        self.responder: A5Responder | ModbusResponder
        if self.quirks.protocol == "a5":
            self.responder = A5Responder(
                self.battery, self.quirks, seed=self.config.seed, rtc=self.sim_datetime
            )
        else:
            self.responder = ModbusResponder(
                self.battery,
                self.quirks,
                protocol="d2" if self.quirks.protocol == "d2" else "p81",
                seed=self.config.seed,
                rtc=self.sim_datetime,
            )
        #: what happened on the wire, for tests and the truth channel
        self.stats = {"requests": 0, "replies": 0, "echoes": 0, "ignored": 0}
        #: replies per command ("0x90": n), and how many of those answered the same request as the reply
        #: just before (what a client's retry looks like): replies − repeats = readings the BMS gave out
        self.replies_by_id: dict[str, int] = {}
        self.repeats_by_id: dict[str, int] = {}
        self._last_answered: bytes | None = None

    @property
    def id(self) -> str:
        return self.config.pack_id

    @property
    def board(self) -> int:
        return self.quirks.board

    def now_s(self) -> float:
        return self.clock.now() + self._skipped_s

    def sim_datetime(self) -> datetime:
        return self.config.start + timedelta(seconds=self.battery.t_s)

    def sync(self) -> None:
        """Integrate the physics up to the clock's now (in whole steps)."""
        target = self.now_s()
        step = self.config.step_s
        battery = self.battery
        sleep_after = self.quirks.sleep_after_s
        while battery.t_s + step <= target + 1e-9:
            battery.step(step)
            if battery.quiet_s == 0.0:
                self.asleep = False  # a charger or load wakes it
            elif sleep_after is not None and battery.quiet_s >= sleep_after:
                self.asleep = True

    def advance(self, seconds: float) -> None:
        """Jump simulated time ahead by ``seconds`` (computed at once: a day takes about a second)."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._skipped_s += seconds
        self.sync()

    def wake(self) -> None:
        """Press the wake button."""
        self.asleep = False
        self.battery.quiet_s = 0.0

    def respond(self, request: bytes) -> list[Emission]:
        """One checked request (13-byte A5, or Modbus-shaped) → what to send back and when (sans-I/O)."""
        self.sync()
        if not self.responder.accepts(request):
            return []
        self.stats["requests"] += 1
        previous, self._last_answered = self._last_answered, None
        if self.asleep:
            if self.quirks.wake_on_request:
                self.wake()
            elif self.quirks.echo_when_asleep:
                self.stats["echoes"] += 1
                return [Emission(self.quirks.frame_wire_s() + ECHO_DELAY_S, request)]
            else:
                self.stats["ignored"] += 1
                return []
        out = self.responder.respond(request)
        self.stats["replies" if out else "ignored"] += 1
        if out:
            key = f"0x{request[2]:02X}"
            self.replies_by_id[key] = self.replies_by_id.get(key, 0) + 1
            if request == previous:
                self.repeats_by_id[key] = self.repeats_by_id.get(key, 0) + 1
            self._last_answered = request
        return out

    def truth(self) -> dict[str, object]:
        """Ground truth: true SOC, capacities, resistances, temperatures, per cell (JSON-ready)."""
        self.sync()
        out = self.battery.truth()
        out.update(
            id=self.id,
            board=self.board,
            time=self.sim_datetime().isoformat(),
            asleep=self.asleep,
            wire=dict(
                self.stats, replies_by_id=dict(self.replies_by_id), repeats_by_id=dict(self.repeats_by_id)
            ),
        )
        return out


class Bus:
    """Several packs on one shared line (RS485): each answers only its board's addresses."""

    def __init__(self, packs: Iterable[SimulatedPack]) -> None:
        self.packs = list(packs)
        if not self.packs:
            raise SimConfigError("a bus needs at least one pack")
        boards = [p.board for p in self.packs]
        if len(set(boards)) != len(boards):
            raise SimConfigError(f"packs on one bus need distinct board numbers, got {boards}")
        self.max_request_bytes = min(p.quirks.max_request_bytes for p in self.packs)
        protocols = {p.quirks.protocol for p in self.packs}
        if len(protocols) != 1:
            raise SimConfigError(f"packs on one bus must speak one protocol, got {sorted(protocols)}")
        self.protocol = protocols.pop()

    def request_parser(self) -> RequestParser | ModbusRequestParser:
        """A parser that cuts the bus's byte stream into the requests its packs understand."""
        if self.protocol == "a5":
            return RequestParser(self.max_request_bytes)
        addresses = frozenset().union(*(p.responder.accepted for p in self.packs))
        return ModbusRequestParser(addresses)

    @classmethod
    def of(cls, packs: SimulatedPack | Sequence[SimulatedPack] | Bus) -> Bus:
        if isinstance(packs, Bus):
            return packs
        if isinstance(packs, SimulatedPack):
            return cls([packs])
        return cls(packs)

    def respond(self, request: bytes) -> list[Emission]:
        out: list[Emission] = []
        for pack in self.packs:
            out += pack.respond(request)
        return sorted(out, key=lambda e: e.delay_s)
