"""Hardening (issue 9) over real HTTP on both databases: bounded requests, security headers, redirects."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import io
import re
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
import websockets

from trackingbms.server import provisioning as p

from .conftest import ServerThread, World, client, provision, sample


def _raw_request(port: int, head: bytes, chunk: int = 64 * 1024) -> bytes:
    """Send ``head`` (stopping when the server stops reading) and return what the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        for i in range(0, len(head), chunk):
            try:
                s.sendall(head[i : i + chunk])
            except OSError:  # the server closed the connection: it has answered already
                break
        out = b""
        try:
            while data := s.recv(65536):
                out += data
        except OSError:
            pass
        return out


async def test_oversized_request_heads_are_refused_early(start_server: Callable[..., ServerThread]) -> None:
    server = await asyncio.to_thread(start_server)
    huge_auth = (
        b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a" * (50 << 20) + b"\r\n\r\n"
    )
    reply = await asyncio.to_thread(_raw_request, server.port, huge_auth)
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]
    assert b"request headers larger than 32768 bytes" in reply
    many = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"x-a: b\r\n" * 100_000 + b"\r\n"
    reply = await asyncio.to_thread(_raw_request, server.port, many)
    assert reply.startswith(b"HTTP/1.1 431 "), reply[:200]
    assert b"more than 100 request headers" in reply
    # a head within the limits, even in one read with its body, is served
    async with httpx.AsyncClient(base_url=server.base_url) as c:
        r = await c.get("/healthz", headers={f"x-h{i}": "v" * 200 for i in range(90)})
        assert r.status_code == 200


def _post(
    port: int, method: str, path: str, body: bytes, token: str = "", chunked: bool = False
) -> tuple[int, bytes]:
    """An oversized request over a raw socket (an HTTP client may give up writing once the server has
    answered and closed): the status and the body of the reply."""
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
    if token:
        head += f"Authorization: Bearer {token}\r\n".encode()
    if chunked:
        payload = b"".join(
            b"%x\r\n%s\r\n" % (len(c), c) for c in (body[i : i + 1024] for i in range(0, len(body), 1024))
        )
        head += b"Transfer-Encoding: chunked\r\n\r\n" + payload + b"0\r\n\r\n"
    else:
        head += b"Content-Length: %d\r\n\r\n" % len(body) + body
    reply = _raw_request(port, head)
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0
    return status, reply.partition(b"\r\n\r\n")[2]


async def test_bodies_are_bounded_per_route_before_parsing(world: World) -> None:
    port = world.server.port
    big = b'{"email": "' + b"a" * (45 << 20) + b'", "password": "x"}'
    got = await asyncio.to_thread(_post, port, "POST", "/api/v1/auth/login", big)
    assert got == (413, b'{"detail":"request body larger than 4096 bytes"}')
    # no Content-Length: counted as it arrives
    got = await asyncio.to_thread(_post, port, "POST", "/api/v1/auth/login", b"a" * 5000, chunked=True)
    assert got == (413, b'{"detail":"request body larger than 4096 bytes"}')
    hb = b'{"version": "1", "junk": "' + b"x" * (1 << 20) + b'"}'
    got = await asyncio.to_thread(_post, port, "POST", "/api/v1/heartbeat", hb, world.a.device)
    assert got == (413, b'{"detail":"request body larger than 65536 bytes"}')
    cfg = b'{"heartbeat_interval_s": 30, "x": "' + b"y" * (1 << 20) + b'"}'
    got = await asyncio.to_thread(_post, port, "PUT", "/api/v1/devices/gw-1/config", cfg, world.a.admin)
    assert got[0] == 413
    async with client(world.base_url) as c:  # a normal login still works
        r = await c.post("/api/v1/auth/login", json={"email": "admin@acme.test", "password": "admin-pass-1"})
        assert r.status_code == 200
    async with client(world.base_url, world.a.device) as c:
        # ingest keeps its own, larger limit (8 MB by default)
        r = await c.post(
            "/api/v1/ingest", json={"samples": [sample(world.a.batteries[0], i) for i in range(300)]}
        )
        assert r.status_code == 200 and r.json()["accepted"] == 300
    async with client(world.base_url, world.a.admin) as c:
        devices = (await c.get("/api/v1/devices")).json()
    assert all(len(str(d)) < 10_000 for d in devices)  # nothing of the refused bodies was stored


async def test_security_headers_and_strict_csp(world: World) -> None:
    async with client(world.base_url, world.a.viewer) as c:
        for path in ("/", "/api/v1/fleet", "/static/js/app.js", "/openapi.json", "/no-such-page"):
            r = await c.get(path)
            assert r.headers["x-content-type-options"] == "nosniff", path
            assert r.headers["referrer-policy"] == "no-referrer", path
            csp = r.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp, path
            assert "script-src 'self';" in csp and "unsafe-inline" not in csp, path
        # the explorer runs from this server (no CDN) and with no inline script
        page = (await c.get("/docs")).text
        assert "cdn" not in page.lower() and "<script>" not in page
        assets = ["/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"]
        assets.append("/static/docs/explorer.js")
        for src in assets:
            assert src in page
            assert (await c.get(src)).status_code == 200, src
        assert "script-src 'self';" in (await c.get("/docs")).headers["content-security-policy"]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8443"])
async def test_redirects_never_leave_the_site(world: World, host: str) -> None:
    async with client(world.base_url, world.a.viewer) as c:
        r = await c.get("/api/v1/fleet/", headers={"Host": host}, follow_redirects=False)
        assert r.status_code in (307, 308)
        assert r.headers["location"] == "/api/v1/fleet"
        r = await c.get("/api/v1/fleet/", follow_redirects=True)
        assert r.status_code == 200 and "batteries" in r.json()


async def _world_with(start_server: Callable[..., ServerThread], database_url: str, **settings: Any) -> World:
    """The usual two-tenant world on a server with these settings."""
    server = await asyncio.to_thread(start_server, **settings)
    async with p.open_store(database_url) as store:
        a = await provision(store, server.base_url, "acme")
        b = await provision(store, server.base_url, "globex")
    return World(server.base_url, database_url, a, b, server)


async def _login(c: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await c.post("/api/v1/auth/login", json={"email": email, "password": password})


async def test_login_failures_per_account_get_growing_delays(
    start_server: Callable[..., ServerThread], database_url: str
) -> None:
    w = await _world_with(start_server, database_url, login_free_failures_account=2, login_base_delay_s=3.0)
    async with client(w.base_url) as c:
        for _ in range(3):  # the third failure locks the account
            assert (await _login(c, "admin@acme.test", "wrong-pass")).status_code == 401
        r = await _login(c, "admin@acme.test", "admin-pass-1")  # even the right password waits
        assert r.status_code == 429 and "too many failed logins" in r.json()["detail"]
        first = int(r.headers["retry-after"])
        assert 1 <= first <= 3
        # another account from the same address is not affected
        assert (await _login(c, "viewer@acme.test", "viewer-pass-1")).status_code == 200
        await asyncio.sleep(first + 0.2)
        assert (await _login(c, "admin@acme.test", "wrong-pass")).status_code == 401
        r = await _login(c, "admin@acme.test", "wrong-pass")
        assert r.status_code == 429 and int(r.headers["retry-after"]) > first  # the delay has grown
        await asyncio.sleep(int(r.headers["retry-after"]) + 0.2)
        assert (await _login(c, "admin@acme.test", "admin-pass-1")).status_code == 200
        # a success clears the account's count
        assert (await _login(c, "admin@acme.test", "wrong-pass")).status_code == 401


async def test_login_failures_per_address_are_limited_too(
    start_server: Callable[..., ServerThread], database_url: str
) -> None:
    w = await _world_with(start_server, database_url, login_free_failures_address=4)
    async with client(w.base_url) as c:
        for i in range(5):  # five different (unknown) accounts from one address
            assert (await _login(c, f"guess{i}@acme.test", "wrong-pass")).status_code == 401
        r = await _login(c, "admin@acme.test", "admin-pass-1")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


async def test_concurrent_logins_cannot_starve_the_api(
    start_server: Callable[..., ServerThread], database_url: str
) -> None:
    w = await _world_with(start_server, database_url, login_hash_concurrency=1, login_hash_queue=2)
    async with client(w.base_url) as c:
        flood = [_login(c, "viewer@acme.test", "viewer-pass-1") for _ in range(40)]
        me = c.get("/api/v1/me", headers={"Authorization": f"Bearer {w.a.admin}"})
        *logins, me_reply = await asyncio.gather(*flood, me)
    assert me_reply.status_code == 200
    codes = sorted({r.status_code for r in logins})
    assert codes == [200, 429], codes  # some wait their turn, the rest are told to come back
    busy = next(r for r in logins if r.status_code == 429)
    assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["detail"]


async def test_unknown_and_known_emails_cost_one_password_hash_each(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same work whether the email exists or not, so that timing does not tell (the server runs in
    this process: count the real scrypt calls)."""
    calls: list[int] = []
    real = hashlib.scrypt

    def counting(*args: Any, **kw: Any) -> bytes:
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    async with client(world.base_url) as c:
        for email in ("nobody@acme.test", "admin@acme.test"):
            calls.clear()
            assert (await _login(c, email, "wrong-pass")).status_code == 401
            assert len(calls) == 1, email


async def _live_closed(ws: Any) -> int | None:
    """Read until the server closes the socket; its close code."""
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 60)
    return ws.close_code


async def test_live_sockets_close_when_their_token_is_revoked(
    start_server: Callable[..., ServerThread], database_url: str
) -> None:
    w = await _world_with(start_server, database_url, live_token_recheck_s=0.5)
    url = w.base_url.replace("http://", "ws://") + "/api/v1/live"
    async with client(w.base_url) as c:
        token = (await _login(c, "admin@acme.test", "admin-pass-1")).json()["access_token"]
    async with websockets.connect(f"{url}?token={token}") as ws, client(w.base_url, token) as c:
        assert (await c.post("/api/v1/auth/logout")).status_code == 200
        assert await _live_closed(ws) == 4401
    # revoked by another process (the admin command): noticed at the next check
    async with websockets.connect(f"{url}?token={w.a.viewer}") as ws:
        assert await p.revoke_token(database_url, w.a.viewer)
        assert await _live_closed(ws) == 4401
    # another user's socket stays open
    async with websockets.connect(f"{url}?token={w.b.viewer}") as ws, client(w.base_url, w.b.device) as c:
        assert (await c.post("/api/v1/heartbeat", json={"version": "still-here"})).status_code == 200
        while orjson.loads(await asyncio.wait_for(ws.recv(), 30))["heartbeat"]["version"] != "still-here":
            pass


async def test_csv_cells_cannot_become_spreadsheet_formulas(world: World) -> None:
    a = world.a
    evil = ['=HYPERLINK("http://evil.example")', "=1+1", "@SUM(A1)", "+cmd|' /C calc'!A0", "-2+3", "\tx"]
    batch = [sample(a.batteries[0], i, faults=[f], current_a=-4.5) for i, f in enumerate(evil)]
    async with client(world.base_url, a.device) as c:
        r = await c.post("/api/v1/ingest", json={"samples": batch})
        assert r.json()["accepted"] == len(evil), r.text
    async with client(world.base_url, a.viewer) as c:
        text = (await c.get(f"/api/v1/batteries/{a.batteries[0]}/export.csv")).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["faults"] for r in rows] == ["'" + f for f in evil]
    assert all(r["current_a"] == "-4.5" for r in rows)  # numbers stay numbers, negative ones too


async def test_heartbeats_are_validated_bounded_and_rate_limited(
    start_server: Callable[..., ServerThread], database_url: str
) -> None:
    w = await _world_with(start_server, database_url, ingest_rate_per_s=0.01, ingest_burst=6)
    async with client(w.base_url, w.a.device) as c:
        hb = {
            "version": "1.0",
            "junk": "x" * 1000,
            # a long error text is shortened, not refused: the gateway must not lose its heartbeat
            "batteries": [{"battery_id": "acme-p1", "link_state": "ok", "last_error": "e" * 5000}],
        }
        assert (await c.post("/api/v1/heartbeat", json=hb)).status_code == 200
        for bad in (
            b'{"uptime_s": NaN}',
            b'{"disk_used_pct": Infinity}',
            b'{"version": "' + b"v" * 500 + b'"}',
            orjson.dumps({"batteries": [{"battery_id": f"p{i}", "link_state": "ok"} for i in range(300)]}),
            orjson.dumps({"batteries": [{"battery_id": "not an id!", "link_state": "ok"}]}),
        ):
            r = await c.post("/api/v1/heartbeat", content=bad, headers={"content-type": "application/json"})
            assert r.status_code == 422, bad[:60]
        # 6 requests so far, malformed ones included: the bucket (burst 6) is empty
        r = await c.post("/api/v1/heartbeat", json={"version": "1.0"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    async with client(w.base_url, w.a.admin) as c:
        dev = (await c.get("/api/v1/devices/gw-1")).json()
    assert dev["heartbeat"]["version"] == "1.0" and "junk" not in dev["heartbeat"]  # unknown fields dropped
    assert len(dev["heartbeat"]["batteries"][0]["last_error"]) == 500


async def test_bad_query_or_header_is_a_4xx_and_never_undoes_a_stored_batch(world: World) -> None:
    a = world.a
    async with client(world.base_url, a.viewer) as c:
        for q in ("0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59-23:59"):
            r = await c.get(f"/api/v1/batteries/{a.batteries[0]}/history", params={"from": q})
            assert r.status_code == 422, (q, r.text)
            r = await c.get(f"/api/v1/batteries/{a.batteries[0]}/export.csv", params={"to": q})
            assert r.status_code == 422, (q, r.text)
    async with client(world.base_url, a.device) as c:
        # superscript digits pass str.isdigit() but not int(); sent as the raw latin-1 bytes a client may send
        for seq, header in enumerate(("²", "³¹", "-1", "9" * 40)):
            r = await c.post(
                "/api/v1/ingest",
                json={"samples": [sample(a.batteries[0], seq)]},
                headers={"X-Config-Version": header.encode("latin-1")},
            )
            assert r.status_code == 200 and r.json()["accepted"] == 1, (header, r.text)


async def test_future_samples_are_refused_and_the_clock_offset_shown(
    start_server: Callable[..., ServerThread], database_url: str
) -> None:
    w = await _world_with(start_server, database_url)
    bid = w.a.batteries[0]
    async with client(w.base_url, w.a.device) as c:
        r = await c.post(
            "/api/v1/ingest",
            json={
                "samples": [
                    sample(bid, 1, seconds_ago=-(23 * 3600 + 59 * 60)),
                    sample(bid, 2, seconds_ago=-60),
                ]
            },
        )
        rejected = r.json()["rejected"]
        assert r.json()["accepted"] == 1 and [x["index"] for x in rejected] == [0]
        assert re.search(r"23 h 5[89] min ahead of the server's clock", rejected[0]["error"]), rejected
        ahead = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
        assert (await c.post("/api/v1/heartbeat", json={"version": "1", "ts": ahead})).status_code == 200
    async with client(w.base_url, w.a.admin) as c:
        hb = (await c.get("/api/v1/devices/gw-1")).json()["heartbeat"]
        fleet = {b["battery_id"]: b for b in (await c.get("/api/v1/fleet")).json()["batteries"]}
    assert 7000 < hb["clock_skew_s"] < 7300 and hb["clock_ok"] is False
    assert fleet[bid]["latest"]["seq"] == 2
    # the window is a setting (a second server on the same database)
    s2 = await asyncio.to_thread(start_server, max_clock_skew_s=7200)
    async with client(s2.base_url, w.a.device) as c:
        r = await c.post("/api/v1/ingest", json={"samples": [sample(bid, 3, seconds_ago=-3600)]})
        assert r.json()["accepted"] == 1, r.text
