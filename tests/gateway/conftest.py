"""Fixtures for the gateway's end-to-end tests: real server and gateway processes, simulated packs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import GatewayProcess, LoopThread, Packs, ServerProcess


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def packs(loop_thread: LoopThread) -> Iterator[Callable[[list[str]], Packs]]:
    made: list[Packs] = []

    def make(battery_ids: list[str]) -> Packs:
        p = Packs(loop_thread, battery_ids)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    made: list[ServerProcess] = []

    def make(battery_ids: list[str], **env: str) -> ServerProcess:
        s = ServerProcess(tmp_path / f"server{len(made)}", battery_ids, **env)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], GatewayProcess]]:
    made: list[GatewayProcess] = []

    def make(config: dict[str, Any]) -> GatewayProcess:
        workdir = tmp_path / f"gw{len(made)}"
        workdir.mkdir()
        g = GatewayProcess(config, workdir)
        made.append(g)
        return g

    yield make
    for g in made:
        g.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> str | None:
    """The server's database for an end-to-end run: None = SQLite in its data dir, else a fresh PostgreSQL
    database (keyed (stream, ts) there, so a duplicate is possible in principle and must not happen)."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")
