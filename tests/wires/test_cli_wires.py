"""The CLI over CAN and BLE: `simulate --wire can|ble` in its own process, `read` / `probe` against it,
and `decode` of candump text."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from typer.testing import CliRunner

from trackingbms.cli import app

runner = CliRunner()
CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]


@contextmanager
def simulator(*args: str, ports: int = 1) -> Iterator[list[str]]:
    """``trackingbms simulate ARGS`` in another process; yields the ports it printed."""
    proc = subprocess.Popen(
        [*CLI, "simulate", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        found: list[str] = []
        assert proc.stdout is not None
        while len(found) < ports:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"simulate exited: {proc.stderr.read() if proc.stderr else ''}")
            found.append(line.split()[1])
        yield found
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def test_read_and_probe_a5_can_boards_through_an_slcan_adapter_in_another_process() -> None:
    pytest.importorskip("can")
    with simulator("--wire", "can", "--packs", "2", "--cells", "9", ports=2) as (url, same):
        assert url == same and url.startswith("can://slcan/dev/")
        read = cli("read", url, "--board", "2", "--json")
        probe = cli("probe", url, "--json", "--turnaround", "1.0")  # generous: a loaded machine
    assert read.returncode == 0, read.stderr
    sample = json.loads(read.stdout)
    assert sample["source"] == "a5-can" and len(sample["cells_mv"]) == 9  # --family a5 on CAN = a5-can
    assert probe.returncode == 0, probe.stderr
    found = [json.loads(line) for line in probe.stdout.splitlines()]
    assert [(f["family"], f["board"], f["cells"]) for f in found] == [("a5-can", 1, 9), ("a5-can", 2, 9)]


def test_hkms_broadcast_read_and_probed() -> None:
    pytest.importorskip("can")
    with simulator("--wire", "can", "--protocol", "hkms", "--broadcast-interval", "0.2", "--cells", "7") as (
        url,
    ):
        read = cli("read", url, "--family", "hkms-can", "--json")
        probe = cli("probe", url, "--turnaround", "1.0")
    assert read.returncode == 0, read.stderr
    sample = json.loads(read.stdout)
    assert sample["source"] == "hkms-can" and len(sample["cells_mv"]) == 7
    assert "hkms-can board  1" in probe.stdout


def test_wrong_family_for_the_port_is_a_usage_error() -> None:
    result = runner.invoke(app, ["read", "tcp://127.0.0.1:9", "--family", "a5-can"])
    assert result.exit_code == 2 and "needs a CAN port" in result.stderr
    result = runner.invoke(app, ["read", "can://nosuchcan/x"])
    assert result.exit_code == 1 and result.stderr.count("\n") <= 2 and "Traceback" not in result.output


@pytest.mark.slow
def test_read_a5_and_d2_over_ble_in_another_process() -> None:
    pytest.importorskip("bumble")
    with simulator("--wire", "ble", "--cells", "8") as (a5_url,):
        a5 = cli("read", a5_url, "--json")  # A5 over BLE: host 0x80 by default
    with simulator("--wire", "ble", "--protocol", "d2", "--cells", "10") as (d2_url,):
        d2 = cli("read", d2_url, "--family", "d2", "--json")
    assert a5.returncode == 0, a5.stderr
    assert json.loads(a5.stdout)["source"] == "a5-ble" and len(json.loads(a5.stdout)["cells_mv"]) == 8
    assert d2.returncode == 0, d2.stderr
    assert json.loads(d2.stdout)["source"] == "d2-ble" and len(json.loads(d2.stdout)["cells_mv"]) == 10


def test_decode_candump() -> None:
    text = "\n".join(
        [
            "(1700000000.000000) can0 18940140#0000000000000000",  # our request to board 1
            "can0  18944001   [8]  10 01 00 00 00 00 03 40",  # 0x94: 16 cells, 1 sensor
            "18904001#023A0000753001ED",
            "18954001#010CFD0CFE0CFE40",
            "18954001#020CFE0CFE0CFE40",
        ]
    )
    result = runner.invoke(app, ["decode", "-"], input=text)
    assert result.exit_code == 0, result.output
    objs = [json.loads(line) for line in result.stdout.splitlines()]
    assert objs[0] == {
        "wire": "can", "can_id": "0x18940140", "data_id": "0x94", "direction": "request",
        "host_address": "0x40", "board": 1,
    }  # fmt: skip
    assert objs[1]["cell_count"] == 16 and objs[2]["voltage_v"] == 57.0 and objs[2]["soc_pct"] == 49.3
    assert objs[3]["data_id"] == "0x95" and objs[3]["missing_frames"] == [3, 4, 5, 6]  # one burst, 2 of 6 in
    bad = runner.invoke(app, ["decode", "18904001#02 12345678#00"])
    assert bad.exit_code == 2 and "not a Daly CAN frame" in bad.stderr
    bad = runner.invoke(app, ["decode", "18904001#zz"])
    assert bad.exit_code == 2 and "candump" in bad.stderr
