"""Personal access tokens for integrations, over real HTTP on SQLite and PostgreSQL: scope, expiry,
revocation, tenancy, stored hashed; created from a login and from the CLI; docs/api.md's Python example
runs against the server as written."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text, update

from trackingbms.server.db import api_tokens, make_engine

from .conftest import World, client, sample, ts

CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
CONFIG = {"heartbeat_interval_s": 30}


async def create(w: World, session: str, **body) -> httpx.Response:
    async with client(w.base_url, session) as c:
        return await c.post("/api/v1/tokens", json={"name": "grafana", **body})


async def test_scopes_revocation_and_tenancy(world: World) -> None:
    a, b = world.a, world.b
    r = await create(world, a.admin, scope="read", expires_days=30)
    assert r.status_code == 201, r.text
    read = r.json()
    assert read["token"].startswith("tbp_") and read["status"] == "active" and read["scope"] == "read"
    rw = (await create(world, a.admin, name="automation", scope="read-write")).json()

    async with client(world.base_url, read["token"]) as c:
        assert (await c.get("/api/v1/fleet")).status_code == 200
        put = await c.put("/api/v1/devices/gw-1/config", json=CONFIG)
        assert put.status_code == 403  # a read token acts as a viewer
        # a token cannot mint tokens, nor list them
        assert (await c.post("/api/v1/tokens", json={"name": "x"})).status_code == 403
        assert (await c.get("/api/v1/tokens")).status_code == 403
    async with client(world.base_url, rw["token"]) as c:
        assert (await c.put("/api/v1/devices/gw-1/config", json=CONFIG)).status_code == 200
        # tenancy holds: another tenant's battery does not exist for it
        assert (await c.get(f"/api/v1/batteries/{b.batteries[0]}")).status_code == 404

    # a viewer may hold read tokens only
    assert (await create(world, a.viewer, scope="read-write")).status_code == 403
    assert (await create(world, a.viewer, scope="read")).status_code == 201
    assert (await create(world, a.admin, scope="admin")).status_code == 422
    assert (await create(world, a.admin, expires_days=1000)).status_code == 422

    async with client(world.base_url, a.admin) as c:
        mine = (await c.get("/api/v1/tokens")).json()
        assert {t["name"] for t in mine} == {"grafana", "automation"}
        assert all("token" not in t for t in mine)
        assert next(t for t in mine if t["id"] == read["id"])["last_used_ms"] is not None
        assert len((await c.get("/api/v1/tokens", params={"all": "true"})).json()) == 3
    async with client(world.base_url, a.viewer) as c:
        assert (await c.get("/api/v1/tokens", params={"all": "true"})).status_code == 403
        assert (await c.delete(f"/api/v1/tokens/{read['id']}")).status_code == 404  # not the viewer's
    async with client(world.base_url, b.admin) as c:
        assert (await c.delete(f"/api/v1/tokens/{read['id']}")).status_code == 404  # other tenant
        assert (await c.get("/api/v1/tokens", params={"all": "true"})).json() == []

    async with client(world.base_url, a.admin) as c:
        r = await c.delete(f"/api/v1/tokens/{read['id']}")
        assert r.status_code == 200 and r.json()["status"] == "revoked"
    async with client(world.base_url, read["token"]) as c:
        assert (await c.get("/api/v1/fleet")).status_code == 401

    # stored hashed: the database never holds the token itself
    engine = make_engine(world.database_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT * FROM api_tokens"))).all()
            assert rows and not any(rw["token"] in str(tuple(row)) for row in rows)
        # an expired token stops working (expiry moved into the past instead of waiting for it)
        async with engine.begin() as conn:
            await conn.execute(update(api_tokens).where(api_tokens.c.id == rw["id"]).values(expires_ms=1))
    finally:
        await engine.dispose()
    async with client(world.base_url, rw["token"]) as c:
        assert (await c.get("/api/v1/fleet")).status_code == 401
    async with client(world.base_url, a.admin) as c:
        status = {t["id"]: t["status"] for t in (await c.get("/api/v1/tokens")).json()}
    assert status == {read["id"]: "revoked", rw["id"]: "expired"}


async def test_the_docs_python_example_reads_a_pack_history(world: World) -> None:
    a = world.a
    async with client(world.base_url, a.device) as c:
        r = await c.post("/api/v1/ingest", json={"samples": [sample(a.batteries[0], i) for i in range(1, 6)]})
        assert r.json()["accepted"] == 5
    token = (await create(world, a.viewer)).json()["token"]
    doc = DOCS.read_text()
    block = doc[doc.index("five lines of Python") :]
    code = re.search(r"```python\n(.*?)```", block, re.S).group(1)  # type: ignore[union-attr]
    assert len([line for line in code.splitlines() if line.strip()]) == 5  # code lines (blank lines aside)
    code = (
        code.replace("https://tbms.example.com", world.base_url)
        .replace("tbp_...", token)
        .replace("pack-1", a.batteries[0])
        .replace("2026-11-29T00:00:00Z", ts(3600))  # the last hour (the doc's date is in the past)
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        await __import__("asyncio").to_thread(exec, code, {})
    lines = out.getvalue().splitlines()
    assert lines and all(len(line.split()) == 3 for line in lines)
    assert float(lines[-1].split()[1]) == pytest.approx(53.2)


def test_cli_creates_lists_and_revokes(world: World) -> None:
    db = ["--database-url", world.database_url]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "admin", *args, *db], capture_output=True, text=True, timeout=120)

    r = cli("create-api-token", "admin@acme.test", "--tenant", "acme", "--name", "ha", "--scope", "read")
    assert r.returncode == 0, r.stderr
    token = re.search(r"(tbp_\S+)", r.stdout).group(1)  # type: ignore[union-attr]
    assert (
        httpx.get(f"{world.base_url}/api/v1/fleet", headers={"Authorization": f"Bearer {token}"}).status_code
        == 200
    )
    listed = cli("list-api-tokens", "--tenant", "acme")
    assert "ha" in listed.stdout and "active" in listed.stdout and token not in listed.stdout
    token_id = listed.stdout.split()[0]
    bad = cli("create-api-token", "viewer@acme.test", "-t", "acme", "--name", "x", "--scope", "read-write")
    assert bad.returncode == 1 and "only hold read tokens" in bad.stderr and "Traceback" not in bad.stderr
    assert cli("revoke-api-token", token_id, "--tenant", "globex").returncode == 1  # not that tenant's
    assert cli("revoke-api-token", token_id, "--tenant", "acme").returncode == 0
    assert (
        httpx.get(f"{world.base_url}/api/v1/fleet", headers={"Authorization": f"Bearer {token}"}).status_code
        == 401
    )
