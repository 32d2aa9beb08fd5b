"""The endpoints over real byte streams (TCP sockets, ptys, HTTP): every wire quirk is observable by a client
that only sees bytes. Silence is proven without timing: a later request's reply arrives first."""

from __future__ import annotations

import asyncio
import json
import os
import time
import tty
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from trackingbms.daly.a5 import A5Parser, Frame, checksum
from trackingbms.daly.records import decode_frames
from trackingbms.sim import Bus, Quirks, serve_pty, serve_tcp, serve_truth, write_truth_file

from .conftest import IO_TIMEOUT_S, make_pack, read_exactly, read_until_frame, request

FAST = {"latency_s": 0.0, "baud": 0}


@asynccontextmanager
async def tcp(packs) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    server = await serve_tcp(packs, host="127.0.0.1", port=0)
    assert server.url == f"tcp://127.0.0.1:{server.port}"
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        await server.close()


async def exchange(reader, writer, data_id: int, frames: int = 1, address: int = 0x40, payload=b"") -> bytes:
    writer.write(request(data_id, address, payload))
    return await read_exactly(reader, 13 * frames)


def reply_frame(pack, data_id: int) -> bytes:
    """The frame the pack would send for ``data_id`` now, to look for it in a stream (no stale bytes)."""
    return Frame.from_bytes(pack.respond(request(data_id))[0].data[-13:]).to_bytes()  # past any junk


async def test_tcp_reply_decodes_to_the_pack() -> None:
    pack = make_pack(Quirks(**FAST), soc_pct=42)
    async with tcp(pack) as (reader, writer):
        raw = await exchange(reader, writer, 0x90)
        status = decode_frames([Frame.from_bytes(raw)])
        assert status.soc_pct == 42.0
        assert status.voltage_v == pytest.approx(pack.truth()["voltage_v"], abs=0.1)
        cells = await exchange(reader, writer, 0x95, frames=6)
        frames = A5Parser(board=1).feed(cells)
        assert decode_frames(frames, cell_count=16).cells_mv == pack.battery.cells_mv()


async def test_latency_and_wire_pacing_are_not_faster_than_configured() -> None:
    # only lower bounds: a busy machine can be slower, never faster than the simulated line
    pack = make_pack(Quirks(latency_s=0.1, baud=9600))
    async with tcp(pack) as (reader, writer):
        start = time.monotonic()
        await exchange(reader, writer, 0x95, frames=16, address=0x80)
        assert time.monotonic() - start >= 0.1 + 17 * 13 * 10 / 9600 - 0.005


async def test_several_tcp_clients_and_several_packs_in_one_process() -> None:
    packs = [make_pack(Quirks(**FAST), pack_id=f"p{i}", soc_pct=10 * i) for i in range(1, 4)]
    servers = [await serve_tcp(p, port=0) for p in packs]
    try:
        assert len({s.port for s in servers}) == 3
        for i, server in enumerate(servers, start=1):
            streams = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
            for reader, writer in streams:
                raw = await exchange(reader, writer, 0x90)
                assert decode_frames([Frame.from_bytes(raw)]).soc_pct == 10.0 * i
                writer.close()
    finally:
        for server in servers:
            await server.close()


async def test_shared_bus_routes_by_board_number() -> None:
    bus = Bus([make_pack(Quirks(board=b, **FAST), pack_id=f"b{b}", soc_pct=20 * b) for b in (1, 2, 3)])
    async with tcp(bus) as (reader, writer):
        for board in (3, 1, 2):
            raw = await exchange(reader, writer, 0x90, address=0x40 + board - 1)
            frame = Frame.from_bytes(raw)
            assert frame.address == board
            assert decode_frames([frame]).soc_pct == 20.0 * board


async def test_sleep_after_idle_time_echoes_the_request_then_wakes_on_current() -> None:
    pack = make_pack(Quirks(sleep_after_s=3600, **FAST), scenario="idle")
    async with tcp(pack) as (reader, writer):
        assert Frame.from_bytes(await exchange(reader, writer, 0x90)).address == 1
        pack.advance(3700)
        req = request(0x90)
        writer.write(req)
        assert await read_exactly(reader, 13) == req  # the client reads its own frame back (Q2)
        assert pack.truth()["asleep"]
        pack.wake()
        assert Frame.from_bytes(await exchange(reader, writer, 0x90)).address == 1


async def test_sleeping_without_echo_is_silent_and_current_wakes_it(tmp_path: Path) -> None:
    schedule = tmp_path / "s.csv"
    schedule.write_text("at_s,current_a\n0,0\n7200,-20\n")
    pack = make_pack(
        Quirks(sleep_after_s=600, echo_when_asleep=False, **FAST), scenario="schedule", schedule=schedule
    )
    async with tcp(pack) as (reader, writer):
        pack.advance(700)
        writer.write(request(0x91))
        for _ in range(1000):  # until the endpoint has seen it (bounded; not a timing assertion)
            if pack.stats["ignored"]:
                break
            await asyncio.sleep(0.01)
        assert pack.stats["ignored"] == 1 and pack.truth()["asleep"]
        pack.battery.scenario.steps[1] = (700.0, -20.0, 25.0)  # type: ignore[attr-defined]  # a load appears
        pack.battery.scenario.times[1] = 700.0  # type: ignore[attr-defined]
        pack.advance(10)
        assert not pack.truth()["asleep"]
        expected = reply_frame(pack, 0x90)
        writer.write(request(0x90))
        data = await read_until_frame(reader, expected)
        assert data == expected  # nothing came back for the request sent while asleep


async def test_wake_on_request_knob() -> None:
    pack = make_pack(Quirks(sleep_after_s=60, wake_on_request=True, **FAST))
    pack.advance(120)
    assert pack.truth()["asleep"]
    async with tcp(pack) as (reader, writer):
        assert Frame.from_bytes(await exchange(reader, writer, 0x90)).address == 1
    assert not pack.truth()["asleep"]


async def test_loss_truncates_frames_inside_bursts() -> None:
    pack = make_pack(Quirks(loss=1.0, **FAST), cells=16)
    async with tcp(pack) as (reader, writer):
        expected = reply_frame(pack, 0x90)  # single-frame replies are never cut
        writer.write(request(0x95))
        writer.write(request(0x90))
        data = await read_until_frame(reader, expected)
        burst = data[: -len(expected)]
        assert 6 * 7 <= len(burst) < 6 * 13  # every frame of the burst lost part of its tail
        parser = A5Parser(board=1)
        assert [f.data_id for f in parser.feed(data)] == [0x90]  # the client resyncs on the next reply


async def test_bad_checksums_are_seen_by_the_client() -> None:
    pack = make_pack(Quirks(bad_checksum=1.0, **FAST))
    async with tcp(pack) as (reader, writer):
        raw = await exchange(reader, writer, 0x90)
        assert raw[:4] == bytes.fromhex("a5019008") and raw[12] != checksum(raw[:12])


async def test_garbage_bytes_before_replies() -> None:
    pack = make_pack(Quirks(garbage=1.0, **FAST))
    async with tcp(pack) as (reader, writer):
        expected = reply_frame(pack, 0x90)
        writer.write(request(0x90))
        data = await read_until_frame(reader, expected)
        assert 13 < len(data) <= 13 + 4  # 1–4 junk bytes, then the intact reply
        assert [f.data_id for f in A5Parser(board=1).feed(data)] == [0x90]


async def test_host_address_knob_over_tcp() -> None:
    pack = make_pack(Quirks(hosts="0x40", **FAST))
    async with tcp(pack) as (reader, writer):
        writer.write(request(0x90, 0x80))  # ignored: this unit only answers 0x40
        expected = reply_frame(pack, 0x94)
        writer.write(request(0x94, 0x40))
        assert await read_until_frame(reader, expected) == expected


async def test_oversized_and_malformed_requests_are_ignored() -> None:
    pack = make_pack(Quirks(stale_bytes=False, **FAST))
    async with tcp(pack) as (reader, writer):
        writer.write(request(0x90) + bytes(200))  # padded request (dbus-serialbattery#397)
        await writer.drain()
        await asyncio.sleep(0.05)  # let it arrive as its own chunk; not a timing assertion
        bad = bytearray(request(0x91))
        bad[12] ^= 0xFF
        writer.write(bytes(bad))
        expected = reply_frame(pack, 0x92)
        writer.write(request(0x92))
        assert await read_until_frame(reader, expected) == expected


async def test_frame_policy_and_invert_current_over_tcp() -> None:
    pack = make_pack(
        Quirks(frames="all", invert_current=True, **FAST),
        scenario="constant",
        constant_current_a=-10.0,
        current_gain_error_pct=0,
        current_offset_a=0,
    )
    async with tcp(pack) as (reader, writer):
        burst = await exchange(reader, writer, 0x95, frames=16, address=0x40)
        assert [f.frame_no for f in A5Parser(board=1).feed(burst)] == list(range(1, 17))
        raw = Frame.from_bytes(await exchange(reader, writer, 0x90))
        assert int.from_bytes(raw.payload[4:6], "big") == 29900  # inverted: discharge below 30000
        assert decode_frames([raw], invert_current=True).current_a == -10.0


async def test_heartbeat_and_stale_bytes_over_tcp() -> None:
    pack = make_pack(Quirks(**FAST), soc_pct=88.8)
    async with tcp(pack) as (reader, writer):
        first = Frame.from_bytes(await exchange(reader, writer, 0x93)).payload[3]
        second = Frame.from_bytes(await exchange(reader, writer, 0x93)).payload[3]
        assert (second - first) % 256 == 1
        await exchange(reader, writer, 0x90)
        assert Frame.from_bytes(await exchange(reader, writer, 0x91)).payload[6:8] == bytes.fromhex("0378")


async def test_writes_over_tcp() -> None:
    pack = make_pack(Quirks(**FAST))
    async with tcp(pack) as (reader, writer):
        ack = Frame.from_bytes(await exchange(reader, writer, 0xDA, payload=b"\x00"))
        assert ack.payload[0] == 0
        assert not pack.truth()["charge_mos"]
        soc = (123).to_bytes(2, "big")
        await exchange(reader, writer, 0x21, payload=bytes(6) + soc)
        assert decode_frames([Frame.from_bytes(await exchange(reader, writer, 0x90))]).soc_pct == 12.3


def _open_raw(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    return fd


async def _pty_exchange(fd: int, data: bytes, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    os.write(fd, data)
    out = b""
    while len(out) < n:
        out += await asyncio.wait_for(loop.run_in_executor(None, os.read, fd, n - len(out)), IO_TIMEOUT_S)
    return out


async def test_pty_with_stable_link(tmp_path: Path) -> None:
    pack = make_pack(Quirks(**FAST), soc_pct=77)
    link = tmp_path / "daly0"
    endpoint = await serve_pty(pack, link=link)
    try:
        assert endpoint.path == str(link) and os.readlink(link) == endpoint.tty_path
        assert endpoint.tty_path.startswith("/dev/")
        fd = _open_raw(endpoint.path)
        try:
            raw = await _pty_exchange(fd, request(0x90, 0x80), 13)
            assert decode_frames([Frame.from_bytes(raw)]).soc_pct == 77.0
            burst = await _pty_exchange(fd, request(0x95, 0x80), 16 * 13)
            assert len(A5Parser(board=1).feed(burst)) == 16
        finally:
            os.close(fd)
    finally:
        await endpoint.close()
    assert not link.exists() and not link.is_symlink()


async def test_pty_link_refuses_to_replace_a_real_file(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    with pytest.raises(FileExistsError):
        await serve_pty(make_pack(), link=target)
    assert target.read_text() == "keep me"


async def test_pty_shared_bus() -> None:
    bus = [make_pack(Quirks(board=b, **FAST), pack_id=f"b{b}") for b in (1, 2)]
    endpoint = await serve_pty(bus)
    try:
        fd = _open_raw(endpoint.path)
        try:
            raw = await _pty_exchange(fd, request(0x94, 0x41), 13)
            assert Frame.from_bytes(raw).address == 2
        finally:
            os.close(fd)
    finally:
        await endpoint.close()


async def test_truth_over_http_and_as_a_file(tmp_path: Path) -> None:
    packs = [make_pack(pack_id="a", soc_pct=30), make_pack(pack_id="b", soc_pct=70, weak_cell=3)]
    server = await serve_truth(packs, port=0)
    try:

        async def get(path: str) -> tuple[str, dict]:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = await asyncio.wait_for(reader.read(), IO_TIMEOUT_S)
            writer.close()
            head, _, body = data.partition(b"\r\n\r\n")
            return head.split(b"\r\n")[0].decode(), json.loads(body)

        status, body = await get("/truth")
        assert status.endswith("200 OK") and set(body["packs"]) == {"a", "b"}
        assert body["packs"]["a"]["soc_pct"] == pytest.approx(30, abs=2)
        status, one = await get("/truth/b")
        assert one["weak_cell"] == 3 and len(one["cells"]) == 16
        assert {"soc_pct", "capacity_ah", "resistance_mohm"} <= set(one["cells"][0])
        status, _ = await get("/nope")
        assert status.endswith("404 Not Found")
    finally:
        await server.close()
    path = tmp_path / "truth.json"
    write_truth_file(packs, path)
    assert set(json.loads(path.read_text())["packs"]) == {"a", "b"}


async def test_pty_link_in_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match=r"cannot create link .*/missing/daly: no such file or directory"):
        await serve_pty(make_pack(), link=tmp_path / "missing" / "daly")
