"""Helpers for the simulator's tests: requests, decoding with the project's own codec, raw byte I/O."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from trackingbms.daly.a5 import Frame, encode_frame
from trackingbms.daly.records import Record, decode_frames
from trackingbms.sim import Emission, ManualClock, PackConfig, Quirks, SimulatedPack

#: generous bound for "the reply arrives": a safety net, not a timing assertion
IO_TIMEOUT_S = 10.0


def make_pack(quirks: Quirks | None = None, **config: Any) -> SimulatedPack:
    """A pack whose simulated time only moves with ``advance`` (wire quirks default to fast and clean)."""
    return SimulatedPack(PackConfig(**config), quirks or Quirks(latency_s=0.0, baud=0), clock=ManualClock())


def request(data_id: int, address: int = 0x40, payload: bytes = b"") -> bytes:
    return encode_frame(address, data_id, payload)


def frames_of(emissions: Sequence[Emission]) -> list[Frame]:
    return [Frame.from_bytes(e.data) for e in emissions]


def ask(pack: SimulatedPack, data_id: int, address: int = 0x40, payload: bytes = b"") -> list[Frame]:
    return frames_of(pack.respond(request(data_id, address, payload)))


def decode(pack: SimulatedPack, data_id: int, address: int = 0x40, **kw: Any) -> Record:
    frames = ask(pack, data_id, address)
    assert frames, f"no reply to 0x{data_id:02X}"
    kw.setdefault("cell_count", pack.config.cells)
    kw.setdefault("sensor_count", pack.config.sensors)
    kw.setdefault("invert_current", pack.quirks.invert_current)
    return decode_frames(frames, **kw)


async def read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), IO_TIMEOUT_S)


async def read_until_frame(reader: asyncio.StreamReader, frame: bytes) -> bytes:
    """Everything up to and including ``frame`` (used to prove silence: nothing came before it)."""
    data = await asyncio.wait_for(reader.readuntil(frame), IO_TIMEOUT_S)
    return data
