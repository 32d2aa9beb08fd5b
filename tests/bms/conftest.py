"""Fixtures: simulated packs (trackingbms.sim) served over real TCP sockets and ptys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from trackingbms.bms import DalyBMS
from trackingbms.links import open_link
from trackingbms.sim import PackConfig, Quirks, SimulatedPack, serve_pty, serve_tcp

# generous turnaround: the machines running the suite are shared and noisy; timing is not under test
TURNAROUND_S = 0.5


def make_pack(*, cells: int = 16, sensors: int = 4, seed: int = 1, **quirks: Any) -> SimulatedPack:
    quirks.setdefault("latency_s", 0.005)
    quirks.setdefault("baud", 0)  # no wire pacing: fast tests (the benchmark paces at 9600)
    return SimulatedPack(PackConfig(cells=cells, sensors=sensors, seed=seed), Quirks(**quirks))


@asynccontextmanager
async def served(packs: Any, transport: str = "tcp", **bms_kw: Any) -> AsyncIterator[DalyBMS]:
    endpoint = await (serve_tcp(packs, host="127.0.0.1", port=0) if transport == "tcp" else serve_pty(packs))
    port = endpoint.url if transport == "tcp" else endpoint.path
    link = await open_link(port)
    bms_kw.setdefault("turnaround_s", TURNAROUND_S)
    try:
        yield DalyBMS(link, **bms_kw)
    finally:
        await link.close()
        await endpoint.close()


@pytest.fixture
def bms_on() -> Callable[..., Any]:
    return served
