"""A region's server without NATS (no directory): device tokens naming another region and tenants whose home
region moved are answered 421 with the region's name; other tenants are untouched; moving back restores."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from trackingbms.server import provisioning as p

from .conftest import client, provision, sample


async def _eventually(check: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        got = await check()
        if got or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.1)


async def test_tenants_of_another_region_are_sent_there(start_server, database_url: str) -> None:
    server = await asyncio.to_thread(start_server, region="montreal", directory_sync_s=0.2)
    base = server.base_url
    async with p.open_store(database_url) as store:
        acme = await provision(store, base, "acme")
        globex = await provision(store, base, "globex")

    async with client(base, "tbd_paris.bm90LWEtcmVhbC10b2tlbi1idXQtd2VsbC1mb3JtZWQ") as c:
        r = await c.post("/api/v1/ingest", json={"samples": [sample("acme-p1", 1)]})
    assert r.status_code == 421
    assert r.json() == {
        "detail": "this device's tenant lives in region paris (its address is not known here yet)",
        "region": "paris",
        "url": None,
    }
    assert "location" not in r.headers

    await p.set_tenant_region(database_url, "acme", "paris")

    async def device_refused() -> httpx.Response | None:
        async with client(base, acme.device) as c:
            r = await c.post("/api/v1/ingest", json={"samples": [sample("acme-p1", 2)]})
        return r if r.status_code == 421 else None

    r = await _eventually(device_refused)
    assert r is not None and r.json()["region"] == "paris" and "tenant acme" in r.json()["detail"]
    async with client(base) as c:
        login = await c.post(
            "/api/v1/auth/login", json={"email": "admin@acme.test", "password": "admin-pass-1"}
        )
        assert login.status_code == 421 and "access_token" not in login.text
        wrong = await c.post("/api/v1/auth/login", json={"email": "admin@acme.test", "password": "nope-nope"})
        assert wrong.status_code == 401  # the password is still checked first
    async with client(base, acme.admin) as c:  # a session opened before the move
        assert (await c.get("/api/v1/me")).status_code == 421
    async with client(base, globex.device) as c:  # another tenant of this region: served as before
        r = await c.post("/api/v1/ingest", json={"samples": [sample("globex-p1", 1)]})
        assert r.status_code == 200 and r.json()["accepted"] == 1

    await p.set_tenant_region(database_url, "acme", None)

    async def device_served() -> httpx.Response | None:
        async with client(base, acme.device) as c:
            r = await c.post("/api/v1/ingest", json={"samples": [sample("acme-p1", 3)]})
        return r if r.status_code == 200 else None

    r = await _eventually(device_served)
    assert r is not None and r.json()["accepted"] == 1


async def test_device_tokens_name_the_tenants_home_region(database_url: str) -> None:
    from trackingbms.server.regions import token_region

    async with p.open_store(database_url) as store:
        await p.create_tenant(store, "acme", "paris")
        await p.create_tenant(store, "globex")
        paris = (await p.provision_device(store, "acme", "gw-1"))["token"]
        plain = (await p.provision_device(store, "globex", "gw-1"))["token"]
    assert paris.startswith("tbd_paris.") and token_region(paris) == "paris"
    assert token_region(plain) is None
    try:
        await p.create_tenant(database_url, "initech", "Not A Region")
    except ValueError as e:
        assert "lower-case letters" in str(e)
    else:
        raise AssertionError("a bad region name was accepted")
