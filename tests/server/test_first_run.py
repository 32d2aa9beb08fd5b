"""First-run mistakes with the real command line (issue 9, items 11-13): a database that is not there, a
PostgreSQL that is not running, a driver that is not installed each get one or two lines, not a traceback;
the server and the admin commands say which database they use (password hidden)."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def assert_short_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if not ln.startswith("database: ")]
    assert 1 <= len(lines) <= 2, r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


@pytest.mark.postgres
def test_missing_postgres_database_is_one_or_two_lines(postgres_url: str) -> None:
    url = postgres_url.rsplit("/", 1)[0] + "/tbms_no_such_db"
    for args in (["server", "migrate"], ["admin", "create-tenant", "acme"], ["server", "--port", "0"]):
        r = run(*args, "--database-url", url)
        assert_short_error(r, 'db "tbms_no_such_db"', "does not exist", 'CREATE DATABASE "tbms_no_such_db"')


def test_postgres_not_running_is_one_or_two_lines() -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/x"
    for args in (["server", "migrate"], ["admin", "create-tenant", "acme"]):
        assert_short_error(run(*args, "--database-url", url), "connection refused", "PostgreSQL running")


def test_missing_driver_says_what_to_install() -> None:
    schemes = {
        "psycopg": "postgresql+psycopg",
        "pg8000": "postgresql+pg8000",
        "psycopg2": "postgresql+psycopg2",
    }
    missing = [m for m in schemes if importlib.util.find_spec(m) is None]
    if not missing:
        pytest.skip("every PostgreSQL driver tried is installed here")
    url = f"{schemes[missing[0]]}://postgres@127.0.0.1/x"
    assert_short_error(run("server", "migrate", "--database-url", url), "not installed", "pip install")


def test_server_and_admin_name_their_database_without_the_password(tmp_path: Path) -> None:
    r = run("admin", "create-tenant", "acme", "--data-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert f"database: SQLite {tmp_path.resolve() / 'trackingbms.db'}" in r.stderr
    assert "(new: none there yet, creating it)" in r.stderr  # the first command creates the file
    r = run("admin", "create-site", "depot", "-t", "acme", "--data-dir", str(tmp_path))
    assert r.returncode == 0 and "new:" not in r.stderr, r.stderr
    # a mistyped data dir: the line says it is a new database before the "no tenant" error
    r = run("admin", "create-site", "depot", "-t", "acme", "--data-dir", str(tmp_path / "typo"))
    assert r.returncode == 1 and "(new: none there yet" in r.stderr, r.stderr
    assert "no tenant 'acme'" in r.stderr
    url = f"postgresql://postgres:hunter2@127.0.0.1:{closed_port()}/fleet"
    r = run("admin", "create-tenant", "acme", "--database-url", url)
    assert 'database: PostgreSQL db "fleet" on 127.0.0.1:' in r.stderr and "as postgres" in r.stderr
    assert "hunter2" not in r.stdout + r.stderr
    # the server names it before anything else (it then fails to connect here: nothing listens)
    r = run("server", "--database-url", url)
    assert r.stderr.startswith('database: PostgreSQL db "fleet"') and "hunter2" not in r.stderr


def test_version_and_server_help_defaults() -> None:
    from trackingbms import __version__

    r = run("--version")
    assert (r.returncode, r.stdout.strip()) == (0, __version__)
    r = run("server", "--help")
    assert r.returncode == 0 and "127.0.0.1" in r.stdout and "8000" in r.stdout
