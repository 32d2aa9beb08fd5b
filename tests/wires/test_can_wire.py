"""a5-can and hkms-can against simulated packs on python-can's virtual bus and on an slcan pty."""

from __future__ import annotations

import pytest

from trackingbms.bms import BmsError, BmsNoReply, DalyBMS, open_bms
from trackingbms.bms.a5_can import A5CanClient
from trackingbms.links import LinkError, open_link
from trackingbms.links.can import parse_can_url
from trackingbms.sim import serve_tcp
from trackingbms.sim.can import serve_can, serve_slcan_pty

from .conftest import make_pack

pytest.importorskip("can", reason="python-can is not installed (pip install 'trackingbms[can]')")

TURNAROUND_S = 0.5


def test_can_urls() -> None:
    assert parse_can_url("can://socketcan/can0") == ("socketcan", "can0", {"bitrate": 250000})
    assert parse_can_url("can://slcan/dev/ttyACM0?bitrate=500000&sleep_after_open=0") == (
        "slcan",
        "/dev/ttyACM0",
        {"bitrate": 500000, "sleep_after_open": 0},
    )
    for bad in ("can://", "can://socketcan", "tcp://x:1"):
        with pytest.raises(LinkError):
            parse_can_url(bad)


async def test_unknown_interface_is_one_clear_error() -> None:
    with pytest.raises(LinkError, match="nosuchcan"):
        await open_link("can://nosuchcan/x")


async def test_a5_can_reads_what_a5_serial_reads(channel: str) -> None:
    pack = make_pack(cells=16, sensors=4)
    tcp = await serve_tcp(pack, host="127.0.0.1", port=0)
    can_ep = await serve_can(pack, channel)
    serial = DalyBMS(await open_link(tcp.url), turnaround_s=TURNAROUND_S)
    bms = await open_bms(can_ep.url, "a5-can", turnaround_s=TURNAROUND_S)
    try:
        over_can = await bms.snapshot()
        over_tcp = await serial.snapshot()
    finally:
        await bms.aclose()
        await serial.aclose()
        await can_ep.close()
        await tcp.close()
    assert over_can.source == "a5-can" and over_can.errors is None
    assert len(over_can.cells_mv or []) == 16 and len(over_can.temps_c or []) == 4
    skip = {"ts", "source"}
    assert over_can.model_dump(exclude=skip) == over_tcp.model_dump(exclude=skip)


async def test_several_boards_on_one_bus(channel: str) -> None:
    packs = [make_pack(board=1, cells=8, seed=1), make_pack(board=2, cells=12, seed=2)]
    ep = await serve_can(packs, channel)
    link = await open_link(ep.url)
    try:
        one = A5CanClient(link, board=1, turnaround_s=TURNAROUND_S, owns_link=False)
        two = A5CanClient(link, board=2, turnaround_s=TURNAROUND_S, owns_link=False)
        r1, r2 = await one.snapshot(), await two.snapshot()
        assert (len(r1.cells_mv or []), len(r2.cells_mv or [])) == (8, 12)
        with pytest.raises(BmsNoReply, match="board 3"):
            await A5CanClient(link, board=3, turnaround_s=0.05, retries=0).pack()
    finally:
        await link.close()
        await ep.close()


async def test_lost_frames_are_asked_again_and_a_dead_burst_is_named(channel: str) -> None:
    # a corrupt frame on CAN never arrives (the controller's CRC drops it): retries fetch the missing ones
    pack = make_pack(cells=48, bad_checksum=0.2, seed=4)
    ep = await serve_can(pack, channel)
    bms = await open_bms(ep.url, "a5-can", turnaround_s=TURNAROUND_S, retries=6)
    try:
        reading = await bms.snapshot()
        assert reading.errors is None and len(reading.cells_mv or []) == 48
        assert ep.responder.stats["dropped"] > 0 and bms.stats.retries > 0
    finally:
        await bms.aclose()
        await ep.close()
    # half the frames of every multi-frame burst are lost: the cells stay missing, the reading says why
    pack = make_pack(cells=16, loss=0.5)
    ep = await serve_can(pack, channel + "b")
    bms = await open_bms(ep.url, "a5-can", turnaround_s=TURNAROUND_S, retries=1)
    try:
        reading = await bms.snapshot()
        assert reading.cells_mv is None and reading.voltage_v is not None
        assert "never arrived" in (reading.errors or {})["0x95"]
    finally:
        await bms.aclose()
        await ep.close()


async def test_writes_are_verified_by_reading_back(channel: str) -> None:
    pack = make_pack()
    ep = await serve_can(pack, channel)
    bms = await open_bms(ep.url, "a5-can", turnaround_s=TURNAROUND_S)
    try:
        reading = await bms.set_mosfet("discharge", False)
        assert reading.discharge_mos is False and pack.battery.discharge_mos is False
        reading = await bms.set_soc(42.5)
        assert reading.soc_pct == 42.5
    finally:
        await bms.aclose()
        await ep.close()


async def test_a5_can_over_an_slcan_adapter_on_a_pty() -> None:
    """The simulator plays a USB-CAN adapter (slcan) on a pty; python-can's slcan driver opens it."""
    pack = make_pack(cells=20)
    ep = await serve_slcan_pty(pack)
    bms = await open_bms(ep.url, "a5-can", turnaround_s=TURNAROUND_S)
    try:
        reading = await bms.snapshot()
    finally:
        await bms.aclose()
        await ep.close()
    assert reading.errors is None and reading.cells_mv == pack.battery.cells_mv()


async def test_hkms_can_listens_to_the_broadcast(channel: str) -> None:
    pack = make_pack(cells=16, sensors=3, scenario="constant", constant_current_a=-20.0)
    ep = await serve_can(pack, channel, protocol="hkms", broadcast_interval_s=0.2)
    bms = await open_bms(ep.url, "hkms-can", listen_s=5.0)
    try:
        reading = await bms.snapshot()
        assert ep.responder.stats["keepalives"] == 1
        again = await bms.snapshot()  # the next round, without a new keep-alive (not due yet)
        with pytest.raises(BmsError, match="listen-only"):
            await bms.set_mosfet("discharge", False)
    finally:
        await bms.aclose()
        await ep.close()
    assert reading.source == "hkms-can" and reading.errors is None
    assert reading.current_a == pytest.approx(-20.0, abs=0.2)  # discharging, the H/K/M/S sign convention
    assert reading.cells_mv == pack.battery.cells_mv() and len(reading.temps_c or []) == 3
    assert again.errors is None


async def test_hkms_can_says_when_nothing_broadcasts(channel: str) -> None:
    pack = make_pack()
    ep = await serve_can(pack, channel)  # legacy board: silent to keep-alives
    bms = await open_bms(ep.url, "hkms-can", listen_s=0.3)
    try:
        with pytest.raises(BmsNoReply, match="a5-can"):
            await bms.snapshot()
    finally:
        await bms.aclose()
        await ep.close()


async def test_a_lost_adapter_is_a_link_error_not_silence() -> None:
    """The USB-CAN adapter goes away (the pty closes): the client says so, so the gateway reconnects
    instead of calling the BMS asleep."""
    pack = make_pack()
    ep = await serve_slcan_pty(pack)
    bms = await open_bms(ep.url, "a5-can", turnaround_s=TURNAROUND_S)
    try:
        assert (await bms.snapshot(["pack"])).voltage_v is not None
        await ep.close()
        with pytest.raises(LinkError, match=r"cannot send CAN frame|CAN adapter lost"):
            for _ in range(3):  # the first send may still be buffered by the pty
                await bms.snapshot(["pack"])
    finally:
        await bms.aclose()
