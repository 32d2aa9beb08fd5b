"""The plan of one reading, sans-I/O: which exchanges, in which order, what a failure means.

Every family reads the same *groups* (the gateway's cadence keys, one definition: :data:`GROUPS`); a plan
turns the groups asked for into the family's exchanges (A5: one command per group, status first since
its counts size the multi-frame replies; D2 / 0x81: one register block for all of them), is told how each
exchange ended, and builds the :class:`~trackingbms.model.Reading`:

    plan = A5Snapshot(["pack", "cells"], new_exchange=..., counts=counts)
    ex = plan.next_exchange()
    while ex is not None:
        ex = plan.settle(drive(ex))      # the Done or Failed event it ended with → the next exchange
    plan.no_reply                        # a Failure when nothing at all answered (no reading)
    plan.reading(source="a5-uart")      # partial readings name what failed in .errors
    plan.failed_groups                  # groups whose fields are missing
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trackingbms.daly.exchange import Done, Event, Exchange, Failed, Failure
from trackingbms.daly.frozen import Frozen, frozen_dataclass
from trackingbms.daly.poll import COMMANDS, SNAPSHOT_ORDER
from trackingbms.daly.reading import to_reading
from trackingbms.daly.records import Record, StatusInfo
from trackingbms.model import MEASUREMENT_FIELDS, Source

if TYPE_CHECKING:  # a type only here: importing Reading loads pydantic, paid when the first reading
    from trackingbms.model import Reading  # is built (daly.reading), not before the BMS answers

#: what a reading is made of, family-neutral (A5 command names; the order a full A5 reading asks them in)
GROUPS: tuple[str, ...] = SNAPSHOT_ORDER
GROUP_TEXT: dict[str, str] = {name: COMMANDS[name].description for name in GROUPS}


def check_groups(groups: Collection[str] | None) -> list[str]:
    """The groups asked for in reading order (None = all); unknown names are a ValueError."""
    if groups is None:
        return list(GROUPS)
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown group(s) {sorted(unknown)}; known: {', '.join(GROUPS)}")
    return [g for g in GROUPS if g in groups]


Step = Generator[Exchange, Event, None]


class SnapshotPlan:
    """Base: subclasses write :meth:`_steps`, a generator that yields exchanges and receives their end
    events, adding records (:attr:`records`) and errors (:meth:`_fail`)."""

    def __init__(self, groups: Collection[str] | None) -> None:
        self.groups = check_groups(groups)
        self.records: list[Record] = []
        self.fields: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.failed_groups: set[str] = set()
        self.no_reply: Failure | None = None
        self._gen = self._steps()
        self._current: Exchange | None = None
        self._started = False

    def _steps(self) -> Step:
        raise NotImplementedError
        yield  # pragma: no cover

    def next_exchange(self) -> Exchange | None:
        """The exchange to run now (None = the plan is done)."""
        if not self._started:
            self._started = True
            return self._advance(None)
        return self._current

    def _advance(self, event: Event | None) -> Exchange | None:
        try:
            ex = self._gen.send(event) if event is not None else next(self._gen)
        except StopIteration:
            self._gen = None  # type: ignore[assignment]
            return None
        self._current = ex
        return ex

    def settle(self, event: Event) -> Exchange | None:
        """Tell the plan how the current exchange ended; returns the next exchange (None = done)."""
        if self._current is None:
            raise RuntimeError("no exchange in progress")
        self._current = None
        return self._advance(event)

    @property
    def answered(self) -> bool:
        return bool(self.records or self.fields)

    def _fail(self, failure: Failure, groups: Iterable[str], *, key: str | None = None) -> bool:
        """Record a failed exchange; False when the reading is over (nothing answered at all)."""
        if failure.kind == "no_reply" and not self.answered:
            self.no_reply = failure
            return False
        self.errors[key or failure.key] = failure.message
        self.failed_groups.update(groups)
        return True

    def reading(self, *, source: Source | None) -> Reading:
        reading = to_reading(self.records, source=source, errors=self.errors or None)
        if self.fields:
            reading = reading.model_copy(update=self.fields)
        return reading


@dataclass
class A5Counts:
    """Cell and sensor counts learnt from 0x94; they size the 0x95 / 0x96 / 0x97 replies."""

    cell_count: int | None = None
    sensor_count: int | None = None

    def learn(self, record: Record) -> None:
        if isinstance(record, StatusInfo):
            self.cell_count, self.sensor_count = record.cell_count, record.temp_sensor_count


SIZED_BY_STATUS = frozenset({0x95, 0x96, 0x97})


class A5Snapshot(SnapshotPlan):
    """A5: one command per group, status first. A command that needs the counts when none are known is
    preceded by a 0x94 (not part of the reading unless asked for); if that fails, the command's error
    says so. Silence on the first command means no reading at all (:attr:`no_reply`)."""

    def __init__(
        self,
        groups: Collection[str] | None,
        *,
        new_exchange: Callable[[int], Exchange],
        counts: A5Counts,
    ) -> None:
        super().__init__(groups)
        self.new_exchange = new_exchange
        self.counts = counts

    def _steps(self) -> Step:
        for name in self.groups:
            data_id = COMMANDS[name].data_id
            if data_id in SIZED_BY_STATUS and self.counts.cell_count is None:
                ev = yield self.new_exchange(0x94)
                if isinstance(ev, Failed):
                    f = ev.failure
                    why = Failure(
                        f.kind,
                        f"needs the cell/sensor count from 0x94 first: {f.message}",
                        f"0x{data_id:02X}",
                        data_id,
                    )
                    if not self._fail(why, [name]):
                        return
                    continue
                assert isinstance(ev, Done)
                self.counts.learn(ev.value)
            ev = yield self.new_exchange(data_id)
            if isinstance(ev, Failed):
                if not self._fail(ev.failure, [name]):
                    return
                continue
            assert isinstance(ev, Done)
            self.counts.learn(ev.value)
            self.records.append(ev.value)


@frozen_dataclass
class BlockRead(Frozen):
    """One register block of a Modbus-shaped family and the groups its registers carry."""

    start: int
    count: int
    groups: frozenset[str]


class RegisterSnapshot(SnapshotPlan):
    """D2 / 0x81: a few register blocks (usually one) carry every group. Each block asked for once if any
    of its groups is; ``decode(start, values)`` turns a reply into fields. A block that fails names its
    groups; silence on the first block means no reading at all."""

    def __init__(
        self,
        groups: Collection[str] | None,
        *,
        blocks: Iterable[BlockRead],
        new_exchange: Callable[[int, int], Exchange],
        decode: Callable[[int, list[int]], dict[str, Any]],
    ) -> None:
        super().__init__(groups)
        self.blocks = [b for b in blocks if b.groups & set(self.groups)]
        self.new_exchange = new_exchange
        self.decode = decode
        self.extras: dict[str, Any] = {}

    def _steps(self) -> Step:
        for block in self.blocks:
            ev = yield self.new_exchange(block.start, block.count)
            if isinstance(ev, Failed):
                if not self._fail(ev.failure, block.groups & set(self.groups)):
                    return
                continue
            assert isinstance(ev, Done)
            decoded = self.decode(block.start, ev.value)
            for k, v in decoded.items():
                (self.fields if k in MEASUREMENT_FIELDS else self.extras)[k] = v
