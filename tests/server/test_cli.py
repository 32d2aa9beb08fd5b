"""The README path with the real command line: admin commands, `trackingbms server`, curl-like posts,
and a graceful shutdown that finishes the batch in flight."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from trackingbms.server import provisioning as p

from .conftest import sample, server_process

CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]


def admin(url: str, *args: str) -> Any:
    r = subprocess.run(
        [*CLI, "admin", *args, "--json", "--database-url", url], capture_output=True, text=True, timeout=60
    )
    out = json.loads(r.stdout)
    return r.returncode, out


def test_admin_commands_then_ingest_then_graceful_stop(database_url: str, tmp_path: Path) -> None:
    url = database_url
    assert admin(url, "create-tenant", "acme") == (0, {"tenant_id": 1, "name": "acme"})
    code, out = admin(url, "create-tenant", "acme")
    assert code == 1 and "already exists" in out["error"]
    assert admin(url, "create-site", "depot", "-t", "acme")[1]["name"] == "depot"
    code, dev = admin(url, "provision-device", "gw-1", "-t", "acme")
    assert code == 0 and dev["device_id"] == "gw-1" and dev["token"].startswith("tbd_")
    code, bat = admin(url, "create-battery", "pack-1", "-t", "acme", "--site", "depot", "--device", "gw-1")
    assert code == 0 and bat["device_id"] == "gw-1"
    code, out = admin(url, "create-battery", "pack-2", "-t", "acme", "--site", "nowhere")
    assert code == 1 and "no site" in out["error"]
    code, user = admin(
        url, "create-user", "ops@acme.test", "-t", "acme", "--role", "viewer", "--password", "pw-123456"
    )
    assert code == 0 and user["role"] == "viewer"
    code, cfg = admin(url, "set-config", "gw-1", "-t", "acme", '{"heartbeat_interval_s": 15}')
    assert code == 0 and cfg["config_version"] == 1

    proc, base = server_process(url, tmp_path)
    try:
        auth = {"Authorization": f"Bearer {dev['token']}", "Content-Type": "application/json"}
        r = httpx.post(
            base + "/api/v1/ingest", headers=auth, content=orjson.dumps({"samples": [sample("pack-1", 1)]})
        )
        assert r.json()["accepted"] == 1 and r.json()["config"]["heartbeat_interval_s"] == 15

        # a big batch is half sent when the server is told to stop: it must still be stored and answered
        body = orjson.dumps({"samples": [sample("pack-1", i, seconds_ago=6000 - i) for i in range(2, 5002)]})
        head = (
            f"POST /api/v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {dev['token']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(head + body[: len(body) // 2])
            # one more round trip: the server's loop has now seen the request above (same poll or earlier)
            assert httpx.get(base + "/healthz").status_code == 200
            proc.send_signal(signal.SIGTERM)
            s.sendall(body[len(body) // 2 :])
            reply = b""
            while b"\r\n\r\n" not in reply or not reply.endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["accepted"] == 5000
        # uvicorn re-raises SIGTERM once it has shut down cleanly
        assert proc.wait(60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    async def stored() -> int:
        async with p.open_store(url) as store:
            ts = store.tenant(await store.tenant_by_name("acme"))
            return sum([len(page) async for page in ts.export_rows("pack-1", 0, 2**62)])

    assert asyncio.run(stored()) == 5001
    code, out = admin(url, "revoke-token", dev["token"])
    assert code == 0 and out == {"revoked": 1}
