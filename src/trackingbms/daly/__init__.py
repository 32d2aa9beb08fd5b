"""Daly BMS protocol codecs, sans-I/O (no sockets, no asyncio, no clocks).

- :mod:`.a5` — A5 frames: checksum, requests, :class:`A5Parser` (stream parser with resync).
- :mod:`.records` — typed records and decoders for every A5 reply, multi-frame assembly.
- :mod:`.faults` — the 0x98 fault table: names, :data:`FAULT_TEXT`.
- :mod:`.poll` — one command's poll logic (request, expected frames, completion), writes.
- :mod:`.reading` — records → :class:`trackingbms.model.Reading`.
- :mod:`.stream` — decode captured hex (what ``trackingbms decode`` uses).
"""

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
