"""Hardening (issue 9) over real HTTP on both databases: bounded requests, security headers, redirects."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import httpx
import pytest

from .conftest import ServerThread, World, client, sample


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
