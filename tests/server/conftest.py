"""A real server (uvicorn on 127.0.0.1, port 0, in a thread) over SQLite or PostgreSQL, and a small world
of two tenants provisioned through the provisioning API. Every test here runs once per backend."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from trackingbms.model import format_ts
from trackingbms.server import provisioning as p
from trackingbms.server.app import create_app
from trackingbms.server.guard import uvicorn_options
from trackingbms.server.settings import Settings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'server.db'}"
    return request.getfixturevalue("postgres_url")


class ServerThread:
    """uvicorn serving create_app(settings) on a free port in a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(settings), log_level="warning", lifespan="on", **uvicorn_options(settings)
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("server thread died during start (see log)")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_process(
    url: str, data_dir: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``trackingbms server`` in a subprocess on the database at ``url`` (a second process on one database,
    or one to signal / kill), ``env`` on top of this one's; → (process, base URL) once it answers."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from trackingbms.cli import main; main()", "server", "--port", str(port),
         "--database-url", url, "--data-dir", str(data_dir), "--log-level", "warning"],
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, "the server process exited during start"
        assert time.monotonic() < deadline, "the server process did not start"
        time.sleep(0.1)


@pytest.fixture
def start_server(database_url: str, tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    started: list[ServerThread] = []

    def start(**overrides: Any) -> ServerThread:
        values: dict[str, Any] = {
            "data_dir": tmp_path,
            "database_url": database_url,
            "ingest_burst": 10_000,
            "ingest_rate_per_s": 10_000.0,
            # generous, so a slow shared machine cannot turn "online" into "link-down" mid-test
            "online_grace_s": 120.0,
        }
        values.update(overrides)
        s = ServerThread(Settings(**values)).start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


_last_ms = 0


def ts(seconds_ago: float | None = None) -> str:
    """RFC 3339 time ``seconds_ago`` ago; by default now, but never the same ms twice (two samples of one
    battery cannot share a ts)."""
    global _last_ms
    if seconds_ago is not None:
        return format_ts(datetime.now(UTC) - timedelta(seconds=seconds_ago))
    ms = max(int(time.time() * 1000), _last_ms + 1)
    _last_ms = ms
    return format_ts(datetime.fromtimestamp(ms / 1000, UTC))


def sample(battery_id: str, seq: Any, seconds_ago: float | None = None, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "battery_id": battery_id,
        "seq": seq,
        "ts": ts(seconds_ago),
        "source": "sim",
        "via": "lan",
        "voltage_v": 53.2,
        "current_a": -4.5,
        "soc_pct": 80.5,
        "remaining_ah": 80.0,
        "cycles": 3,
        "state": "discharging",
        "charge_mos": True,
        "discharge_mos": True,
        "charger_connected": False,
        "load_connected": True,
        "cells_mv": [3320 + i for i in range(16)],
        "temps_c": [24.0, 25.5],
        "balancing": [],
        "faults": [],
        "fault_code": 0,
    }
    base.update(fields)
    return base


@dataclass
class Tenant:
    name: str
    admin: str = ""  # user access tokens
    viewer: str = ""
    device: str = ""  # device token of gw-1
    device2: str = ""  # device token of gw-2 (same tenant, other batteries)
    batteries: list[str] = field(default_factory=list)


@dataclass
class World:
    base_url: str
    database_url: str
    a: Tenant
    b: Tenant
    server: ServerThread

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=30)


async def login(base_url: str, email: str, password: str) -> str:
    async with httpx.AsyncClient(base_url=base_url) as c:
        r = await c.post("/api/v1/auth/login", json={"email": email, "password": password})
        r.raise_for_status()
        return r.json()["access_token"]


async def provision(db: Any, base_url: str, name: str) -> Tenant:
    """Tenant ``name``: site, gw-1 reporting <name>-p1 and <name>-p2, gw-2 reporting <name>-p3, two users."""
    t = Tenant(name)
    await p.create_tenant(db, name)
    await p.create_site(db, name, "depot")
    t.device = (await p.provision_device(db, name, "gw-1"))["token"]
    t.device2 = (await p.provision_device(db, name, "gw-2"))["token"]
    for i, dev in ((1, "gw-1"), (2, "gw-1"), (3, "gw-2")):
        bid = f"{name}-p{i}"
        await p.create_battery(db, name, "depot", bid, name=f"Pack {i}", device=dev, poll_interval_s=1.0)
        t.batteries.append(bid)
    await p.create_user(db, name, f"admin@{name}.test", "admin-pass-1", "admin")
    await p.create_user(db, name, f"viewer@{name}.test", "viewer-pass-1", "viewer")
    t.admin = await login(base_url, f"admin@{name}.test", "admin-pass-1")
    t.viewer = await login(base_url, f"viewer@{name}.test", "viewer-pass-1")
    return t


@pytest.fixture
async def world(start_server: Callable[..., ServerThread], database_url: str) -> AsyncIterator[World]:
    server = await asyncio.to_thread(start_server)
    async with p.open_store(database_url) as store:
        a = await provision(store, server.base_url, "acme")
        b = await provision(store, server.base_url, "globex")
    yield World(server.base_url, database_url, a, b, server)


@contextlib.asynccontextmanager
async def client(base_url: str, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as c:
        yield c


def migrate(url: str, revision: str, down: bool = False) -> None:
    """Alembic upgrade (or downgrade) of the database at ``url`` to ``revision``, synchronously (the
    migration tests bring a database to an older revision, fill it the old way, then upgrade)."""
    from alembic import command

    from trackingbms.server.db import _alembic_config, make_engine

    async def run() -> None:
        engine = make_engine(url)
        try:
            async with engine.begin() as conn:
                step = command.downgrade if down else command.upgrade
                await conn.run_sync(lambda sync_conn: step(_alembic_config(sync_conn), revision))
        finally:
            await engine.dispose()

    asyncio.run(run())
