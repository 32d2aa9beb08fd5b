"""Migration 0011 (a battery's profile: chemistry, rated capacity) on both backends: an existing database
gains the columns empty (its batteries keep today's behaviour), a downgrade drops them keeping the batteries,
and the CLI sets and clears a profile with one-line errors."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

from sqlalchemy import text

from trackingbms.server import provisioning as p
from trackingbms.server.db import make_engine

from .conftest import migrate

CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]


async def _batteries(url: str) -> list[tuple[Any, ...]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            cols = (
                "battery_id, name"
                if not await _has_profile(conn)
                else "battery_id, name, chemistry, rated_capacity_ah"
            )
            return [
                tuple(r)
                for r in (await conn.execute(text(f"SELECT {cols} FROM batteries ORDER BY battery_id")))
            ]
    finally:
        await engine.dispose()


async def _has_profile(conn: Any) -> bool:
    from sqlalchemy import inspect

    return "chemistry" in await conn.run_sync(
        lambda c: {col["name"] for col in inspect(c).get_columns("batteries")}
    )


def test_migration_0011_adds_an_empty_profile_and_downgrades_keeping_the_batteries(database_url: str) -> None:
    async def setup() -> None:
        async with p.open_store(database_url) as store:  # migrates to head
            await p.create_tenant(store, "acme")
            await p.create_site(store, "acme", "depot")
            await p.create_battery(store, "acme", "depot", "pack-1", chemistry="nmc", rated_capacity_ah=20)
            await p.create_battery(store, "acme", "depot", "pack-2")

    asyncio.run(setup())
    assert asyncio.run(_batteries(database_url)) == [
        ("pack-1", "pack-1", "nmc", 20.0),
        ("pack-2", "pack-2", None, None),
    ]
    migrate(database_url, "0010", down=True)
    assert asyncio.run(_batteries(database_url)) == [("pack-1", "pack-1"), ("pack-2", "pack-2")]
    migrate(database_url, "head")  # a database from before profiles: both empty
    assert asyncio.run(_batteries(database_url)) == [
        ("pack-1", "pack-1", None, None),
        ("pack-2", "pack-2", None, None),
    ]


def test_the_cli_sets_and_clears_a_profile_with_one_line_errors(database_url: str) -> None:
    asyncio.run(_setup_one(database_url))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, "admin", *args, "--database-url", database_url],
            capture_output=True,
            text=True,
            timeout=120,
        )

    r = cli("battery-profile", "pack-1", "-t", "acme", "--chemistry", "NMC", "--capacity-ah", "20")
    assert r.returncode == 0 and "chemistry NMC, rated capacity 20 Ah" in r.stdout, r.stderr
    r = cli("battery-profile", "pack-1", "-t", "acme", "--capacity-ah", "0")
    assert r.returncode == 0 and "chemistry NMC, rated capacity not set" in r.stdout, r.stderr
    for args, said in (
        (("--chemistry", "lifepo4"), "chemistry must be one of lfp, nmc, lto, not 'lifepo4'"),
        (("--capacity-ah", "-5"), "rated capacity must be between 0 and 100000 Ah"),
        ((), "nothing to set"),
    ):
        r = cli("battery-profile", "pack-1", "-t", "acme", *args)
        assert r.returncode == 1 and said in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = cli("battery-profile", "nope", "-t", "acme", "--chemistry", "lfp")
    assert r.returncode == 1 and "no battery 'nope'" in r.stderr
    r = cli("battery-profile", "pack-1", "-t", "acme", "--chemistry", "unset")
    assert r.returncode == 0 and "chemistry not set (LFP thresholds)" in r.stdout
    assert asyncio.run(_batteries(database_url)) == [("pack-1", "pack-1", None, None)]


async def _setup_one(url: str) -> None:
    async with p.open_store(url) as store:
        await p.create_tenant(store, "acme")
        await p.create_site(store, "acme", "depot")
        await p.create_battery(store, "acme", "depot", "pack-1")
