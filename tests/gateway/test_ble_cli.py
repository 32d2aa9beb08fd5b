"""``trackingbms direct ble://…`` as a user runs it: a separate process on its own virtual controller (the
HCI over TCP a USB dongle would be), against a running gateway's Bluetooth service on the same radio."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from .harness import free_port
from .test_ble_service import gateway_config, until

pytestmark = pytest.mark.usefixtures("need_bumble")
CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]


@pytest.fixture
def need_bumble() -> None:
    pytest.importorskip("bumble", reason="bumble is not installed (pip install 'trackingbms[ble]')")


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, "direct", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_direct_prints_live_readings_history_and_configures(tmp_path: Path) -> None:
    from trackingbms.gateway.app import Gateway
    from trackingbms.sim import PackConfig, Quirks, SimulatedPack, serve_tcp

    pack = SimulatedPack(PackConfig(pack_id="pack-1", cells=16, sensors=4, seed=5, scenario="idle"), Quirks())
    endpoint = await serve_tcp(pack, "127.0.0.1", 0)
    state_dir = tmp_path / "state"
    # transport = "virtual:HOST:PORT": the gateway's own virtual radio (the README's way to try it without
    # Bluetooth hardware); the CLI reaches it over HCI on TCP, as it would a dongle
    port = free_port()
    gw = Gateway(gateway_config(state_dir, endpoint.port, f"virtual:127.0.0.1:{port}", tmp_path / "wifi.txt"))
    stop = asyncio.Event()
    running = asyncio.create_task(gw.run(stop))
    url = f"ble://TrackingBMS-cabin?hci=tcp-client:127.0.0.1:{port}"
    try:
        await until(
            "a first full sample", lambda: (gw.state.batteries["pack-1"].latest or {}).get("cells_mv")
        )
        rc, out, err = await run_cli(url, "--count", "2", "--json")
        assert rc == 0, err
        live = [json.loads(line) for line in out.splitlines()]
        assert len(live) == 2 and all(s["battery_id"] == "pack-1" and s["via"] == "ble" for s in live)
        assert live[-1]["cells_mv"] == pack.battery.cells_mv()

        rc, out, err = await run_cli(url, "--history", "--json")
        assert rc == 0, err
        seqs = [json.loads(line)["seq"] for line in out.splitlines()]
        stored = gw.queue.seqs_of  # read on the queue's thread
        assert seqs == [s for s in await gw.queue.run(stored, "pack-1") if s <= seqs[-1]]

        rc, out, err = await run_cli(url, "--set-poll", "3", "--pairing-code", "not-it")
        assert rc == 1 and "wrong pairing code" in err and len(err.strip().splitlines()) == 1
        assert gw.state.batteries["pack-1"].poll_interval_s == 0.2
        code = (state_dir / "ble-pairing-code").read_text().strip()
        rc, out, err = await run_cli(url, "--set-poll", "3", "--pairing-code", code)
        assert rc == 0, err
        assert (
            "poll interval of pack-1 now 3 s" in out and gw.state.batteries["pack-1"].poll_interval_s == 3.0
        )

        rc, out, err = await run_cli(url, "--count", "1")  # the human view: facts, then readings
        assert rc == 0 and "gateway cabin" in out and "pack-1  seq " in out and " mV" in out
        rc, out, err = await run_cli(url, "--info")
        assert rc == 0 and "gateway cabin" in out and "pack-1: link ok, every 3 s" in out
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
        await endpoint.close()


async def test_direct_errors_are_one_line(tmp_path: Path) -> None:
    rc, _, err = await run_cli("tcp://127.0.0.1:1")
    assert rc == 2 and "ble://" in err and len(err.strip().splitlines()) == 1
    rc, _, err = await run_cli("ble://TrackingBMS-none?hci=tcp-client:127.0.0.1:9&timeout=2")
    assert rc == 1 and "cannot open the Bluetooth controller" in err and len(err.strip().splitlines()) == 1
