"""Two regions on one machine: two NATS nodes (each its own JetStream domain) joined by a leaf-node
connection, two API processes on two SQLite databases. The tenant directory crosses (and only it): a
Paris user or device that reaches Montreal is sent to Paris with its URL, the gateway's HTTP transport
follows, the samples land only in Paris's database, and killing Paris leaves Montreal serving, ingesting
and still redirecting Paris's users."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.harness import free_port, wait_for

from .conftest import _need_binary
from .harness import NATS_SERVER, Region, RegionNats


def _sample(bid: str, seq: int) -> dict:
    at = datetime.now(UTC) - timedelta(seconds=60 - seq)  # one second apart, in the recent past
    ts = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
    return {"battery_id": bid, "seq": seq, "ts": ts, "voltage_v": 52.1, "cells_mv": [3300] * 4}


def _provision(region: Region, tenant: str, email: str) -> str:
    """Tenant (home region = this region, through the CLI), user, site, battery and device; returns the
    device token."""
    from trackingbms.server import provisioning as p

    region.admin("create-tenant", tenant, "--region", region.name)

    async def rest() -> str:
        db = region.db_url
        await p.create_user(db, tenant, email, "s3cret-pass", "admin")
        await p.create_site(db, tenant, "depot")
        token = (await p.provision_device(db, tenant, "gw-1"))["token"]
        await p.create_battery(db, tenant, "depot", f"{tenant}-pack", device="gw-1")
        return token

    return asyncio.run(rest())


def _directory_messages(nats_url: str) -> list[tuple[str, bytes]]:
    """Every message in a region's TBMS_DIRECTORY stream (subject, data)."""

    async def go() -> list[tuple[str, bytes]]:
        import nats

        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            info = await js.stream_info("TBMS_DIRECTORY")
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    msg = await js.get_msg("TBMS_DIRECTORY", seq)
                except Exception:  # superseded by a newer value of its subject
                    continue
                out.append((msg.subject, msg.data or b""))
            streams = [s.config.name for s in await js.streams_info()]
            assert streams == ["TBMS_DIRECTORY"], streams  # no telemetry stream in this region's NATS
            return out
        finally:
            await nc.close()

    return asyncio.run(go())


@pytest.fixture
def regions(tmp_path: Path) -> Iterator[tuple[Region, Region]]:
    _need_binary(NATS_SERVER, "nats-server")
    leaf_port = free_port()
    paris = Region(
        tmp_path / "paris",
        "paris",
        ["montreal"],
        RegionNats(tmp_path / "paris", "paris", leaf_port=leaf_port, hub=True),
    )
    montreal = Region(
        tmp_path / "montreal",
        "montreal",
        ["paris"],
        RegionNats(tmp_path / "montreal", "montreal", leaf_port=leaf_port, hub=False),
    )
    try:
        for r in (paris, montreal):
            r.nats.start()
        yield paris, montreal
    finally:
        for r in (paris, montreal):
            r.stop()


def _login(url: str, email: str) -> httpx.Response:
    return httpx.post(
        url + "/api/v1/auth/login", json={"email": email, "password": "s3cret-pass"}, timeout=10
    )


def test_wrong_region_is_redirected_and_one_region_down_leaves_the_other_serving(regions) -> None:
    from trackingbms.server import provisioning as p

    paris, montreal = regions
    paris_token = _provision(paris, "acme", "ops@acme.test")
    montreal_token = _provision(montreal, "bob", "ops@bob.test")
    assert paris_token.startswith("tbd_paris.")  # the token names its home region
    paris.start()
    montreal.start()

    # the directory propagates: Montreal learns (over the leaf connection) where acme's users live
    r = wait_for(
        "Montreal to know acme's users",
        lambda: (x := _login(montreal.url, "ops@acme.test")).status_code == 421 and x,
        60,
    )
    assert r.json() == {
        "detail": f"tenant acme lives in region paris: use {paris.url}",
        "region": "paris",
        "url": paris.url,
    }
    assert r.headers["location"] == paris.url
    assert _login(paris.url, "ops@acme.test").status_code == 200  # served at home
    # and the other way round, once Paris has sourced Montreal's part of the directory (each side on its own)
    wait_for("Paris to know bob's users", lambda: _login(paris.url, "ops@bob.test").status_code == 421, 60)
    assert _login(montreal.url, "nobody@nowhere.test").status_code == 401  # unknown everywhere: as before

    # a Paris device sent to Montreal: refused with Paris's URL, without touching Montreal's database
    r = httpx.post(
        montreal.url + "/api/v1/ingest",
        json={"samples": [_sample("acme-pack", 1)]},
        headers={"Authorization": f"Bearer {paris_token}"},
    )
    assert r.status_code == 421 and r.json()["url"] == paris.url and r.json()["region"] == "paris"

    # the gateway's HTTP transport follows the 421 to Paris, where the batch is stored
    from trackingbms.gateway.config import UplinkConfig
    from trackingbms.gateway.uplinks.base import Reply
    from trackingbms.gateway.uplinks.http import HttpTransport

    async def send_via_montreal() -> tuple[object, str]:
        transport = HttpTransport(UplinkConfig(name="cellular", url=montreal.url), paris_token)
        try:
            body = orjson.dumps({"samples": [_sample("acme-pack", s) for s in (1, 2, 3)]})
            outcome = await transport.send_batch(body, 0)
            again = await transport.send_batch(orjson.dumps({"samples": [_sample("acme-pack", 4)]}), 0)
            assert isinstance(again, Reply) and again.body["accepted"] == 1
            return outcome, transport.url
        finally:
            await transport.aclose()

    outcome, now_url = asyncio.run(send_via_montreal())
    assert isinstance(outcome, Reply) and outcome.body["accepted"] == 3
    assert now_url == paris.url
    assert paris.samples_in_db() == 4 and montreal.samples_in_db() == 0  # the data stays home
    # what crossed into Montreal's NATS is the directory only, and no e-mail in clear
    crossed = _directory_messages(montreal.nats.url)
    assert crossed and all(subject.startswith("tbms.dir.") for subject, _ in crossed)
    assert any(subject.startswith("tbms.dir.paris.user.") for subject, _ in crossed)
    assert not any(b"@" in data for _, data in crossed)

    # Paris goes down entirely (API and NATS): Montreal keeps serving its own tenant and ingesting ...
    paris.kill()
    r = _login(montreal.url, "ops@bob.test")
    assert r.status_code == 200
    r = httpx.post(
        montreal.url + "/api/v1/ingest",
        json={"samples": [_sample("bob-pack", s) for s in (1, 2)]},
        headers={"Authorization": f"Bearer {montreal_token}"},
    )
    assert r.status_code == 200 and r.json()["accepted"] == 2
    # ... and still knows where Paris's users belong (its copy of the directory)
    r = _login(montreal.url, "ops@acme.test")
    assert r.status_code == 421 and r.json()["url"] == paris.url

    # a tenant moved to another region: its home region's database says so, and it is sent there
    montreal.admin("tenant", "bob", "--region", "paris")
    r = wait_for(
        "Montreal to send bob's device away",
        lambda: (
            (
                x := httpx.post(
                    montreal.url + "/api/v1/heartbeat",
                    json={},
                    headers={"Authorization": f"Bearer {montreal_token}"},
                )
            ).status_code
            == 421
            and x
        ),
        30,
    )
    assert r.json()["region"] == "paris" and r.json()["url"] == paris.url
    r = _login(montreal.url, "ops@bob.test")
    assert r.status_code == 421 and "tenant bob lives in region paris" in r.json()["detail"]
    assert "access_token" not in r.text
    assert montreal.samples_in_db() == 2

    # Paris comes back with a new user: Montreal's copy of the directory catches up
    asyncio.run(p.create_user(paris.db_url, "acme", "new@acme.test", "s3cret-pass", "viewer"))
    paris.nats.start()
    paris.start()
    wait_for(
        "Montreal to learn Paris's new user",
        lambda: _login(montreal.url, "new@acme.test").status_code == 421,
        60,
    )
