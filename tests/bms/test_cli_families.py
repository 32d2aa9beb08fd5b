"""read / set / probe / simulate with every family, and bad port URLs, through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from trackingbms.cli import app
from trackingbms.sim import PackConfig, Quirks, SimulatedPack

from .test_cli import sim_in_thread

runner = CliRunner()
CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]


def pack(protocol: str, *, board: int = 1, cells: int = 8) -> SimulatedPack:
    return SimulatedPack(
        PackConfig(cells=cells, sensors=2, seed=cells),
        Quirks(protocol=protocol, board=board, latency_s=0.005, baud=0),
    )


@pytest.mark.parametrize("family", ["d2", "p81"])
def test_read_json_with_a_family(family: str) -> None:
    with sim_in_thread(pack(family, cells=9)) as url:
        result = runner.invoke(app, ["read", url, "--family", family, "--json"])
    assert result.exit_code == 0, result.output
    sample = json.loads(result.stdout)
    assert len(sample["cells_mv"]) == 9 and sample["source"] == f"{family}-rs485"


def test_several_0x81_boards_on_one_bus_each_read_by_board_and_listed_by_probe() -> None:
    with sim_in_thread([pack("p81", board=1, cells=8), pack("p81", board=3, cells=12)]) as url:
        result = runner.invoke(app, ["read", url, "--family", "p81", "--board", "3", "--json"])
        assert result.exit_code == 0, result.output
        assert len(json.loads(result.stdout)["cells_mv"]) == 12
        result = runner.invoke(app, ["probe", url, "--json", "--turnaround", "0.3"])
        assert result.exit_code == 0, result.output
        found = [json.loads(line) for line in result.stdout.splitlines()]
    assert found == [
        {"family": "p81", "board": 1, "address": "0x81", "cells": 8},
        {"family": "p81", "board": 3, "address": "0x83", "cells": 12},
    ]


@pytest.mark.parametrize(
    ("family", "board", "said"), [("d2", 1, "d2 answered at 0xD2"), ("p81", 2, "p81 answered at 0x82")]
)
def test_auto_finds_the_family_and_board(family: str, board: int, said: str) -> None:
    with sim_in_thread(pack(family, board=board, cells=10)) as url:
        result = runner.invoke(app, ["read", url, "--family", "auto", "--json"])
    assert result.exit_code == 0, result.output
    assert said in result.stderr
    assert len(json.loads(result.stdout)["cells_mv"]) == 10


def test_set_on_d2_writes_and_reads_back() -> None:
    sim = pack("d2")
    with sim_in_thread(sim) as url:
        result = runner.invoke(
            app, ["set", url, "--family", "d2", "--discharge-mos", "off", "--soc", "41", "--yes"]
        )
        assert result.exit_code == 0, result.output
    assert sim.battery.discharge_mos is False and sim.battery.bms_soc_pct == pytest.approx(41.0, abs=0.05)
    assert "Discharge MOSFET" in result.stdout and "OFF" in result.stdout


def test_set_soc_on_0x81_says_it_cannot() -> None:
    with sim_in_thread(pack("p81")) as url:
        result = runner.invoke(app, ["set", url, "--family", "p81", "--soc", "41", "--yes"])
    assert result.exit_code == 1 and "no documented SOC register" in result.stderr


@pytest.mark.parametrize(
    ("port", "words"),
    [
        ("tcp://localhost:notaport", "'notaport' is not a port number"),
        ("tcp://127.0.0.1:96O1", "'96O1' is not a port number"),
        ("tcp://localhost", "expected tcp://host:port"),
        ("udp://1.2.3.4:5", "unsupported port 'udp://1.2.3.4:5'"),
        ("", "no port given"),
    ],
)
def test_bad_port_urls_are_one_or_two_lines_never_a_traceback(port: str, words: str) -> None:
    proc = subprocess.run([*CLI, "read", port], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr and 1 <= len(proc.stderr.strip().splitlines()) <= 2


def test_unknown_family_is_a_usage_error() -> None:
    result = runner.invoke(app, ["read", "tcp://127.0.0.1:1", "--family", "x9"])
    assert result.exit_code == 2 and "unknown family 'x9'" in result.stderr


def _start_simulate(*args: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [*CLI, "simulate", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    want = int(args[args.index("--packs") + 1]) if "--packs" in args else 1
    lines: list[list[str]] = []
    while len(lines) < want:
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else "simulate exited"
        if line.startswith("sim-"):
            lines.append(line.split())
    return proc, [ln[1] for ln in lines]


@pytest.mark.parametrize(("protocol", "wire"), [("d2", "serial"), ("p81", "tcp")])
def test_simulate_a_protocol_on_a_wire_then_read_it(protocol: str, wire: str) -> None:
    extra: list[Any] = ["--bus", "--packs", "2"] if protocol == "p81" else []
    proc, ports = _start_simulate("--protocol", protocol, "--wire", wire, "--cells", "6", *extra)
    try:
        args = ["read", ports[-1], "--family", protocol, "--json"] + (["--board", "2"] if extra else [])
        result = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert len(json.loads(result.stdout)["cells_mv"]) == 6
    finally:
        proc.terminate()
        proc.wait(20)


def test_simulate_refuses_several_d2_boards_on_one_bus() -> None:
    result = runner.invoke(app, ["simulate", "--protocol", "d2", "--bus", "--packs", "2"])
    assert result.exit_code == 2 and "one per bus" in result.output
