"""Promises of docs/api.md tested over real HTTP / WebSocket: a slow live viewer loses its oldest updates
and never blocks ingest; on SQLite a seq re-used with another ts is refused by name, stored one kept."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from trackingbms.model import format_ts
from trackingbms.server import provisioning as p
from trackingbms.server.hub import Hub

from .conftest import World, client, sample

QUEUE = 5  # per-viewer queue for this test (1000 in service): small, so a few big messages overflow it


async def _post(w: World, token: str, samples: list) -> dict:
    async with client(w.base_url, token) as c:
        r = await c.post("/api/v1/ingest", json={"samples": samples})
        assert r.status_code == 200, r.text
        return r.json()


class RawViewer:
    """A live viewer on a plain blocking socket with a tiny receive buffer that reads only when told: a phone
    on a bad link. (A WebSocket library would keep reading in the background; websockets' sans-I/O protocol
    only frames the bytes.)"""

    def __init__(self, w: World, token: str) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.proto = ClientProtocol(
            parse_uri(w.base_url.replace("http", "ws") + f"/api/v1/live?token={token}")
        )
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", w.server.port))
        self.proto.send_request(self.proto.connect())
        self.sock.sendall(b"".join(self.proto.data_to_send()))
        self.pending: list[dict] = []

    def recv(self) -> dict:
        from websockets.frames import Frame

        while not self.pending:
            data = self.sock.recv(65536)
            assert data, "the server closed the live feed"
            self.proto.receive_data(data)
            self.sock.sendall(b"".join(self.proto.data_to_send()))  # pongs
            for event in self.proto.events_received():
                if isinstance(event, Frame) and event.opcode.name == "TEXT":
                    self.pending.append(orjson.loads(event.data))
        return self.pending.pop(0)

    def close(self) -> None:
        self.sock.close()


async def _heartbeat(w: World, version: str) -> None:
    async with client(w.base_url, w.a.device2) as c:
        r = await c.post("/api/v1/heartbeat", json={"version": version})
        assert r.status_code == 200  # the server goes on, whatever a viewer does


async def test_a_viewer_that_stops_reading_loses_its_oldest_updates_and_never_blocks_ingest(
    world: World, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the live feed does not depend on the database: once, on SQLite, is enough")
    a = world.a
    # the running app's own hub, with a short per-viewer queue (the service's default is 1000)
    app = world.server.server.config.app
    app.state.hub = app.state.ingest.hub = Hub(queue_size=QUEUE)  # the routes and the ingest service
    extra = [f"acme-live-{i}" for i in range(60)]  # more batteries on gw-1: more updates per request
    async with p.open_store(world.database_url) as store:
        for bid in extra:
            await p.create_battery(store, "acme", "depot", bid, device="gw-1")
    viewer = RawViewer(world, a.viewer)
    try:
        # subscribed once a heartbeat comes through (the server subscribes just after the handshake)
        viewer.sock.settimeout(1)
        while True:
            await _heartbeat(world, "probe")
            try:
                await asyncio.to_thread(viewer.recv)
                break
            except TimeoutError:
                continue
        viewer.sock.settimeout(30)
        await _heartbeat(world, "marker")
        while (await asyncio.to_thread(viewer.recv)).get("heartbeat", {}).get("version") != "marker":
            pass
        # the viewer stops reading. Updates are ~4 kB samples (errors text at its limit), one per battery of
        # a batch: the socket buffers in between fill and the viewer's queue overflows within a few requests
        # (few, because a viewer silent past the server's ping timeout is disconnected instead)
        requests, n = 12, 0
        start = datetime.now(UTC) - timedelta(minutes=5)
        for r in range(requests):
            batch = []
            for bid in extra:
                n += 1
                at = format_ts(start + timedelta(seconds=r))
                batch.append(sample(bid, r, ts=at, errors={"n": str(n), "0x95": "x" * 4000}))
            assert (await _post(world, a.device, batch))["accepted"] == len(extra)  # ingest went on
        last_sample = await _post(world, a.device, [sample(a.batteries[0], 1)])
        assert last_sample["accepted"] == 1
        seen: list[int] = []
        while not seen or seen[-1] < n:
            seen.append(int((await asyncio.to_thread(viewer.recv))["sample"]["errors"]["n"]))
        last = await asyncio.to_thread(viewer.recv)
    finally:
        viewer.close()
    assert last["type"] == "sample" and last["sample"]["seq"] == 1
    assert seen == sorted(set(seen)), "updates came out of order or twice"
    assert seen[-1] == n  # the newest update is never the one dropped
    assert len(seen) < n, "nothing was dropped: the test did not overflow the viewer's queue"
    # what was dropped was the oldest: the queue held the newest updates to the end (its last place went to
    # the sample ingested last), and a whole batch published at once keeps only its newest
    assert seen[-(QUEUE - 1) :] == list(range(n - QUEUE + 2, n + 1)), seen
    assert len(extra) - QUEUE < seen[0] <= len(extra), seen


async def test_sqlite_refuses_a_seq_reused_with_another_ts_and_keeps_the_stored_one(
    world: World, database_url: str
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip(
            "PostgreSQL keys samples by (stream, ts): a re-used seq is not detected there (docs/api.md)"
        )
    a = world.a
    bid = a.batteries[0]
    first = sample(bid, 42, seconds_ago=20)
    assert (await _post(world, a.device, [first]))["accepted"] == 1
    reused = sample(bid, 42, seconds_ago=10, voltage_v=40.0)  # same seq, another ts: not a re-send
    resent = dict(first)
    body = await _post(world, a.device, [reused, resent, sample(bid, 43, seconds_ago=5)])
    assert body == {
        "accepted": 1,
        "duplicates": 1,
        "rejected": [{"index": 0, "error": "seq: 42 was already stored with another ts"}],
    }
    async with client(world.base_url, a.admin) as c:
        r = await c.get(f"/api/v1/batteries/{bid}/export.csv", params={"from": "2020-01-01T00:00:00Z"})
    rows = [line.split(",") for line in r.text.splitlines()[1:]]
    assert [(row[0], row[1], row[4]) for row in rows] == [
        (first["ts"], "42", "53.2"),  # the stored sample is untouched
        (rows[1][0], "43", "53.2"),
    ]
