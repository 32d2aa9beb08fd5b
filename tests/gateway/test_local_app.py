"""The gateway serves the web app itself (direct mode) over real HTTP: the same files as the server, under
a CSP, nothing outside the app's folder; its state says where the server is."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from trackingbms.gateway.config import LocalApiConfig
from trackingbms.gateway.local import LocalApi
from trackingbms.gateway.queue import DurableQueue
from trackingbms.gateway.state import GatewayState
from trackingbms.model import Reading
from trackingbms.webapp import STATIC_DIR


async def _status() -> dict[str, Any]:
    return {"uplink": "wifi", "queue_depth": 3}


def _run(go: Any) -> Any:
    # a thread of its own: another test in the session (Playwright's sync API) may own this one's loop
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result(timeout=60)


def test_the_gateway_serves_the_same_app_files_as_the_server(tmp_path: Path) -> None:
    async def go() -> dict[str, httpx.Response]:
        api = LocalApi(
            LocalApiConfig(listen="127.0.0.1:0"),
            GatewayState(),
            DurableQueue(tmp_path),
            _status,
            ["wifi"],
            server_urls=["https://tbms.example.com"],
        )
        await api.start()
        try:
            base = f"http://127.0.0.1:{api.port}"
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                paths = [
                    "/",
                    "/sw.js",
                    "/manifest.webmanifest",
                    "/static/js/app.js",
                    "/static/i18n/fr.json",
                    "/static/vendor/uPlot.iife.min.js",
                    "/static/../__init__.py",
                    "/static/%2e%2e/__init__.py",
                    "/static/js/nope.js",
                    "/local/v1/state",
                ]
                return {p: await client.get(p) for p in paths}
        finally:
            await api.stop()

    got = _run(go)
    index = got["/"]
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert index.content == (STATIC_DIR / "index.html").read_bytes()
    # inline script is forbidden as on the server; the app may talk to the server it reports to
    csp = index.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self' http: https:" in csp
    assert index.headers["cache-control"] == "no-cache"
    assert got["/sw.js"].headers["content-type"].startswith("text/javascript")
    assert got["/static/js/app.js"].content == (STATIC_DIR / "js" / "app.js").read_bytes()
    assert got["/static/i18n/fr.json"].json()["mode.direct"] == "Direct (réseau local)"
    assert got["/static/vendor/uPlot.iife.min.js"].status_code == 200
    for outside in ("/static/../__init__.py", "/static/%2e%2e/__init__.py", "/static/js/nope.js"):
        assert got[outside].status_code == 404, outside
    state = got["/local/v1/state"].json()
    assert state["gateway"]["server_urls"] == ["https://tbms.example.com"]
    assert state["gateway"]["uplink"] == "wifi"


def test_history_gives_the_newest_samples_for_a_phone_backfill(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path)
    start = datetime.now(UTC) - timedelta(minutes=5)
    readings = [Reading(ts=start + timedelta(seconds=i), voltage_v=50 + i / 100) for i in range(30)]
    queue.put_many("p1", readings)

    async def go() -> tuple[list[int], list[int], list[int]]:
        api = LocalApi(LocalApiConfig(listen="127.0.0.1:0"), GatewayState(), queue, _status)
        await api.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}", timeout=10) as client:
                params: dict[str, Any] = {"battery_id": "p1", "limit": 5}
                first = (await client.get("/local/v1/history", params=params)).json()
                last = (await client.get("/local/v1/history", params={**params, "newest": 1})).json()
                every = (await client.get("/local/v1/history", params={**params, "limit": 100})).json()
            return tuple([s["seq"] for s in r["samples"]] for r in (first, last, every))  # type: ignore[return-value]
        finally:
            await api.stop()

    first, last, every = _run(go)
    assert len(every) == 30 and every == sorted(every)
    assert first == every[:5]
    assert last == every[-5:]  # the newest five, still oldest first


def test_locate_never_leaves_the_app_folder() -> None:
    from trackingbms import webapp

    assert webapp.locate("/") == STATIC_DIR / "index.html"
    assert webapp.locate("/static/js/app.js") == (STATIC_DIR / "js" / "app.js").resolve()
    for bad in (
        "/static/../__init__.py",
        "/static/../../gateway/local.py",
        "/static//etc/passwd",
        "/static/",
        "/static/js",
        "/etc/passwd",
        "/static/js/app.js\x00.png",
    ):
        assert webapp.locate(bad) is None, bad
