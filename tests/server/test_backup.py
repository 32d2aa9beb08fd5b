"""``trackingbms admin backup``: an online SQLite backup taken while the server ingests, restored by starting
a server on the copy; clear one-line errors for PostgreSQL and a missing database."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from trackingbms.server import provisioning as p
from trackingbms.server.settings import Settings

from .conftest import ServerThread, login, sample

CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120)


def serve(data_dir: Path) -> ServerThread:
    url = f"sqlite+aiosqlite:///{data_dir / 'trackingbms.db'}"
    return ServerThread(
        Settings(data_dir=data_dir, database_url=url, ingest_rate_per_s=0, ingest_burst=0)
    ).start()


async def setup(url: str) -> str:
    async with p.open_store(url) as store:
        await p.create_tenant(store, "acme")
        await p.create_site(store, "acme", "depot")
        token = (await p.provision_device(store, "acme", "gw-1"))["token"]
        await p.create_battery(store, "acme", "depot", "bk-1", device="gw-1")
        await p.create_user(store, "acme", "admin@acme.test", "admin-pass-1", "admin")
    return token


def ingest(base_url: str, token: str, seqs: range) -> None:
    body = {"samples": [sample("bk-1", s) for s in seqs]}
    r = httpx.post(f"{base_url}/api/v1/ingest", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["accepted"] == len(seqs), r.text


def test_backup_while_serving_restores_what_was_there(tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    srv = serve(live)
    try:
        token = asyncio.run(setup(f"sqlite+aiosqlite:///{live / 'trackingbms.db'}"))
        ingest(srv.base_url, token, range(1, 301))
        out = tmp_path / "backup.db"
        r = cli("admin", "backup", str(out), "--data-dir", str(live))
        assert r.returncode == 0, r.stderr
        assert "integrity ok" in r.stdout
        ingest(srv.base_url, token, range(301, 351))  # after the backup: not in it
        again = cli("admin", "backup", str(out), "--data-dir", str(live))
        assert again.returncode == 2 and "--force" in again.stderr and "Traceback" not in again.stderr
    finally:
        srv.stop()

    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy(out, restored / "trackingbms.db")
    srv = serve(restored)
    try:
        user = asyncio.run(login(srv.base_url, "admin@acme.test", "admin-pass-1"))
        r = httpx.get(
            f"{srv.base_url}/api/v1/batteries/bk-1/export.csv",
            headers={"Authorization": f"Bearer {user}"},
            params={"from": "2000-01-01T00:00:00Z"},
        )
        assert r.status_code == 200
        seqs = [int(line.split(",")[1]) for line in r.text.splitlines()[1:]]
        assert seqs == list(range(1, 301))
        ingest(
            srv.base_url, token, range(301, 302)
        )  # the restored server takes new samples (device token kept)
    finally:
        srv.stop()


def test_backup_errors_are_one_line(tmp_path: Path) -> None:
    r = cli("admin", "backup", str(tmp_path / "b.db"), "--data-dir", str(tmp_path / "nothing-here"))
    assert r.returncode == 1 and r.stderr.startswith("error: no database at") and "Traceback" not in r.stderr
    assert not (tmp_path / "nothing-here").exists()  # nothing created by looking
    r = cli("admin", "backup", str(tmp_path / "b.db"), "--database-url", "postgresql://u@127.0.0.1:1/db")
    assert r.returncode == 2 and "pg_dump" in r.stderr and "Traceback" not in r.stderr
