"""Fixtures for the CAN and BLE wires: simulated packs on python-can's virtual bus, on an slcan pty,
and behind a bumble GATT peripheral on a virtual controller."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from trackingbms.sim import PackConfig, Quirks, SimulatedPack


def make_pack(
    *, cells: int = 16, sensors: int = 4, seed: int = 1, board: int = 1, **cfg: Any
) -> SimulatedPack:
    quirk_keys = {f for f in Quirks.__dataclass_fields__}  # type: ignore[attr-defined]
    quirks = {k: cfg.pop(k) for k in list(cfg) if k in quirk_keys}
    quirks.setdefault("latency_s", 0.005)
    quirks.setdefault("baud", 0)
    return SimulatedPack(
        PackConfig(cells=cells, sensors=sensors, seed=seed, pack_id=f"sim-{board}", **cfg),
        Quirks(board=board, **quirks),
    )


@pytest.fixture
def channel() -> str:
    """A python-can virtual channel nobody else uses (engineers share the machine)."""
    return f"tbms-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def need_bumble() -> None:
    pytest.importorskip("bumble", reason="bumble is not installed (pip install 'trackingbms[ble]')")
