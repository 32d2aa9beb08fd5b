"""The phone relay at the gateway (issue 12, item 4): its LAN API hands out the unsent samples page by page,
believes only a receipt the server signed for its own device token, and then stops holding what the server
has. Over real HTTP and WebSocket, against a real server process; the phone's part is done here with httpx
and websockets, exactly as relay.js does it (the browser test is tests/web/test_relay_browser.py)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets

from trackingbms.gateway.config import LocalApiConfig
from trackingbms.gateway.local import LocalApi
from trackingbms.gateway.queue import DurableQueue
from trackingbms.gateway.relay import RelayDesk
from trackingbms.gateway.state import GatewayState
from trackingbms.model import Reading, relay_key, relay_key_id, relay_signature

from .harness import ServerProcess


async def _status() -> dict[str, Any]:
    return {"uplink": None, "queue_depth": 0}


def _run(go: Callable[[], Any]) -> Any:
    # a thread of its own: the browser tests' Playwright session may own this thread's event loop
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result(timeout=120)


def _fill(queue: DurableQueue, battery_id: str, n: int) -> list[int]:
    start = datetime.now(UTC) - timedelta(minutes=30)
    readings = [
        Reading(ts=start + timedelta(seconds=i), source="sim", voltage_v=52.0 + i / 100, cells_mv=[3300] * 8)
        for i in range(n)
    ]
    return [s.seq for s in queue.put_many(battery_id, readings)]


async def _receipt(base: str, message: str | bytes, lan_token: str | None = None) -> dict[str, Any]:
    url = (
        base.replace("http://", "ws://")
        + "/local/v1/relay/receipt"
        + (f"?token={lan_token}" if lan_token else "")
    )
    async with websockets.connect(url) as ws:
        await ws.send(message)
        return orjson.loads(await ws.recv())


def _pending(state_dir: Path) -> int:
    db = sqlite3.connect(state_dir / "queue.sqlite3")
    try:
        return db.execute("SELECT count(*) FROM samples WHERE acked = 0").fetchone()[0]
    finally:
        db.close()


def test_unsent_samples_go_to_the_server_once_and_only_a_signed_receipt_settles_them(
    tmp_path: Path, server: Callable[..., ServerProcess]
) -> None:
    srv = server(["p1", "p2"])
    state_dir = tmp_path / "gw"
    queue = DurableQueue(state_dir)
    seqs = {"p1": _fill(queue, "p1", 30), "p2": _fill(queue, "p2", 25)}
    queue.settle(acked=[q.id for q in queue.unsent(limit=5)])  # the uplink got the first 5 of p1 through
    sent_before = seqs["p1"][:5]

    state = GatewayState()

    async def go() -> None:
        api = LocalApi(
            LocalApiConfig(listen="127.0.0.1:0"),
            state,
            queue,
            _status,
            ["wifi"],
            relay=RelayDesk(queue, srv.device_token, [srv.url], state),
        )
        await api.start()
        base = f"http://127.0.0.1:{api.port}"
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as lan:
                info = (await lan.get("/local/v1/relay")).json()
                assert info["device_key"] == relay_key_id(relay_key(srv.device_token))
                assert info["server_urls"] == [srv.url] and info["unsent"] == 50
                # pages of 20, oldest first, until `next` is null
                got: list[dict[str, Any]] = []
                after = 0
                while True:
                    page = (
                        await lan.get("/local/v1/relay/samples", params={"after": after, "limit": 20})
                    ).json()
                    got += page["samples"]
                    if page["next"] is None:
                        break
                    after = page["next"]
                assert [(s["battery_id"], s["seq"]) for s in got] == [
                    *(("p1", s) for s in seqs["p1"][5:]),
                    *(("p2", s) for s in seqs["p2"]),
                ]
                assert all("via" not in s for s in got)
                bad = await lan.get("/local/v1/relay/samples", params={"limit": "lots"})
                assert bad.status_code == 400 and "integers" in bad.json()["detail"]

            # the phone uploads them with the user's login
            async with httpx.AsyncClient(base_url=srv.url, headers=srv.user_headers(), timeout=30) as api_c:
                r = await api_c.post("/api/v1/relay", json={"device_key": info["device_key"], "samples": got})
                assert r.status_code == 200, r.text
                reply = r.json()
                assert (reply["accepted"], reply["duplicates"], reply["rejected"]) == (50, 0, [])
            receipt = reply["receipt"]

            # forged or altered receipts change nothing, with a clear answer
            payload = orjson.loads(receipt["payload"])
            payload["batteries"]["p1"] = [[0, 2**62]]  # "the server has everything"
            forged = orjson.dumps(payload).decode()
            for message, status in (
                (orjson.dumps({**receipt, "payload": forged}), 403),  # altered: signature fails
                (orjson.dumps({"v": 1, "payload": forged, "sig": relay_signature(b"k" * 32, forged)}), 403),
                (
                    orjson.dumps(
                        {"v": 1, "payload": forged, "sig": relay_signature(relay_key("tbd_other"), forged)}
                    ),
                    403,
                ),
                (b"{not json", 400),
                (orjson.dumps({"v": 2, "payload": "{}", "sig": ""}), 400),
            ):
                answer = await _receipt(base, message)
                assert answer["status"] == status and "acked" not in answer, answer
            assert (
                "nothing was dropped"
                in (await _receipt(base, orjson.dumps({**receipt, "sig": "0" * 64})))["error"]
            )
            assert _pending(state_dir) == 50
            assert state.last_via is None

            # the real one: the gateway stops holding them (still in its local history)
            assert await _receipt(base, orjson.dumps(receipt)) == {"acked": 50}
            assert _pending(state_dir) == 0
            assert state.last_via == "phone"  # the heartbeat and the gateway page say the path taken
            assert await _receipt(base, orjson.dumps(receipt)) == {"acked": 0}  # twice: harmless
            async with httpx.AsyncClient(base_url=base, timeout=10) as lan:
                assert (await lan.get("/local/v1/relay")).json()["unsent"] == 0
                assert (await lan.get("/local/v1/relay/samples")).json() == {
                    "device_key": info["device_key"],
                    "samples": [],
                    "next": None,
                }
                history = (await lan.get("/local/v1/history", params={"limit": 100})).json()["samples"]
                assert len(history) == 55
        finally:
            await api.stop()

    _run(go)
    queue.close()
    # on the server: each seq once, via phone; the 5 the uplink had sent are not there (never uploaded here)
    for bid in ("p1", "p2"):
        rows = srv.export(bid)
        # seqs are per battery (from the clock): p2's may equal p1's, so only p1's first 5 are left out
        want = [s for s in seqs[bid] if bid != "p1" or s not in sent_before]
        assert [int(r["seq"]) for r in rows] == want
        assert {r["via"] for r in rows} == {"phone"}


def test_the_relay_routes_need_the_lan_token_when_one_is_set(tmp_path: Path) -> None:
    queue = DurableQueue(tmp_path)
    _fill(queue, "p1", 3)

    async def go() -> None:
        api = LocalApi(
            LocalApiConfig(listen="127.0.0.1:0", token="lan-secret"),
            GatewayState(),
            queue,
            _status,
            relay=RelayDesk(queue, "tbd_device-token", []),
        )
        await api.start()
        base = f"http://127.0.0.1:{api.port}"
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as lan:
                for path in ("/local/v1/relay", "/local/v1/relay/samples"):
                    assert (await lan.get(path)).status_code == 401
                    assert (await lan.get(path, params={"token": "lan-secret"})).status_code == 200
            try:
                await _receipt(base, b"{}")
                raise AssertionError("the receipt socket opened without the LAN token")
            except websockets.InvalidStatus as e:
                assert e.response.status_code == 401
            assert (await _receipt(base, b"{}", "lan-secret"))["status"] == 400
        finally:
            await api.stop()

    _run(go)
    queue.close()
