"""``trackingbms simulate`` as a user runs it: a real process, real ports, Ctrl-C, clear errors."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trackingbms.cli.app import app
from trackingbms.daly.a5 import Frame
from trackingbms.daly.records import decode_frames

from .conftest import IO_TIMEOUT_S, request

CMD = [sys.executable, "-c", "from trackingbms.cli import main; main()", "simulate"]


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CMD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
    )


def read_lines(proc: subprocess.Popen[str], n: int) -> list[str]:
    lines = []
    assert proc.stdout is not None
    for _ in range(n):
        line = proc.stdout.readline()
        assert line, f"simulate exited early: {proc.stderr.read() if proc.stderr else ''}"
        lines.append(line.rstrip("\n"))
    return lines


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err


async def tcp_request(port: int, data_id: int, n: int = 13) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request(data_id))
        return await asyncio.wait_for(reader.readexactly(n), IO_TIMEOUT_S)
    finally:
        writer.close()


async def http_get(port: int, path: str) -> dict:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), IO_TIMEOUT_S)
    writer.close()
    return json.loads(data.partition(b"\r\n\r\n")[2])


async def test_simulate_serves_packs_and_truth_then_stops_cleanly_on_ctrl_c() -> None:
    proc = start(
        "--packs", "3", "--cells", "16", "--scenario", "solar-day", "--speed", "60",
        "--faults", "loss=0.01,sleep_after=3600,latency=0,baud=0", "--truth-port", "0",
    )  # fmt: skip
    try:
        lines = await asyncio.to_thread(read_lines, proc, 4)
        ids = [line.split()[0] for line in lines[:3]]
        assert ids == ["sim-1", "sim-2", "sim-3"]
        ports = [int(line.split()[1].rsplit(":", 1)[1]) for line in lines[:3]]
        assert lines[3].startswith("truth  http://127.0.0.1:")
        truth_port = int(lines[3].rsplit(":", 1)[1].split("/")[0])
        raw = await tcp_request(ports[1], 0x90)
        status = decode_frames([Frame.from_bytes(raw)])
        assert 40 < status.voltage_v < 60 and 0 <= status.soc_pct <= 100
        truth = await http_get(truth_port, "/truth")
        assert set(truth["packs"]) == {"sim-1", "sim-2", "sim-3"}
        assert truth["packs"]["sim-2"]["wire"]["replies"] == 1
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert "Traceback" not in err


def test_simulate_pty_with_link(tmp_path: Path) -> None:
    link = tmp_path / "daly"
    proc = start("--packs", "2", "--pty", "--link", str(link) + "{n}", "--faults", "latency=0,baud=0")
    try:
        lines = read_lines(proc, 2)
        assert lines[0].startswith(f"sim-1  {link}1 -> /dev/")
        assert os.path.islink(f"{link}2")
    finally:
        code, err = stop(proc)
    assert code == 0 and "Traceback" not in err
    assert not os.path.lexists(f"{link}1")


def test_simulate_bus_prints_board_addresses(tmp_path: Path) -> None:
    proc = start("--packs", "2", "--bus", "--truth-file", str(tmp_path / "t.json"))
    try:
        lines = read_lines(proc, 2)
        assert "board 2 (address 0x41)" in lines[1]
        assert lines[0].split()[1] == lines[1].split()[1]  # one endpoint for the shared line
    finally:
        code, err = stop(proc)
    assert code == 0 and "Traceback" not in err
    assert set(json.loads((tmp_path / "t.json").read_text())["packs"]) == {"sim-1", "sim-2"}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--faults", "los=1"], "unknown fault 'los'"),
        (["--faults", "loss=7"], "probability"),
        (["--scenario", "moon"], "unknown scenario"),
        (["--scenario", "schedule"], "needs a schedule"),
        (["--cells", "60"], "--cells"),
        (["--chemistry", "lead"], "chemistry"),
        (["--link", "/tmp/x"], "--link needs --pty"),
        (["--pty", "--tcp-port-base", "4000"], "not both"),
        (["--packs", "17", "--bus"], "at most 16"),
        (["--speed", "0"], "speed"),
    ],
)
def test_bad_options_are_clear_errors_with_exit_code_2(args: list[str], words: str) -> None:
    result = CliRunner().invoke(app, ["simulate", *args], env={"NO_COLOR": "1", "COLUMNS": "200"})
    assert result.exit_code == 2
    assert words in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_port_in_use_is_a_clear_error() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [*CMD, "--tcp-port-base", str(port)], capture_output=True, text=True, timeout=60
        )
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in proc.stderr
    assert "Traceback" not in proc.stderr
