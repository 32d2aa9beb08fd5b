"""The contract every BMS family passes (aiobmsble's ``BMSBasicTests`` is the model).

A family × wire case is a subclass of :class:`FamilyContract` that says how to serve simulated packs and
how to open a client on them; the tests are inherited. Same simulated pack state in (time frozen, a
charging current, one MOSFET off, balancing cells), same Reading out within the protocol's resolution
(:attr:`FamilyContract.resolution`), fields the family does not carry (``NOT_CARRIED`` of its client)
skipped; every reply corrupt → a reading naming what failed, no field filled in; silence → BmsNoReply;
writes verified by read-back.

To add a case (CAN, BLE): subclass, set ``family`` and ``wire``, override :meth:`serve` (an async context
manager yielding the port URL for a list of packs) if the simulator is reached differently, and
``client_options`` for family options. Example at the bottom of tests/bms/test_contract.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import pytest

from trackingbms.bms import BmsClient, BmsNoReply, family_class, open_bms
from trackingbms.model import Reading
from trackingbms.sim import ManualClock, PackConfig, Quirks, SimulatedPack, serve_pty, serve_tcp

#: how far a family's reading may be from the pack's state, by field (the coarsest wire resolution)
RESOLUTION: dict[str, float] = {
    "voltage_v": 0.1,
    "current_a": 0.1,
    "soc_pct": 0.1,
    "remaining_ah": 0.1,
}


class FamilyContract:
    family: ClassVar[str]
    wire: ClassVar[str] = "tcp"
    protocol: ClassVar[str]  # the simulator's Quirks.protocol
    resolution: ClassVar[dict[str, float]] = RESOLUTION
    turnaround_s: ClassVar[float] = 0.5  # generous: shared, noisy machines; timing is not under test

    # ---- hooks ------------------------------------------------------------------------------------
    def quirks(self, **overrides: Any) -> Quirks:
        overrides.setdefault("latency_s", 0.005)
        overrides.setdefault("baud", 0)
        return Quirks(protocol=self.protocol, **overrides)

    def make_pack(
        self, *, cells: int = 16, sensors: int = 4, current_a: float = 12.0, **quirks: Any
    ) -> SimulatedPack:
        config = PackConfig(
            cells=cells,
            sensors=sensors,
            seed=7,
            scenario="constant",
            constant_current_a=current_a,
            soc_pct=55.0,
            cycles=3,
        )
        pack = SimulatedPack(config, self.quirks(**quirks), clock=ManualClock())
        pack.advance(30)  # the current flows; then time stands still: every read sees one state
        return pack

    @asynccontextmanager
    async def serve(self, packs: list[SimulatedPack]) -> AsyncIterator[str]:
        if self.wire == "tcp":
            endpoint = await serve_tcp(packs, host="127.0.0.1", port=0)
            url = endpoint.url
        else:
            endpoint = await serve_pty(packs)
            url = endpoint.path
        try:
            yield url
        finally:
            await endpoint.close()

    def client_options(self) -> dict[str, Any]:
        return {}

    @asynccontextmanager
    async def client(self, packs: list[SimulatedPack], **options: Any) -> AsyncIterator[BmsClient]:
        async with self.serve(packs) as url:
            opts = {"turnaround_s": self.turnaround_s, **self.client_options(), **options}
            bms = await open_bms(url, self.family, **opts)
            try:
                yield bms
            finally:
                await bms.aclose()

    # ---- what the pack's state says the reading must be --------------------------------------------
    @staticmethod
    def expected(pack: SimulatedPack) -> dict[str, Any]:
        b = pack.battery
        current = b.measured_current_a()
        return {
            "voltage_v": b.pack_voltage_v(),
            "current_a": current,
            "soc_pct": b.bms_soc_pct,
            "remaining_ah": b.bms_soc_pct / 100 * b.rated_ah,
            "cycles": b.cycles,
            "state": {0: "idle", 1: "charging", 2: "discharging"}[b.state()],
            "charge_mos": b.charge_mos,
            "discharge_mos": b.discharge_mos,
            "cells_mv": b.cells_mv(),
            "temps_c": [float(t) for t in b.temps_c()],
            "balancing": b.balancing(),
            "faults": [],
            "fault_code": 0,
            "charger_connected": b.requested_a > 0,
            "load_connected": b.requested_a < 0,
        }

    def check_reading(self, reading: Reading, pack: SimulatedPack) -> None:
        not_carried = family_class(self.family).NOT_CARRIED
        want = self.expected(pack)
        got = reading.measurements()
        for name, value in want.items():
            if name in not_carried:
                assert name not in got, f"{self.family} cannot carry {name}, yet the reading has it"
                continue
            assert name in got, f"{self.family}/{self.wire}: {name} missing from {got}"
            if name in self.resolution:
                assert got[name] == pytest.approx(value, abs=self.resolution[name] + 1e-6), name
            else:
                assert got[name] == value, name

    # ---- the contract -------------------------------------------------------------------------------
    async def test_reading_matches_the_pack_state(self) -> None:
        pack = self.make_pack()
        pack.battery.set_mos(discharge=False)
        async with self.client([pack]) as bms:
            reading = await bms.snapshot()
            assert not reading.errors and not bms.failed_groups
            assert reading.source == bms.source and bms.source is not None
            assert reading.current_a is not None and reading.current_a > 0  # charging is positive
            self.check_reading(reading, pack)
            assert bms.stats.frames_good > 0 and bms.stats.frames_bad == 0

    async def test_a_subset_of_groups_is_read(self) -> None:
        pack = self.make_pack(cells=7, sensors=2)
        async with self.client([pack]) as bms:
            reading = await bms.snapshot(["pack", "cells"])
        assert reading.voltage_v == pytest.approx(pack.battery.pack_voltage_v(), abs=0.1)
        assert reading.cells_mv == pack.battery.cells_mv()

    async def test_every_reply_corrupt_names_what_failed(self) -> None:
        pack = self.make_pack(bad_checksum=1.0)
        async with self.client([pack], retries=1) as bms:
            reading = await bms.snapshot()
            assert reading.errors, "a reading with corrupt replies must say what failed"
            assert reading.measurements() == {}, "nothing may be filled in from corrupt replies"
            assert bms.failed_groups
            assert bms.stats.frames_bad > 0
        assert all("corrupt" in why or "never arrived intact" in why for why in reading.errors.values())

    async def test_silence_is_no_reply(self) -> None:
        pack = self.make_pack(current_a=0.0, sleep_after_s=10.0, echo_when_asleep=False)
        pack.advance(60)  # no current for a minute: it sleeps and stays silent
        assert pack.asleep
        async with self.client([pack], retries=0) as bms:
            with pytest.raises(BmsNoReply):
                await bms.snapshot()
            assert bms.stats.last_error

    async def test_mosfet_writes_are_read_back(self) -> None:
        pack = self.make_pack()
        async with self.client([pack]) as bms:
            r = await bms.set_mosfet("charge", False)
            assert r.charge_mos is False and pack.battery.charge_mos is False
            r = await bms.set_mosfet("discharge", False)
            assert r.discharge_mos is False
            r = await bms.set_mosfet("charge", True)
            assert r.charge_mos is True and pack.battery.charge_mos is True

    can_set_soc: ClassVar[bool] = True

    async def test_soc_write_is_read_back(self) -> None:
        pack = self.make_pack()
        async with self.client([pack]) as bms:
            if not self.can_set_soc:
                from trackingbms.bms import BmsError

                with pytest.raises(BmsError):
                    await bms.set_soc(40.0)
                return
            r = await bms.set_soc(40.5)
        assert r.soc_pct == pytest.approx(40.5, abs=0.1)
        assert pack.battery.bms_soc_pct == pytest.approx(40.5, abs=0.1)

    async def test_info_names_the_board(self) -> None:
        async with self.client([self.make_pack()]) as bms:
            info = await bms.info()
        assert "errors" not in info
        assert info.get("rated_capacity_ah") == 100.0
