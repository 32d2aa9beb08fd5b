"""Daly BMS protocol codecs, sans-I/O (no sockets, no asyncio, no clocks).

- :mod:`.a5` — A5 frames: checksum, requests, :class:`A5Parser` (stream parser with resync).
- :mod:`.records` — typed records and decoders for every A5 reply, multi-frame assembly.
- :mod:`.faults` — the 0x98 fault table: names, :data:`FAULT_TEXT`.
- :mod:`.poll` — one command's poll logic (request, expected frames, completion), writes.
- :mod:`.reading` — records → :class:`trackingbms.model.Reading`.
- :mod:`.stream` — decode captured hex (what ``trackingbms decode`` uses).


Importing the package is cheap: each name below is imported from its submodule on first use (PEP 562), so
``trackingbms decode`` of an A5 frame loads the A5 codec alone, not pydantic's model or the Modbus exchange.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: the submodule that defines each public name
_SUBMODULES: dict[str, tuple[str, ...]] = {
    "a5": (
        "HOST_RS485",
        "HOST_UART",
        "A5Parser",
        "DalyError",
        "Frame",
        "FrameError",
        "checksum",
        "encode_frame",
        "encode_request",
        "frame_time_s",
        "host_address",
    ),
    "faults": ("FAULT_TEXT", "decode_fault_bits", "fault_text"),
    "poll": ("COMMANDS", "SNAPSHOT_ORDER", "CommandPoll"),
    "reading": ("to_reading",),
    "records": ("DecodeError", "Record", "assemble", "current_from_raw", "decode_frames", "decode_payload"),
}
_EXPORTS: dict[str, str] = {name: module for module, names in _SUBMODULES.items() for name in names}

__all__ = [
    "COMMANDS",
    "FAULT_TEXT",
    "HOST_RS485",
    "HOST_UART",
    "SNAPSHOT_ORDER",
    "A5Parser",
    "CommandPoll",
    "DalyError",
    "DecodeError",
    "Frame",
    "FrameError",
    "Record",
    "assemble",
    "checksum",
    "current_from_raw",
    "decode_fault_bits",
    "decode_frames",
    "decode_payload",
    "encode_frame",
    "encode_request",
    "fault_text",
    "frame_time_s",
    "host_address",
    "to_reading",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'trackingbms.daly' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"trackingbms.daly.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from trackingbms.daly.a5 import (
        HOST_RS485,
        HOST_UART,
        A5Parser,
        DalyError,
        Frame,
        FrameError,
        checksum,
        encode_frame,
        encode_request,
        frame_time_s,
        host_address,
    )
    from trackingbms.daly.faults import FAULT_TEXT, decode_fault_bits, fault_text
    from trackingbms.daly.poll import COMMANDS, SNAPSHOT_ORDER, CommandPoll
    from trackingbms.daly.reading import to_reading
    from trackingbms.daly.records import (
        DecodeError,
        Record,
        assemble,
        current_from_raw,
        decode_frames,
        decode_payload,
    )
