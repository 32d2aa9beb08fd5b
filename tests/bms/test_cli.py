"""The read / set / decode commands, through Typer's runner (decode) and against the simulator."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from typer.testing import CliRunner

from trackingbms.cli import app
from trackingbms.sim import serve_tcp

from .conftest import make_pack

runner = CliRunner()

BROKEN_BURST = (
    "a5019508010d290d330d329089a5019508020d2f0d2e0d33908ca5019508030d330d330d339096"
    "a5019508040d330d320d2f9092a5019508050d300d34a5019508060d320d340d319097a5019008021c000076560286b0"
)


def _decode(*args: str, stdin: str | None = None) -> tuple[int, list[dict[str, Any]], str]:
    result = runner.invoke(app, ["decode", *args], input=stdin)
    objs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, objs, result.stderr


def test_decode_spaced_and_unspaced_hex() -> None:
    code, objs, _ = _decode("A5 01 90 08 02 3A 00 00 75 30 01 ED 0D", "a50191080d000f0cfe010378e1")
    assert code == 0
    assert objs[0] == {
        "data_id": "0x90",
        "voltage_v": 57.0,
        "acquisition_voltage_v": 0.0,
        "current_raw": 30000,
        "current_a": 0.0,
        "soc_pct": 49.3,
    }
    assert objs[1]["data_id"] == "0x91" and objs[1]["max_cell_mv"] == 3328
    assert "cells_mv" not in objs[0]  # fields a frame does not carry are absent


def test_decode_stdin_and_status_sets_counts_for_later_multiframe() -> None:
    # 0x94 says 2 cells / 1 sensor; the 0x95 frame carries 3 slots, the third is stale
    status = "a5019408020100000000034088"
    cells = "a501950801 0cfd0cfe0cfe40 a1"
    code, objs, err = _decode("-", stdin=f"{status}\n{cells.replace(' ', '')}\n")
    assert code == 0, err
    assert objs[0]["cell_count"] == 2
    assert objs[1] == {"data_id": "0x95", "frames": 1, "cells_mv": [3325, 3326]}


def test_decode_explicit_counts_and_text_replies() -> None:
    code, objs, _ = _decode(BROKEN_BURST, "--cells", "16")
    assert code == 2  # the damaged frame is reported, the rest is still printed
    assert [o["data_id"] for o in objs] == ["0x95", "0x90"]
    assert objs[0]["missing_frames"] == [5] and len(objs[0]["cells_mv"]) == 16

    def frame(did: int, payload: bytes) -> str:
        body = bytes([0xA5, 1, did, 8]) + payload
        return (body + bytes([sum(body) & 0xFF])).hex()

    hw = b"DL-BMS-16S-100"
    text = "".join(frame(0x63, bytes([i + 1]) + hw[7 * i : 7 * i + 7]) for i in range(2))
    code, objs, _ = _decode(text)
    assert code == 0 and objs == [{"data_id": "0x63", "frames": 2, "hardware_version": "DL-BMS-16S-100"}]


def test_decode_undecodable_input_names_offset_and_reason() -> None:
    code, objs, err = _decode(BROKEN_BURST)
    assert code == 2 and "byte offset 52" in err and "truncated" in err
    code, objs, err = _decode("a5 01 90 08 zz")
    assert code == 2 and "not a hex digit" in err and objs == []
    code, objs, err = _decode("a5019008023a0000753001ed0e")
    assert code == 2 and "byte offset 0" in err and "bad checksum" in err
    code, objs, err = _decode("a5019008023a00")
    assert code == 2 and "truncated frame at end of input" in err
    code, objs, err = _decode("d203020001fc56")  # a D2 Modbus reply: decoded as D2
    assert code == 0 and objs[0]["protocol"] == "d2" and objs[0]["values"] == [1]


@contextmanager
def sim_in_thread(pack: Any) -> Iterator[str]:
    """A simulated pack on TCP served from its own thread (the CLI runs its own event loop)."""
    loop = asyncio.new_event_loop()
    box: dict[str, Any] = {}

    async def start() -> None:
        box["ep"] = await serve_tcp(pack, host="127.0.0.1", port=0)

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield box["ep"].url
    finally:
        asyncio.run_coroutine_threadsafe(box["ep"].close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def sim_url() -> Iterator[str]:
    with sim_in_thread(make_pack(cells=8, sensors=2)) as url:
        yield url


def test_no_reply_is_explained_with_the_other_address() -> None:
    with sim_in_thread(make_pack(hosts="0x80")) as url:
        result = runner.invoke(app, ["read", url, "--retries", "0"])
        assert result.exit_code == 1
        assert "no reply from BMS at address 0x40 within" in result.stderr
        assert "try --address 0x80" in result.stderr
        result = runner.invoke(app, ["read", url, "--address", "0x80", "--json"])
        assert result.exit_code == 0 and json.loads(result.stdout)["cells_mv"]


def test_read_json_and_table(sim_url: str) -> None:
    result = runner.invoke(app, ["read", sim_url, "--json"])
    assert result.exit_code == 0, result.output
    sample = json.loads(result.stdout)
    assert len(sample["cells_mv"]) == 8 and len(sample["temps_c"]) == 2 and sample["faults"] == []
    assert "errors" not in sample
    result = runner.invoke(app, ["read", sim_url])
    assert result.exit_code == 0, result.output
    assert "Cells" in result.stdout and "Δ" in result.stdout and "Faults: none" in result.stdout


def test_set_asks_then_writes_and_shows_state(sim_url: str) -> None:
    result = runner.invoke(app, ["set", sim_url, "--charge-mos", "off"], input="n\n")
    assert result.exit_code == 1 and "nothing written" in result.stderr
    result = runner.invoke(app, ["set", sim_url, "--charge-mos", "off", "--soc", "55.5", "--yes"])
    assert result.exit_code == 0, result.output
    assert "Charge MOSFET" in result.stdout and "OFF" in result.stdout and "55.5 %" in result.stdout
    sample = json.loads(runner.invoke(app, ["read", sim_url, "--json"]).stdout)
    assert sample["charge_mos"] is False and sample["soc_pct"] == 55.5


def test_user_facing_errors_are_explained() -> None:
    result = runner.invoke(app, ["read", "/dev/ttyNOPE0"])
    assert result.exit_code == 1 and "/dev/ttyNOPE0 does not exist" in result.stderr
    port = _closed_port()
    result = runner.invoke(app, ["read", f"tcp://127.0.0.1:{port}"])
    assert result.exit_code == 1 and f"cannot connect to tcp://127.0.0.1:{port}" in result.stderr


def _closed_port() -> int:
    """A local TCP port nobody listens on (just released by us)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    for cmd in ("read", "watch", "set", "decode"):
        assert cmd in result.stdout


def test_watch_refreshes_until_ctrl_c(sim_url: str) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from trackingbms.cli import main; main()",
            "watch",
            sim_url,
            "--interval",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = ""
        assert proc.stdout is not None
        while "Faults" not in seen:  # the first full table is on screen
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "watch exited"
            seen += line
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped" in out
