"""Several BMS on one RS485 bus: one shared link, one exchange on the wire at a time, each board its own
reading, even when the clients poll concurrently."""

from __future__ import annotations

import asyncio

import pytest

from trackingbms.bms import open_bms
from trackingbms.links import open_link
from trackingbms.sim import PackConfig, Quirks, SimulatedPack, serve_pty, serve_tcp


def board(protocol: str, n: int, cells: int) -> SimulatedPack:
    return SimulatedPack(
        PackConfig(cells=cells, sensors=1 + n % 3, seed=n),
        Quirks(protocol=protocol, board=n, latency_s=0.003, baud=0),
    )


@pytest.mark.parametrize(("protocol", "wire"), [("a5", "tcp"), ("p81", "tcp"), ("p81", "serial")])
async def test_boards_polled_concurrently_through_one_link_each_get_their_own(
    protocol: str, wire: str
) -> None:
    packs = [board(protocol, n, cells) for n, cells in ((1, 8), (2, 13), (5, 16))]
    endpoint = await (serve_tcp(packs) if wire == "tcp" else serve_pty(packs))
    link = await open_link(endpoint.url if wire == "tcp" else endpoint.path)
    clients = [await open_bms("shared", protocol, link=link, board=p.board, turnaround_s=0.5) for p in packs]
    try:
        for _ in range(3):
            readings = await asyncio.gather(*(c.snapshot() for c in clients))
            for p, r in zip(packs, readings, strict=True):
                assert not r.errors, r.errors
                assert r.cells_mv == p.battery.cells_mv()
                assert len(r.temps_c) == len(p.battery.temps_c())
        assert all(c.stats.frames_bad == 0 and c.stats.retries == 0 for c in clients)
    finally:
        for c in clients:
            await c.aclose()  # shared: the link stays open
        assert link._proto.closed is None  # type: ignore[attr-defined]
        await link.close()
        await endpoint.close()
