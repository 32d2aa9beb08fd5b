"""Shared test fixtures: the real services (PostgreSQL, Mosquitto) and helpers to reach them.

In CI (``CI=true``) a test that needs a missing service fails; on a user's machine it skips with the reason.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get("TRACKINGBMS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    reason = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{reason} (CI must start it: see .ci/run)")
    pytest.skip(f"{reason}; start it to run this test")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (asyncpg URL), dropped afterwards."""
    need_service("PostgreSQL", "127.0.0.1", 5432)
    import asyncio

    import asyncpg

    name = "tbms_" + uuid.uuid4().hex[:12]

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def mqtt_broker() -> tuple[str, int]:
    need_service("Mosquitto", MQTT_HOST, MQTT_PORT)
    return MQTT_HOST, MQTT_PORT


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests run last: Playwright's sync API keeps an event loop running in the main thread for as
    long as its session fixture lives, and every later test that calls asyncio.run() (or is an async test)
    would fail."""
    # a stable sort: the order is kept otherwise
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)
    # under pytest-xdist (-n, pyproject's addopts) the browser tests share one worker (its Playwright and demo
    # fixtures start once), and --dist loadgroup schedules that group last, so nothing runs after it there
    for item in items:
        if item.get_closest_marker("browser") is not None:
            item.add_marker(pytest.mark.xdist_group("browser"))
