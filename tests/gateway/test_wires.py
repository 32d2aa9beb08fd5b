"""The gateway reads BMS over CAN and over Bluetooth LE and their samples reach the server: two legacy
A5-CAN boards sharing one CAN bus (a simulated slcan USB adapter on a pty), an H/K/M/S board broadcasting
on another, an A5 module and a D2 module over BLE (bumble peripherals on virtual controllers, reached by
the gateway's own bumble host over HCI). Each BMS is its own battery with its own source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .harness import gateway_config, wait_for

pytest.importorskip("can", reason="python-can is not installed (pip install 'trackingbms[can]')")
pytest.importorskip("bumble", reason="bumble is not installed (pip install 'trackingbms[ble]')")

#: battery → (family, board, cells, source); distinct cell counts show a reading landed on the right battery
LAYOUT: dict[str, tuple[str, int, int, str]] = {
    "can-1": ("a5-can", 1, 8, "a5-can"),
    "can-2": ("a5-can", 2, 9, "a5-can"),
    "hkms-1": ("hkms-can", 1, 10, "hkms-can"),
    "ble-a5": ("a5", 1, 11, "a5-ble"),
    "ble-d2": ("d2", 1, 12, "d2-ble"),
}


def _serve(loop_thread: Any) -> tuple[dict[str, str], list[Any]]:
    from trackingbms.sim import PackConfig, Quirks, SimulatedPack
    from trackingbms.sim.ble import serve_ble
    from trackingbms.sim.can import serve_slcan_pty

    def pack(bid: str) -> SimulatedPack:
        family, board, cells, _ = LAYOUT[bid]
        return SimulatedPack(
            PackConfig(pack_id=bid, cells=cells, sensors=2, seed=cells, scenario="idle"),
            Quirks(protocol="d2" if family == "d2" else "a5", board=board, latency_s=0.005, baud=0),
        )

    can_bus = loop_thread.run(serve_slcan_pty([pack("can-1"), pack("can-2")]))
    hkms = loop_thread.run(serve_slcan_pty([pack("hkms-1")], protocol="hkms", broadcast_interval_s=0.3))
    ble_a5 = loop_thread.run(serve_ble(pack("ble-a5"), address="C0:DA:17:00:00:01"))
    ble_d2 = loop_thread.run(serve_ble(pack("ble-d2"), address="C0:DA:17:00:00:02"))
    urls = {
        "can-1": can_bus.url,
        "can-2": can_bus.url,
        "hkms-1": hkms.url,
        "ble-a5": ble_a5.url,
        "ble-d2": ble_d2.url,
    }
    return urls, [can_bus, hkms, ble_a5, ble_d2]


@pytest.mark.slow
def test_can_and_ble_batteries_reach_the_server(tmp_path: Path, loop_thread, server, gateway) -> None:
    urls, endpoints = _serve(loop_thread)
    try:
        srv = server(list(LAYOUT))
        bms: list[dict[str, Any]] = []
        for bid, (family, board, _, _) in LAYOUT.items():
            entry: dict[str, Any] = {
                "battery_id": bid,
                "port": urls[bid],
                "family": family,
                "board": board,
                "poll_interval_s": 0.5,
                "cadences_s": {"cells": 0},
                "reconnect_max_s": 1.0,
            }
            bms.append(entry)
        gw = gateway(
            gateway_config(srv.device_token, tmp_path / "gw", [{"name": "lan", "url": srv.url}], bms)
        )
        gw.start()

        def rows(bid: str) -> list[dict[str, str]]:
            return [r for r in srv.export(bid) if r.get("cell_1_mv")]

        for bid, (_, _, cells, source) in LAYOUT.items():
            got = wait_for(f"full samples of {bid} at the server", lambda bid=bid: rows(bid), timeout_s=120)
            row = got[-1]
            values = [v for k, v in row.items() if k.startswith("cell_") and k.endswith("_mv") and v]
            assert len(values) == cells, f"{bid}: a reading of another board landed here"
            assert all(2000 < int(v) < 4500 for v in values)
            assert row["source"] == source
        state = {b["battery_id"]: b for b in gw.state()["batteries"]}
        for bid in LAYOUT:
            assert state[bid]["link_state"] in ("ok", "degraded"), state[bid]
        assert "Traceback" not in gw.log()
        assert gw.stop() == 0
    finally:
        for ep in endpoints:
            loop_thread.run(ep.close())
