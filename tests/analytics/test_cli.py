"""``trackingbms simulate --record`` and ``trackingbms analyze`` as a user runs them: real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=600, env={**os.environ, "NO_COLOR": "1"}
    )


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("rec")
    csv_path, truth_path = d / "pack.csv", d / "truth.json"
    proc = run(
        "simulate", "--record", str(csv_path), "--duration", "2d", "--interval", "60", "--chemistry", "nmc",
        "--scenario", "ebike-ride", "--capacity-fade", "12", "--seed", "5", "--truth-file", str(truth_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "2881 samples" in proc.stdout
    return csv_path, json.loads(truth_path.read_text())["packs"]["sim-1"]


def test_record_writes_the_export_format(recording: tuple[Path, dict]) -> None:
    from trackingbms.server.store.export import csv_header

    csv_path, truth = recording
    lines = csv_path.read_text().splitlines()
    assert lines[0].split(",") == csv_header(16, 4)  # the server's own export header
    assert len(lines) == 1 + 2881
    assert lines[1].startswith("2026-06-21T00:00:00.000Z,1,sim,")
    assert truth["csv"] == str(csv_path) and truth["sim_time_s"] == 2 * 86400


def test_analyze_json_against_truth(recording: tuple[Path, dict]) -> None:
    csv_path, truth = recording
    proc = run("analyze", str(csv_path), "--capacity-ah", "100", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for key in (
        "capacity_ah",
        "soh_pct",
        "resistance_mohm",
        "soc_pct",
        "bms_soc_error_pct",
        "weak_cells",
        "cells",
    ):
        assert key in out
    assert out["soh_pct"] == pytest.approx(truth["soh_pct"], abs=3)
    assert out["soc_pct"] == pytest.approx(truth["soc_pct"], abs=3)
    assert out["weak_cells"] == []
    assert len(out["cells"]) == 16 and out["cells"][0]["cell"] == 1
    # 60 s samples: resistance cannot be told, and the output says why
    assert out["resistance_mohm"] is None and out["reasons"]["resistance_mohm"]


def test_analyze_table(recording: tuple[Path, dict]) -> None:
    proc = run("analyze", str(recording[0]))
    assert proc.returncode == 0, proc.stderr
    assert "state of health" in proc.stdout and "weak cells" in proc.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        ("a,b\n1,2\n", "no 'ts' column"),
        ("ts,seq\n2026-06-21T00:00:00Z,x\n", "line 2, column seq"),
        ("ts,seq,voltage_v\n2026-06-21T00:00:00Z,1,abc\n", "line 2, column voltage_v: could not convert"),
        ("ts,seq,voltage_v\n2026-06-21T00:00:00Z\n", "line 2: fewer fields than the header names"),
    ],
)
def test_analyze_bad_file_is_one_line(tmp_path: Path, content: str, message: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    proc = run("analyze", str(bad), "--json")
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 2


def test_analyze_missing_file(tmp_path: Path) -> None:
    proc = run("analyze", str(tmp_path / "nope.csv"))
    assert proc.returncode == 1
    assert "cannot read" in proc.stderr and "Traceback" not in proc.stderr


def test_record_bad_duration(tmp_path: Path) -> None:
    proc = run("simulate", "--record", str(tmp_path / "x.csv"), "--duration", "soon")
    assert proc.returncode == 2
    assert "30d" in proc.stderr and "Traceback" not in proc.stderr
