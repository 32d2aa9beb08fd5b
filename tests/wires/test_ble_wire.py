"""A5 over Bluetooth LE: the link's bumble backend against a simulated Daly module on a virtual
controller (real host stacks on both sides, only the radio is simulated); bleak where BlueZ exists."""

from __future__ import annotations

import pytest

from trackingbms.bms import DalyBMS
from trackingbms.links import LinkError
from trackingbms.links.ble import bluez_available, chunks, full_uuid, open_ble_link, parse_ble_url

from .conftest import make_pack

pytestmark = pytest.mark.usefixtures("need_bumble")
TURNAROUND_S = 1.0


def test_urls_and_helpers() -> None:
    assert parse_ble_url("ble://C0:DA:17:00:00:01?hci=usb:0") == ("C0:DA:17:00:00:01", {"hci": "usb:0"})
    assert parse_ble_url("ble://DL-40D63C0123") == ("DL-40D63C0123", {})
    with pytest.raises(LinkError):
        parse_ble_url("ble://")
    assert full_uuid("fff1") == "0000fff1-0000-1000-8000-00805f9b34fb"
    assert [len(c) for c in chunks(bytes(45))] == [20, 20, 5]


@pytest.mark.parametrize("layout", ["fff0", "ff00"])
async def test_a5_over_ble_reads_the_pack(layout: str) -> None:
    from trackingbms.sim.ble import serve_ble

    pack = make_pack(cells=16, sensors=4)
    ep = await serve_ble(pack, layout=layout)
    link = await open_ble_link(ep.url)
    try:
        assert link.service == layout  # type: ignore[attr-defined]
        # the app's host address: every cell frame comes back, in notifications that split frames
        bms = DalyBMS(link, address=0x80, turnaround_s=TURNAROUND_S)
        reading = await bms.snapshot()
        mos = await bms.set_mosfet("charge", False)
    finally:
        await link.close()
        await ep.close()
    assert reading.source == "a5-ble" and reading.errors is None
    assert reading.cells_mv == pack.battery.cells_mv() and len(reading.temps_c or []) == 4
    assert bms.stats.frames_bad == 0
    # 13-byte frames travelled in 20-byte notifications: the client reassembled split frames
    assert ep.notification_sizes[20] > 0 and ep.notifications < bms.stats.frames_good
    assert mos.charge_mos is False and pack.battery.charge_mos is False


async def test_wrong_address_and_dead_controller_are_one_line_errors() -> None:
    from trackingbms.sim.ble import serve_ble

    ep = await serve_ble(make_pack())
    try:
        with pytest.raises(LinkError, match="cannot connect to C0:DA:17:00:00:99"):
            await open_ble_link(f"ble://C0:DA:17:00:00:99?hci={ep.hci}&timeout=2")
    finally:
        await ep.close()
    with pytest.raises(LinkError, match="Bluetooth controller"):
        await open_ble_link(f"ble://C0:DA:17:00:00:01?hci={ep.hci}&timeout=2")


async def test_bleak_reaches_a_real_adapter() -> None:
    reason = await bluez_available()
    if reason is not None:
        pytest.skip(f"bleak needs BlueZ and an adapter: {reason}")
    # with an adapter but no Daly in range, opening an absent address is a clear error, not a traceback
    with pytest.raises(LinkError):
        await open_ble_link("ble://C0:DA:17:00:00:99?timeout=3")


async def test_without_bluez_bleak_says_so_and_names_the_dongle_alternative() -> None:
    if await bluez_available() is None:
        pytest.skip("BlueZ is available here: this checks the message where it is not")
    with pytest.raises(LinkError, match=r"Bluetooth is not available here.*hci=usb:0") as info:
        await open_ble_link("ble://C0:DA:17:00:00:99?timeout=3")
    assert "\n" not in str(info.value)


async def test_a_module_that_disconnects_is_a_link_error_not_silence() -> None:
    """The BMS's Bluetooth drops the connection: the client says so (the gateway reconnects) instead of
    calling the BMS asleep."""
    from trackingbms.bms import open_bms
    from trackingbms.sim.ble import serve_ble

    ep = await serve_ble(make_pack())
    bms = await open_bms(ep.url, "a5", turnaround_s=TURNAROUND_S, retries=0)
    try:
        assert (await bms.snapshot(["pack"])).voltage_v is not None
        await ep.close()
        with pytest.raises(LinkError, match="the BMS disconnected"):
            await bms.snapshot(["pack"])
    finally:
        await bms.aclose()
