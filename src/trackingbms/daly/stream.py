"""Decode captured A5 traffic (hex text) into one JSON-ready object per response.

What ``trackingbms decode`` uses. Frames are found with the same resynchronising parser the client
uses; consecutive frames of one multi-frame reply are grouped; a 0x94 reply sets the cell and sensor
counts for the multi-frame replies after it. Everything that could not be decoded is reported as a
:class:`Problem` with its byte offset and the reason, and nothing decoded is lost because of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from trackingbms.daly.a5 import A5Parser, DalyError, Frame, is_host_address
from trackingbms.daly.records import (
    KNOWN_IDS,
    MULTI_FRAME,
    DecodeError,
    StatusInfo,
    assemble,
    decode_payload,
)

_REASONS = {
    "garbage": "bytes that do not start an A5 frame",
    "bad_checksum": "frame with a bad checksum",
    "truncated": "truncated frame (bytes lost, the next frame starts inside it)",
    "echo": "",
    "wrong_address": "",
}


class HexError(DalyError):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class Problem:
    offset: int  # byte offset in the decoded input
    length: int
    reason: str

    def __str__(self) -> str:
        return (
            f"byte offset {self.offset}: {self.reason} ({self.length} byte{'s' if self.length != 1 else ''})"
        )


def parse_hex(text: str) -> bytes:
    """Hex text → bytes: spaced or unspaced, ``0x`` prefixes, ``:``/``,``/``-`` separators allowed."""
    cleaned = re.sub(r"0[xX](?=[0-9a-fA-F])", "", text)
    digits: list[str] = []
    for i, ch in enumerate(cleaned):
        if ch in "0123456789abcdefABCDEF":
            digits.append(ch)
        elif ch.isspace() or ch in ":,-":
            if len(digits) % 2:
                # a lone digit between separators: "a5 1 90" → treat as 0x01
                digits.insert(len(digits) - 1, "0")
        else:
            raise HexError(f"not a hex digit: {ch!r} at character {i}", len(digits) // 2)
    if len(digits) % 2:
        raise HexError("odd number of hex digits (half a byte at the end)", len(digits) // 2)
    return bytes.fromhex("".join(digits))


def _request_json(frame: Frame) -> dict[str, Any]:
    p = frame.payload
    out: dict[str, Any] = {
        "data_id": f"0x{frame.data_id:02X}",
        "direction": "request",
        "host_address": f"0x{frame.address:02X}",
    }
    if frame.data_id == 0xD9:
        out["discharge_mos"] = bool(p[0])
    elif frame.data_id == 0xDA:
        out["charge_mos"] = bool(p[0])
    elif frame.data_id == 0x21:
        out["soc_pct"] = int.from_bytes(p[6:8], "big") / 10
        out["rtc"] = f"{2000 + p[0]:04d}-{p[1]:02d}-{p[2]:02d}T{p[3]:02d}:{p[4]:02d}:{p[5]:02d}"
    return out


def _response_json(
    frames: list[Frame], cells: int | None, sensors: int | None, invert_current: bool
) -> dict[str, Any]:
    data_id = frames[0].data_id
    if data_id in MULTI_FRAME:
        count = cells if data_id == 0x95 else sensors if data_id == 0x96 else None
        rec = assemble(data_id, frames, count)
    else:
        rec = decode_payload(data_id, frames[0].payload, invert_current=invert_current, cell_count=cells)
    out = rec.to_json()
    if frames[0].address != 1:
        out["board"] = frames[0].address
    return out


def decode_hex_stream(
    data: bytes,
    *,
    cells: int | None = None,
    sensors: int | None = None,
    invert_current: bool = False,
) -> tuple[list[dict[str, Any]], list[Problem]]:
    """Decode a byte stream of A5 frames. Returns (objects, problems)."""
    problems: list[Problem] = []

    def on_drop(offset: int, length: int, reason: str) -> None:
        problems.append(Problem(offset, length, _REASONS.get(reason) or reason))

    parser = A5Parser(board=None, on_drop=on_drop)
    found = parser.feed_with_offsets(data, final=True)
    if parser.pending:
        problems.append(
            Problem(
                parser.offset,
                parser.pending,
                "truncated frame at end of input (an A5 frame is 13 bytes)",
            )
        )
    out: list[dict[str, Any]] = []
    group: list[Frame] = []
    group_offset = 0
    fixed_cells, fixed_sensors = cells, sensors

    def flush() -> None:
        nonlocal cells, sensors, group
        if not group:
            return
        try:
            obj = _response_json(group, cells, sensors, invert_current)
        except DecodeError as e:
            problems.append(Problem(group_offset, 13 * len(group), str(e)))
        else:
            out.append(obj)
            if group[0].data_id == 0x94:
                st = decode_payload(0x94, group[0].payload)
                assert isinstance(st, StatusInfo)
                # explicit --cells / --sensors win over what the capture says
                cells = fixed_cells if fixed_cells is not None else st.cell_count
                sensors = fixed_sensors if fixed_sensors is not None else st.temp_sensor_count
        group = []

    for offset, frame in found:
        if is_host_address(frame.address):
            flush()
            out.append(_request_json(frame))
            continue
        if frame.data_id not in KNOWN_IDS:
            flush()
            problems.append(Problem(offset, 13, f"unknown A5 data id 0x{frame.data_id:02X}"))
            continue
        same_burst = (
            group
            and frame.data_id == group[0].data_id
            and frame.data_id in MULTI_FRAME
            and frame.address == group[0].address
            and frame.frame_no > group[-1].frame_no
        )
        if not same_burst:
            flush()
            group_offset = offset
        group.append(frame)
    flush()
    return out, _coalesce(sorted(problems, key=lambda p: p.offset))


def _coalesce(problems: list[Problem]) -> list[Problem]:
    """A corrupt frame shows up as its first byte plus the garbage after it: report it once."""
    out: list[Problem] = []
    for p in problems:
        prev = out[-1] if out else None
        if (
            prev is not None
            and p.offset == prev.offset + prev.length
            and p.reason == _REASONS["garbage"]
            and prev.reason in (_REASONS["truncated"], _REASONS["bad_checksum"])
        ):
            out[-1] = Problem(prev.offset, prev.length + p.length, prev.reason)
        else:
            out.append(p)
    return out


__all__ = ["HexError", "Problem", "decode_hex_stream", "parse_hex"]
