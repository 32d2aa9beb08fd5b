"""DalyBMS against the simulator over real byte streams (TCP and a pty)."""

from __future__ import annotations

import pytest

from trackingbms.bms import BmsCorrupt, BmsNoReply, DalyBMS
from trackingbms.daly.faults import FAULT_TEXT
from trackingbms.sim import ManualClock, PackConfig, Quirks, SimulatedPack

from .conftest import make_pack, served


def still_pack(cells: int, sensors: int, **quirks: object) -> SimulatedPack:
    """A pack whose simulated time does not move: its truth is exactly what it answers."""
    return SimulatedPack(
        PackConfig(cells=cells, sensors=sensors, seed=1),
        Quirks(latency_s=0.005, baud=0, **quirks),  # type: ignore[arg-type]
        clock=ManualClock(),
    )


@pytest.mark.parametrize("transport", ["tcp", "pty"])
async def test_full_snapshot_matches_the_simulated_pack(transport: str) -> None:
    pack = still_pack(16, 4)
    async with served(pack, transport) as bms:
        reading = await bms.snapshot()
    truth = pack.truth()
    assert not reading.errors
    assert reading.source == "a5-uart"
    # every value is the simulated pack's own, at the wire's resolution
    assert reading.cells_mv == [round(c["voltage_mv"]) for c in truth["cells"]]
    assert reading.temps_c == [float(t) for t in truth["temps_c"]]
    assert reading.voltage_v == round(truth["voltage_v"], 1)
    assert reading.soc_pct == round(truth["bms_soc_pct"], 1)
    assert reading.remaining_ah == round(truth["bms_soc_pct"] * truth["rated_capacity_ah"] / 100, 3)
    assert reading.cycles == truth["cycles"]
    assert reading.state == "idle" and reading.current_a == 0.0
    assert (
        reading.charge_mos is truth["charge_mos"] is True and reading.discharge_mos is truth["discharge_mos"]
    )
    assert reading.charger_connected is False and reading.load_connected is False
    assert reading.faults == truth["faults"] == [] and reading.fault_code == 0
    assert reading.balancing == [c["cell"] for c in truth["cells"] if c["balancing"]]
    assert bms.stats.frames_good == 14 and bms.stats.frames_bad == 0
    assert all(f in FAULT_TEXT for f in reading.faults)


async def test_counts_are_learnt_once_then_cells_alone_works() -> None:
    pack = still_pack(7, 2)
    truth = pack.truth()
    async with served(pack) as bms:
        cells = await bms.cells()  # learns the count with a 0x94 first
        assert cells.cells_mv == [round(c["voltage_mv"]) for c in truth["cells"]] and bms.cell_count == 7
        reading = await bms.snapshot(["cells", "temps"])
    assert reading.cells_mv == cells.cells_mv and reading.temps_c == [float(t) for t in truth["temps_c"]]
    assert reading.voltage_v is None  # not asked for: absent, not zero


async def test_current_sign_follows_the_sample_convention() -> None:
    pack = constant_pack(scenario="constant", constant_current_a=-20.0)
    pack.advance(5)  # the scenario's current flows once simulated time moves
    async with served(pack) as bms:
        r = await bms.snapshot(["pack", "mos"])
    assert r.current_a == pytest.approx(-20, abs=1) and r.state == "discharging"
    async with served(pack, invert_current=True) as bms:
        assert (await bms.pack()).current_a == pytest.approx(20, abs=1)


def constant_pack(**config: object):
    from trackingbms.sim import PackConfig, Quirks, SimulatedPack

    return SimulatedPack(PackConfig(cells=8, sensors=1, seed=3, **config), Quirks(latency_s=0.005, baud=0))


async def test_host_0x80_all_frames_reply_does_not_confuse_later_commands() -> None:
    # units send all 16 cell frames to host 0x80; the zero-filled ones must not leak into the next reply
    async with served(make_pack(cells=4, sensors=1, frames="all"), address=0x80) as bms:
        r1 = await bms.snapshot()
        r2 = await bms.snapshot()
    assert not r1.errors and not r2.errors
    assert len(r1.cells_mv) == 4 and len(r2.temps_c) == 1


async def test_wrong_address_is_no_reply_with_a_hint() -> None:
    async with served(make_pack(hosts="0x80"), address=0x40, retries=1, turnaround_s=0.1) as bms:
        with pytest.raises(BmsNoReply) as err:
            await bms.snapshot()
    msg = str(err.value)
    assert "no reply from BMS at address 0x40" in msg and "try --address 0x80" in msg
    assert bms.stats.timeouts == 2 and bms.stats.frames_good == 0
    assert bms.stats.consecutive_failures >= 1 and bms.stats.last_error == msg


async def test_sleeping_bms_echo_is_not_a_reading() -> None:
    pack = make_pack(sleep_after_s=60, echo_when_asleep=True)
    pack.advance(120)
    async with served(pack, retries=0, turnaround_s=0.1) as bms:
        with pytest.raises(BmsNoReply) as err:
            await bms.pack()
    assert "echo" in str(err.value)
    pack.wake()
    async with served(pack) as bms:
        assert (await bms.pack()).voltage_v > 10


async def test_corrupt_answers_are_told_apart_from_silence() -> None:
    async with served(make_pack(bad_checksum=1.0), retries=1) as bms:
        with pytest.raises(BmsCorrupt) as err:
            await bms.pack()
    assert "corrupt reply to 0x90 after 2 attempts" in str(err.value)
    assert bms.stats.frames_bad >= 2 and bms.stats.retries == 1


async def test_retries_resync_and_complete_under_corruption() -> None:
    async with served(make_pack(bad_checksum=0.1, garbage=0.1, seed=7), retries=6) as bms:
        for _ in range(3):
            reading = await bms.snapshot()
            assert not reading.errors
            assert len(reading.cells_mv) == 16
    assert bms.stats.retries > 0 and bms.stats.frames_bad > 0


async def test_partial_snapshot_names_what_failed() -> None:
    # loss truncates frames inside multi-frame bursts only: cells and temps fail, the rest is read
    async with served(make_pack(loss=1.0), retries=1) as bms:
        reading = await bms.snapshot()
    assert reading.is_partial
    assert set(reading.errors) == {"0x95", "0x96"}
    assert "never arrived intact" in reading.errors["0x95"]
    assert reading.cells_mv is None and reading.temps_c is None  # never padded
    assert reading.voltage_v is not None and reading.faults == []


async def test_writes_switch_and_read_back() -> None:
    pack = make_pack()
    async with served(pack, "pty") as bms:
        mos = await bms.set_charge_mos(False)
        assert mos.charge_mos is False and mos.discharge_mos is True
        mos = await bms.set_discharge_mos(False)
        assert mos.discharge_mos is False
        mos = await bms.set_charge_mos(True)
        assert mos.charge_mos is True
        pack_status = await bms.set_soc(55.5)
        assert pack_status.soc_pct == pytest.approx(55.5, abs=0.1)
        assert isinstance(await bms.reset(), bool)


async def test_board_number_on_a_shared_bus() -> None:
    from trackingbms.sim import PackConfig, Quirks, SimulatedPack

    packs = [
        SimulatedPack(PackConfig(cells=n, sensors=1, seed=n), Quirks(board=b, latency_s=0.005, baud=0))
        for b, n in ((1, 8), (2, 12))
    ]
    async with served(packs, board=2) as bms:
        assert bms.address == 0x41
        r = await bms.snapshot(["status", "cells"])
    assert len(r.cells_mv) == 12


def test_board_number_is_checked() -> None:
    with pytest.raises(ValueError):
        DalyBMS(None, board=0)  # type: ignore[arg-type]


async def test_info_reads_identity_and_thresholds() -> None:
    async with served(make_pack(cells=8, sensors=1)) as bms:
        info = await bms.info()
    assert "errors" not in info
    assert info["rated_capacity_ah"] == 100.0
    assert info["cells_per_board"][0] == 8
    assert isinstance(info["serial"], str) and info["serial"]
    assert info["software_version"] and info["hardware_version"]
    assert info["cell_high_l2_mv"] > info["cell_high_l1_mv"] > info["cell_low_l1_mv"] > info["cell_low_l2_mv"]
