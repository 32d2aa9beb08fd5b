"""Every family through the gateway to the server: D2 on TCP, two 0x81 boards on one bus, two A5 boards on
one bus, an A5 board on a pty; each BMS its own battery with its own source. A BMS port that cannot be
opened is logged at once with the port and the reason, and the gateway keeps going."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from .harness import gateway_config, wait_for

#: battery → (protocol, board, cells): distinct cell counts show a reading landed on the right battery
LAYOUT = {
    "d2-1": ("d2", 1, 7),
    "p81-1": ("p81", 1, 9),
    "p81-2": ("p81", 2, 10),
    "a5-1": ("a5", 1, 11),
    "a5-2": ("a5", 2, 12),
    "a5-pty": ("a5", 1, 13),
}
SOURCES = {
    "d2-1": "d2-rs485",
    "p81-1": "p81-rs485",
    "p81-2": "p81-rs485",
    "a5-1": "a5-uart",
    "a5-pty": "a5-uart",
}
BAD_PORTS = {
    "typo": ("tcp://127.0.0.1:96O1", "'96O1' is not a port number"),
    "missing": ("/dev/ttyUSB_tbms_missing", "does not exist"),
}


def _serve(loop_thread: Any) -> tuple[dict[str, str], list[Any]]:
    from trackingbms.sim import PackConfig, Quirks, SimulatedPack, serve_pty, serve_tcp

    def pack(bid: str) -> SimulatedPack:
        proto, board, cells = LAYOUT[bid]
        return SimulatedPack(
            PackConfig(pack_id=bid, cells=cells, sensors=2, seed=cells, scenario="idle"),
            Quirks(protocol=proto, board=board, latency_s=0.005),
        )

    endpoints = [
        loop_thread.run(serve_tcp([pack("d2-1")])),
        loop_thread.run(serve_tcp([pack("p81-1"), pack("p81-2")])),
        loop_thread.run(serve_tcp([pack("a5-1"), pack("a5-2")])),
        loop_thread.run(serve_pty([pack("a5-pty")])),
    ]
    urls = {
        "d2-1": endpoints[0].url,
        "p81-1": endpoints[1].url,
        "p81-2": endpoints[1].url,
        "a5-1": endpoints[2].url,
        "a5-2": endpoints[2].url,
        "a5-pty": endpoints[3].path,
    }
    return urls, endpoints


def test_every_family_reaches_the_server_as_its_own_battery(
    tmp_path: Path, loop_thread, server, gateway
) -> None:
    urls, endpoints = _serve(loop_thread)
    try:
        srv = server([*LAYOUT, *BAD_PORTS])
        bms: list[dict[str, Any]] = []
        for bid, (proto, board, _) in LAYOUT.items():
            entry: dict[str, Any] = {
                "battery_id": bid,
                "port": urls[bid],
                "family": proto,
                "board": board,
                "poll_interval_s": 0.3,
                "cadences_s": {"cells": 0},
                "reconnect_max_s": 1.0,
            }
            if bid == "a5-2":
                entry["source"] = "a5-rs485"  # an explicit source wins over the family's default
            bms.append(entry)
        for bid, (port, _) in BAD_PORTS.items():
            bms.append({"battery_id": bid, "port": port, "reconnect_max_s": 0.5})
        gw = gateway(
            gateway_config(srv.device_token, tmp_path / "gw", [{"name": "lan", "url": srv.url}], bms)
        )
        gw.start()

        def rows(bid: str) -> list[dict[str, str]]:
            return [r for r in srv.export(bid) if r.get("cell_1_mv")]

        for bid in LAYOUT:
            got = wait_for(f"full samples of {bid} at the server", lambda bid=bid: rows(bid), timeout_s=90)
            row = got[-1]
            cells = [v for k, v in row.items() if k.startswith("cell_") and k.endswith("_mv") and v]
            assert len(cells) == LAYOUT[bid][2], f"{bid}: a reading of another board landed here"
            assert all(2000 < int(v) < 4500 for v in cells)
            assert row["source"] == SOURCES.get(bid, "a5-rs485")
        state = {b["battery_id"]: b for b in gw.state()["batteries"]}
        for bid in LAYOUT:
            assert state[bid]["link_state"] in ("ok", "degraded"), state[bid]
        log = gw.log()
        for bid, (port, reason) in BAD_PORTS.items():
            assert state[bid]["link_state"] == "disconnected"
            assert f"{bid}: cannot open {port}" in log and reason in log, log[-3000:]
            # logged once while it lasts (the gateway retried meanwhile), not on every retry
            assert log.count(f"{bid}: cannot open {port}") == 1
        assert "Traceback" not in log
        assert gw.stop() == 0
    finally:
        for ep in endpoints:
            loop_thread.run(ep.close())


def test_open_failure_is_logged_first_then_at_a_slow_rate(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    from trackingbms.gateway import poller as poller_mod
    from trackingbms.gateway.config import BmsConfig
    from trackingbms.gateway.state import GatewayState

    cfg = BmsConfig(battery_id="b1", port="tcp://127.0.0.1:1")
    state = GatewayState.__new__(GatewayState)
    changes: list[str] = []
    state.set_link_state = lambda bid, st, err=None: changes.append(f"{st}: {err}") or True  # type: ignore[method-assign]
    p = poller_mod.BmsPoller.__new__(poller_mod.BmsPoller)
    p.cfg, p.state, p._open_failed_since, p._open_failure_logged = cfg, state, None, 0.0
    now = [1000.0]
    monkeypatch.setattr(poller_mod.time, "monotonic", lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="trackingbms.gateway.poller"):
        for _ in range(10):  # retries every 10 s
            p._open_failed(ConnectionRefusedError("connection refused"))
            now[0] += 10
        assert len(caplog.records) == 1
        assert "cannot open tcp://127.0.0.1:1: connection refused" in caplog.records[0].getMessage()
        now[0] += poller_mod.OPEN_FAILURE_LOG_EVERY_S
        p._open_failed(ConnectionRefusedError("connection refused"))
    assert len(caplog.records) == 2 and "still failing" in caplog.records[1].getMessage()
    assert all(c.startswith("disconnected: cannot open") for c in changes)
