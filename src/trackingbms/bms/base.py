"""The BMS-client interface every family implements, its errors, and the family registry.

The gateway and the CLI see only :class:`BmsClient`::

    bms = await open_bms("tcp://127.0.0.1:9000", family="d2")
    reading = await bms.snapshot(["pack", "cells"])   # Reading; partial ones name what failed
    await bms.set_mosfet("charge", False)              # written, then read back and checked
    await bms.aclose()

Families are registered by name in :data:`FAMILIES` and imported only when used (python-can's
``BACKENDS`` table is the model): adding one is a module with a :class:`BmsClient` subclass and a line
here. The exchange logic itself is sans-I/O (:mod:`trackingbms.daly.exchange`); :func:`run_exchange`
drives it over a byte link (serial, TCP, BLE) or a frame link (CAN).
"""

from __future__ import annotations

import asyncio
import importlib
from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from trackingbms.daly.exchange import Done, Exchange, Failed, Failure, Send, Timing, Wait
from trackingbms.daly.snapshot import GROUPS, SnapshotPlan
from trackingbms.links import LinkError, link_wire, open_link
from trackingbms.model import Source

if TYPE_CHECKING:  # a type only here: importing Reading loads pydantic, paid when the first reading
    from trackingbms.model import Reading  # is built (daly.reading), not before the BMS answers

MosFet = Literal["charge", "discharge"]


class BmsError(Exception):
    """A command to the BMS failed; ``data_id`` names it (A5 data id or Modbus start register)."""

    def __init__(self, message: str, *, data_id: int | None = None) -> None:
        super().__init__(message)
        self.data_id = data_id


class BmsNoReply(BmsError):
    """Nothing came back at all (or only the echo of our request): asleep, wrong address, wiring."""


class BmsCorrupt(BmsError):
    """The BMS answers, but the replies were corrupt or incomplete after every retry."""


class BmsWriteError(BmsError):
    """A write was answered but not confirmed (wrong echo, or the value read back differs)."""


class UnknownFamily(ValueError):
    """A family name that is not in :data:`FAMILIES` (or whose module cannot be imported)."""


def error_from(failure: Failure) -> BmsError:
    cls = {"no_reply": BmsNoReply, "corrupt": BmsCorrupt, "refused": BmsWriteError}[failure.kind]
    return cls(failure.message, data_id=failure.data_id)


@dataclass
class LinkStats:
    """Counters of one client's link (the gateway reports them in its heartbeat)."""

    frames_good: int = 0
    frames_bad: int = 0
    retries: int = 0
    timeouts: int = 0
    last_error: str | None = None
    consecutive_failures: int = 0

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


async def run_exchange(link: Any, ex: Exchange) -> Done | Failed:
    """Drive one sans-I/O exchange over ``link`` until it is done or failed.

    A byte link has ``read``/``write``; a frame link (CAN) has ``send(frame_id, data)`` and
    ``recv(timeout_s) -> (frame_id, data) | None`` and the exchange has ``receive_frame``."""
    loop = asyncio.get_running_loop()
    frames = hasattr(link, "recv")
    while True:
        ev = ex.next_event(loop.time())
        if isinstance(ev, Send):
            link.reset_input()
            if frames:
                await link.send(ev.frame_id, ev.data)
            else:
                await link.write(ev.data)
        elif isinstance(ev, Wait):
            if ev.timeout_s <= 0:
                continue
            if frames:
                got = await link.recv(ev.timeout_s)
                if got is None:
                    ex.receive(b"", loop.time())
                else:
                    ex.receive_frame(got[0], got[1], loop.time())  # type: ignore[attr-defined]
            else:
                ex.receive(await link.read(256, ev.timeout_s), loop.time())
        else:
            return ev


class BmsClient(ABC):
    """One BMS behind one link. Subclasses set :attr:`family`, :attr:`SOURCES` and implement
    :meth:`plan`, :meth:`set_mosfet`, :meth:`set_soc` and :meth:`info`.

    ``board``: the board number on a shared bus (1–16); ``source``: the Sample's source (default from
    the family and the wire, :attr:`SOURCES`); several clients may share one link (an RS485 bus): each
    exchange holds the link's lock, so only one is on the wire at a time, and :meth:`aclose` leaves a
    shared link open (``owns_link=False``).
    """

    family: ClassVar[str]
    #: the Sample source for each wire this family runs over ("serial", "tcp", "can", "ble")
    SOURCES: ClassVar[dict[str, Source]]
    #: fields this family cannot deliver at all (the contract test skips them)
    NOT_CARRIED: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        link: Any,
        *,
        board: int = 1,
        source: Source | None = None,
        invert_current: bool = False,
        baud: int = 9600,
        retries: int = 2,
        turnaround_s: float = 0.2,
        owns_link: bool = True,
    ) -> None:
        if not 1 <= board <= 16:
            raise ValueError(f"board number must be 1–16, got {board}")
        self.link = link
        self.board = board
        self.invert_current = invert_current
        self.baud = baud
        self.retries = retries
        self.turnaround_s = turnaround_s
        self.owns_link = owns_link
        wire = link_wire(link)
        self.source: Source = source or self.SOURCES.get(wire) or next(iter(self.SOURCES.values()))
        self.stats = LinkStats()
        #: groups whose fields the last snapshot could not read
        self.failed_groups: set[str] = set()
        lock = getattr(link, "lock", None)
        self._lock: asyncio.Lock = lock if isinstance(lock, asyncio.Lock) else asyncio.Lock()

    @property
    def timing(self) -> Timing:
        return Timing(baud=self.baud, turnaround_s=self.turnaround_s, retries=self.retries)

    # ---- driving
    async def exchange(self, ex: Exchange) -> Any:
        """Run one exchange (holding the link) and return its value, or raise the matching BmsError."""
        ev = await self._settle(ex)
        if isinstance(ev, Failed):
            raise error_from(ev.failure)
        return ev.value

    async def _settle(self, ex: Exchange) -> Done | Failed:
        async with self._lock:
            try:
                ev = await run_exchange(self.link, ex)
            except LinkError as exc:
                self._fail(str(exc))  # the byte stream is gone; the caller reopens the link
                raise
        if isinstance(ev, Failed):
            self._fail(ev.failure.message)
        else:
            self.stats.consecutive_failures = 0
        return ev

    def _fail(self, msg: str) -> None:
        self.stats.last_error = msg
        self.stats.consecutive_failures += 1

    # ---- the interface
    @abstractmethod
    def plan(self, groups: Collection[str] | None) -> SnapshotPlan:
        """The sans-I/O plan of one reading of ``groups`` (None = all of :data:`GROUPS`)."""

    async def snapshot(self, groups: Collection[str] | None = None) -> Reading:
        """One reading of the named groups (None = all). A failed part leaves its fields absent and its
        reason in ``Reading.errors``; if the BMS does not answer at all, :class:`BmsNoReply` is raised."""
        plan = self.plan(groups)
        ex = plan.next_exchange()
        while ex is not None:
            ex = plan.settle(await self._settle(ex))
        self.failed_groups = set(plan.failed_groups)
        if plan.no_reply is not None:
            self.failed_groups = set(plan.groups)
            raise error_from(plan.no_reply)
        return plan.reading(source=self.source)

    @abstractmethod
    async def set_mosfet(self, which: MosFet, on: bool) -> Reading:
        """Switch a MOSFET, then read the state back; :class:`BmsWriteError` if it did not take."""

    @abstractmethod
    async def set_soc(self, soc_pct: float) -> Reading:
        """Set the BMS's SOC, then read it back; :class:`BmsWriteError` if it did not take."""

    @abstractmethod
    async def info(self) -> dict[str, object]:
        """Identity and settings (firmware, hardware, rated capacity...); what fails is under "errors"."""

    async def aclose(self) -> None:
        if self.owns_link:
            await self.link.close()

    async def __aenter__(self) -> BmsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {getattr(self.link, 'url', '?')} board {self.board}>"


def _check_readback(reading: Reading, field: str, want: object, what: str, tolerance: float = 0.0) -> None:
    got = getattr(reading, field)
    if got is None:
        raise BmsWriteError(f"{what}: written, but the read-back failed ({reading.errors})")
    if isinstance(want, float) and isinstance(got, int | float):
        if abs(got - want) > tolerance:
            raise BmsWriteError(f"{what}: BMS reads {got} after the write, not {want}")
    elif got != want:
        raise BmsWriteError(f"{what}: BMS reads {got} after the write, not {want}")


check_readback = _check_readback

#: family name → (module, class); imported on first use
FAMILIES: dict[str, tuple[str, str]] = {
    "a5": ("trackingbms.bms.a5", "DalyBMS"),
    "d2": ("trackingbms.bms.d2", "D2Client"),
    "p81": ("trackingbms.bms.p81", "P81Client"),
    "a5-can": ("trackingbms.bms.a5_can", "A5CanClient"),
    "hkms-can": ("trackingbms.bms.hkms_can", "HkmsCanClient"),
}


def family_class(name: str) -> type[BmsClient]:
    """The client class of a family, imported now; :class:`UnknownFamily` with the known names if not."""
    try:
        module_name, attr = FAMILIES[name]
    except KeyError:
        raise UnknownFamily(f"unknown BMS family {name!r}; known: {', '.join(FAMILIES)}") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownFamily(f"BMS family {name!r} is not available here: {exc}") from None
    return getattr(module, attr)  # type: ignore[no-any-return]


async def open_bms(
    port: str, family: str = "a5", *, link: Any = None, baud: int = 9600, **options: Any
) -> BmsClient:
    """Open ``port`` (see :data:`trackingbms.links.LINKS`) and put a ``family`` client on it; with
    ``link`` given, the client shares that link (several boards on one bus) and leaves it open."""
    cls = family_class(family)
    if link is not None:
        return cls(link, baud=baud, owns_link=False, **options)
    link = await open_link(port, baud=baud)
    try:
        return cls(link, baud=baud, **options)
    except Exception:
        await link.close()
        raise


__all__ = [
    "FAMILIES",
    "GROUPS",
    "BmsClient",
    "BmsCorrupt",
    "BmsError",
    "BmsNoReply",
    "BmsWriteError",
    "LinkStats",
    "MosFet",
    "UnknownFamily",
    "check_readback",
    "error_from",
    "family_class",
    "open_bms",
    "run_exchange",
]
