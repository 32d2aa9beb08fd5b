"""``trackingbms demo`` as a user runs it: starts, prints the URL and login, stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]
#: readiness deadline for a loaded CI machine (not a speed assertion)
START_DEADLINE_S = 90.0


def _lines(stream: object) -> queue.Queue[str | None]:
    q: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


Lines = queue.Queue[str | None]


def _start(data_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str], Lines]:
    proc = subprocess.Popen(
        [*CLI, "demo", "--port", "0", "--data-dir", str(data_dir), "--speed", "120", "--history-hours", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out = _lines(proc.stdout)
    seen: list[str] = []
    fields: dict[str, str] = {}
    try:
        while True:
            line = out.get(timeout=START_DEADLINE_S)
            if line is None:
                pytest.fail(f"demo exited early ({proc.wait()}): {''.join(seen)}{proc.stderr.read()}")
            seen.append(line)
            key, sep, value = line.strip().partition(":")
            if sep and key in ("Dashboard", "Email", "Password"):
                fields[key] = value.strip()
            if "Press Ctrl-C" in line:
                return proc, fields, out
    except queue.Empty:
        proc.kill()
        pytest.fail(f"demo did not report ready within {START_DEADLINE_S:g} s: {''.join(seen)}")


def _interrupt(proc: subprocess.Popen[str], out: Lines) -> tuple[int, str, str]:
    """Ctrl-C; then the exit code, the rest of stdout (a thread reads it), and stderr."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("demo did not stop on Ctrl-C")
    rest: list[str] = []
    while (line := out.get(timeout=10)) is not None:
        rest.append(line)
    return proc.returncode, "".join(rest), proc.stderr.read() if proc.stderr else ""


def test_demo_prints_login_serves_dashboard_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo-data"
    proc, fields, out_q = _start(data_dir)
    try:
        url = fields["Dashboard"]
        assert url.startswith("http://127.0.0.1:")
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and "TrackingBMS" in page.text
        login = httpx.post(
            url + "api/v1/auth/login",
            json={"email": fields["Email"], "password": fields["Password"]},
            timeout=30,
        )
        assert login.status_code == 200, login.text
    finally:
        code, out, err = _interrupt(proc, out_q)
    assert code == 0, err
    assert "Traceback" not in err and "Traceback" not in out, err
    assert "Stopped." in out
    assert (data_dir / "trackingbms.db").exists() or any(data_dir.glob("*.db")), (
        "the data dir keeps the database"
    )

    # a second run on the same data dir reuses the tenant and the login
    proc, fields2, out_q = _start(data_dir)
    try:
        login = httpx.post(
            fields2["Dashboard"] + "api/v1/auth/login",
            json={"email": fields["Email"], "password": fields["Password"]},
            timeout=30,
        )
        assert login.status_code == 200, login.text
    finally:
        code, _, err = _interrupt(proc, out_q)
    assert code == 0 and "Traceback" not in err, err


def test_demo_on_a_taken_port_says_so_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CLI, "demo", "--port", str(port), "--data-dir", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    # the error is all it says: nothing had started, so no "Stopping…" before it
    assert result.stderr.strip().splitlines() == [
        f"trackingbms demo: cannot listen on 127.0.0.1:{port}: Address already in use (try another --port)"
    ], result.stderr


@pytest.mark.parametrize(
    ("command", "env"), [("demo", {}), ("server", {}), ("server", {"TRACKINGBMS_PORT": "99999"})]
)
def test_a_port_out_of_range_is_refused_in_a_line(tmp_path: Path, command: str, env: dict[str, str]) -> None:
    """Not a bind() traceback (demo) nor a silent bind to port % 65536 (uvicorn: 99999 listened on 34463)."""
    args = [*CLI, command, "--data-dir", str(tmp_path / "d")]
    if not env:
        args += ["--port", "99999"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "65535" in result.stderr, result.stderr
