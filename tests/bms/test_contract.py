"""Every family on every wire it runs over passes the same contract (tests/bms/contract.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import pytest

from trackingbms.bms import BmsError, BmsNoReply, open_bms
from trackingbms.sim import SimulatedPack

from .contract import FamilyContract


class TestA5Tcp(FamilyContract):
    family, protocol, wire = "a5", "a5", "tcp"


class TestA5Serial(FamilyContract):
    family, protocol, wire = "a5", "a5", "serial"


class TestA5Uart0x80(FamilyContract):
    """Host 0x80: every cell frame comes back, zero-filled (reference Q5)."""

    family, protocol, wire = "a5", "a5", "tcp"

    def client_options(self) -> dict[str, Any]:
        return {"address": 0x80}


class TestD2Tcp(FamilyContract):
    family, protocol, wire = "d2", "d2", "tcp"


class TestD2Serial(FamilyContract):
    family, protocol, wire = "d2", "d2", "serial"


class TestD2Status62(FamilyContract):
    """Older D2 firmware: 62 status registers; no balance bitmap (balancing only when none balance)."""

    family, protocol, wire = "d2", "d2", "tcp"

    def client_options(self) -> dict[str, Any]:
        return {"status_registers": 62}

    @staticmethod
    def expected(pack: Any) -> dict[str, Any]:
        out = FamilyContract.expected(pack)
        if out["balancing"]:
            del out["balancing"]
        return out


class TestD2OldFirmwareFound(TestD2Status62):
    """Older firmware is silent on an 80-register read: the client falls back to 62 by itself."""

    def quirks(self, **overrides: Any) -> Any:
        return super().quirks(d2_status_registers=62, **overrides)

    def client_options(self) -> dict[str, Any]:
        return {}


class TestP81Tcp(FamilyContract):
    family, protocol, wire = "p81", "p81", "tcp"
    can_set_soc = False


class TestP81SerialBoard5(FamilyContract):
    """A 0x81 board with board number 5 (asked at 0x85, answers from 0x55)."""

    family, protocol, wire = "p81", "p81", "serial"
    can_set_soc = False

    def quirks(self, **overrides: Any) -> Any:
        return super().quirks(board=5, **overrides)

    def client_options(self) -> dict[str, Any]:
        return {"board": 5}


# ---- CAN and Bluetooth LE (the wires) ---------------------------------------------------------------


class _CanCase(FamilyContract):
    """python-can's virtual bus, in-process, on a channel of its own."""

    wire = "can"
    broadcast_interval_s: ClassVar[float] = 0.2

    @asynccontextmanager
    async def serve(self, packs: list[SimulatedPack]) -> AsyncIterator[str]:
        pytest.importorskip("can", reason="python-can is not installed (pip install 'trackingbms[can]')")
        from trackingbms.sim.can import serve_can

        protocol = "hkms" if self.family == "hkms-can" else "a5"
        channel = f"contract-{uuid.uuid4().hex[:10]}"
        endpoint = await serve_can(
            packs, channel, protocol=protocol, broadcast_interval_s=self.broadcast_interval_s
        )
        try:
            yield endpoint.url
        finally:
            await endpoint.close()


class TestA5Can(_CanCase):
    family, protocol = "a5-can", "a5"

    async def test_every_reply_corrupt_names_what_failed(self) -> None:
        """On CAN a corrupt frame never reaches the host (the controller drops it on its CRC): every
        reply corrupt is silence, named as such, with nothing filled in."""
        pack = self.make_pack(bad_checksum=1.0)
        async with self.client([pack], retries=1) as bms:
            with pytest.raises(BmsNoReply, match=r"board \d on can://virtual/"):
                await bms.snapshot()
            assert bms.stats.frames_good == 0


class TestA5CanBoard3(TestA5Can):
    """Board 3 of a bus: asked on 0x18xx0340, answers on 0x18xx4003."""

    def quirks(self, **overrides: Any) -> Any:
        return super().quirks(board=3, **overrides)

    def client_options(self) -> dict[str, Any]:
        return {"board": 3}


class TestHkmsCan(_CanCase):
    """Listen-only, experimental: one broadcast round per reading; no writes, no faults, no info."""

    family, protocol = "hkms-can", "a5"

    def client_options(self) -> dict[str, Any]:
        return {"listen_s": 1.5}

    async def test_every_reply_corrupt_names_what_failed(self) -> None:
        pytest.skip("listen-only: the board answers nothing, a corrupt broadcast frame is simply lost")

    async def test_mosfet_writes_are_read_back(self) -> None:
        async with self.client([self.make_pack()]) as bms:
            with pytest.raises(BmsError, match="listen-only"):
                await bms.set_mosfet("charge", False)

    can_set_soc = False

    async def test_info_names_the_board(self) -> None:
        async with self.client([self.make_pack()]) as bms:
            info = await bms.info()
        assert info == {"family": "hkms-can", "board": 1, "experimental": True}

    async def test_a_missing_broadcast_makes_a_partial_reading(self) -> None:
        from trackingbms.daly import can as dcan

        pack = self.make_pack()
        async with self.serve([pack]) as url:
            from trackingbms.sim.can import CanResponder

            # drop the cell pages of the broadcast: the rest arrives, the cells are named as missing
            original = CanResponder.broadcast

            def without_cells(responder: Any, first_delay_s: float = 0.0) -> Any:
                return [
                    e
                    for e in original(responder, first_delay_s)
                    if e.frame.arbitration_id >> 16 != dcan.HKMS_CELL_VOLTS
                ]

            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(CanResponder, "broadcast", without_cells)
                bms = await open_bms(url, self.family, listen_s=0.5)
                try:
                    reading = await bms.snapshot()
                finally:
                    await bms.aclose()
        assert reading.cells_mv is None and reading.voltage_v is not None
        assert reading.errors == {"cells": "no cells broadcast within 0.5 s"}
        assert bms.failed_groups == {"cells"}


class _BleCase(FamilyContract):
    """A bumble GATT peripheral on a virtual controller; the client's bumble host reaches it over HCI."""

    wire = "ble"
    turnaround_s = 1.0

    @asynccontextmanager
    async def serve(self, packs: list[SimulatedPack]) -> AsyncIterator[str]:
        pytest.importorskip("bumble", reason="bumble is not installed (pip install 'trackingbms[ble]')")
        from trackingbms.sim.ble import serve_ble

        endpoint = await serve_ble(packs)
        try:
            yield endpoint.url
        finally:
            await endpoint.close()


class TestA5Ble(_BleCase):
    """A5 over BLE: the app's host address 0x80 (the default on a BLE link), every cell frame (Q5, Q12)."""

    family, protocol = "a5", "a5"

    async def test_the_app_address_and_every_cell_frame(self) -> None:
        pack = self.make_pack(cells=7)
        async with self.client([pack]) as bms:
            reading = await bms.snapshot(["cells"])
            assert bms.address == 0x80  # type: ignore[attr-defined]
        assert reading.cells_mv == pack.battery.cells_mv()
        assert pack.stats["replies"] >= 1 and bms.stats.frames_good >= 16 + 1  # 0x94, then 16 cell frames


class TestD2Ble(_BleCase):
    """D2 over BLE (the built-in modules): replies in several notifications, reassembled by byte count."""

    family, protocol = "d2", "d2"
