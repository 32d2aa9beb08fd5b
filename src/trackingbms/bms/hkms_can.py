"""Family ``hkms-can`` (**experimental**): newer Daly H/K/M/S boards broadcasting on CAN, listen-only.

These boards broadcast their data on their own once a host sends the keep-alive ``0x0400FF80``
every 2 s (reference §4.2). A snapshot sends the keep-alive when it is due and listens until one full
round of the board's broadcasts is in (:class:`trackingbms.daly.can.HkmsAssembler`), or until
``listen_s`` passes: then the reading is partial and ``errors`` names what never came. The message ids
come from one community component and are unverified on hardware; the fault pages are not decoded
(readings carry no ``faults``). Writes (MOSFETs, SOC) are refused: their CAN registers are unverified.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

from trackingbms.bms import BmsError, BmsNoReply, LinkStats
from trackingbms.daly import can as dcan
from trackingbms.links import LinkError
from trackingbms.model import Reading


class HkmsCanBMS:
    """Listen-only client for one H/K/M/S board (``board`` = the low byte of its CAN ids)."""

    family = "hkms-can"

    def __init__(
        self, link: Any, *, board: int = 1, invert_current: bool = False, listen_s: float = 5.0
    ) -> None:
        if not 1 <= board <= 0x7F:
            raise ValueError(f"board number must be 1–127, got {board}")
        self.link = link
        self.board = board
        self.invert_current = invert_current
        self.listen_s = listen_s
        self.source = "hkms-can"
        self.stats = LinkStats()
        self._last_keepalive: float | None = None
        self._lock = asyncio.Lock()

    async def _keepalive(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._last_keepalive is None or now - self._last_keepalive >= dcan.KEEPALIVE_INTERVAL_S:
            ka = dcan.keepalive_frame()
            await self.link.send(ka.arbitration_id, ka.data)
            self._last_keepalive = now

    async def snapshot(self, groups: Collection[str] | None = None) -> Reading:
        """One reading from a full round of broadcasts (``groups`` is ignored: the board sends all)."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            asm = dcan.HkmsAssembler(board=self.board, invert_current=self.invert_current)
            deadline = loop.time() + self.listen_s
            try:
                await self._keepalive()
                while not asm.complete or not asm.seen:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    msg = await self.link.recv(min(remaining, dcan.KEEPALIVE_INTERVAL_S / 2))
                    await self._keepalive()  # keep the board talking through a long listen
                    if msg is None:
                        continue
                    if asm.feed(dcan.CanFrame(*msg)):
                        self.stats.frames_good += 1
            except LinkError as exc:
                self._fail(str(exc))
                raise
            if not asm.seen:
                msg = (
                    f"no broadcast from H/K/M/S board {self.board} on {getattr(self.link, 'url', 'CAN')} "
                    f"within {self.listen_s:.0f} s of the keep-alive (wrong board number? an A5-CAN "
                    "board? try --family a5-can) [experimental family]"
                )
                self.stats.timeouts += 1
                self._fail(msg)
                raise BmsNoReply(msg)
            errors = {name: f"no broadcast within {self.listen_s:.0f} s" for name in asm.missing} or None
            if errors:
                self._fail(f"partial reading: {', '.join(asm.missing)} missing")
            else:
                self.stats.consecutive_failures = 0
            return Reading(source="hkms-can", errors=errors, **asm.fields())

    def _fail(self, msg: str) -> None:
        self.stats.last_error = msg
        self.stats.consecutive_failures += 1

    async def _refuse(self, *_: Any, **__: Any) -> Any:
        raise BmsError("hkms-can is listen-only (experimental): writes are not supported on this family")

    set_charge_mos = set_discharge_mos = set_soc = _refuse

    async def info(self) -> dict[str, object]:
        return {"family": "hkms-can", "board": self.board, "experimental": True}

    async def aclose(self) -> None:
        await self.link.close()


async def open_hkms_can(url: str, **options: Any) -> HkmsCanBMS:
    from trackingbms.links.can import open_can_link

    link = await open_can_link(url)
    return HkmsCanBMS(link, **options)


__all__ = ["HkmsCanBMS", "open_hkms_can"]
