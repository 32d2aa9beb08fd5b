"""Family ``hkms-can`` (**experimental**): newer Daly H/K/M/S boards broadcasting on CAN, listen-only.

These boards broadcast their data on their own once a host sends the keep-alive ``0x0400FF80``
every 2 s (reference §4.2). A snapshot sends the keep-alive when it is due and listens until one full
round of the board's broadcasts is in (:class:`trackingbms.daly.can.HkmsListen`), or until ``listen_s``
passes: then the reading is partial and ``errors`` names what never came. The message ids come from one
community component and are unverified on hardware; the fault pages are not decoded (readings carry no
``faults``), and there is no state, charger or load flag in the broadcast. Writes (MOSFETs, SOC) are
refused: their CAN registers are unverified too.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from trackingbms.bms.base import BmsClient, BmsError, MosFet
from trackingbms.daly import can as dcan
from trackingbms.daly.exchange import Done, Failed
from trackingbms.daly.snapshot import SnapshotPlan, Step
from trackingbms.model import Source

if TYPE_CHECKING:
    from trackingbms.model import Reading

#: which Sample fields each broadcast group carries (for the partial-reading errors)
_GROUP_OF = {"pack": "pack", "mos": "mos", "status": "status", "cells": "cells", "temps": "temps"}


class HkmsSnapshot(SnapshotPlan):
    """One listen per reading; what did not come is named under the broadcast it belongs to."""

    def __init__(self, groups: Collection[str] | None, *, new_listen: Any) -> None:
        super().__init__(groups)
        self.new_listen = new_listen

    def _steps(self) -> Step:
        listen = self.new_listen()
        ev = yield listen
        if isinstance(ev, Failed):
            self._fail(ev.failure, self.groups)
            return
        assert isinstance(ev, Done)
        self.fields.update(ev.value)
        for name in listen.asm.missing:
            self.errors[name] = f"no {name} broadcast within {listen.listen_s:g} s"
            self.failed_groups.add(_GROUP_OF.get(name, name))


class HkmsCanClient(BmsClient):
    """Listen-only client for one H/K/M/S board (``board`` = the low byte of its CAN ids)."""

    family = "hkms-can"
    SOURCES: dict[str, Source] = {"can": "hkms-can"}
    NOT_CARRIED = frozenset({"state", "faults", "fault_code", "charger_connected", "load_connected"})

    def __init__(self, link: Any, *, listen_s: float = 5.0, **options: Any) -> None:
        options.pop("address", None)
        super().__init__(link, **options)
        self.listen_s = listen_s
        self._last_keepalive: float | None = None

    def _keepalive_due(self, now: float) -> bool:
        if self._last_keepalive is None or now - self._last_keepalive >= dcan.KEEPALIVE_INTERVAL_S:
            self._last_keepalive = now  # the exchange sends it right after saying so
            return True
        return False

    def new_listen(self) -> dcan.HkmsListen:
        return dcan.HkmsListen(
            dcan.HkmsAssembler(board=self.board, invert_current=self.invert_current),
            listen_s=self.listen_s,
            keepalive_due=self._keepalive_due,
            stats=self.stats,
            bus_name=getattr(self.link, "url", "the CAN bus"),
        )

    def plan(self, groups: Collection[str] | None) -> HkmsSnapshot:
        return HkmsSnapshot(groups, new_listen=self.new_listen)

    async def snapshot(self, groups: Collection[str] | None = None) -> Reading:
        """One full round of broadcasts (the board sends everything; ``groups`` only checks names)."""
        return await super().snapshot(groups)

    async def _refuse(self, what: str) -> Reading:
        raise BmsError(f"hkms-can is listen-only (experimental): {what} is not supported on this family")

    async def set_mosfet(self, which: MosFet, on: bool) -> Reading:
        return await self._refuse(f"switching the {which} MOSFET")

    async def set_soc(self, soc_pct: float) -> Reading:
        return await self._refuse("setting the SOC")

    async def info(self) -> dict[str, object]:
        return {"family": self.family, "board": self.board, "experimental": True}


__all__ = ["HkmsCanClient", "HkmsSnapshot"]
