"""Decode captured D2 / 0x81 traffic (bytes) into one JSON-ready object per frame, sans-I/O.

What ``trackingbms decode`` uses for Modbus-shaped captures. A read reply does not carry its start
register: it comes from the request just before it in the capture, else from ``start`` (default 0x0000).
Requests and replies are told apart by address (0x81–0x90 ask, 0x51–0x60 answer; 0xD2 does both) and by
which reading checks out with its CRC. Bytes that form no frame are reported with their offset.
"""

from __future__ import annotations

from typing import Any

from trackingbms.daly import d2, p81
from trackingbms.daly.modbus import (
    READ,
    WRITE_MULTIPLE,
    WRITE_SINGLE,
    _reply_length,
    crc_ok,
    parse_reply,
    parse_request,
    request_length,
)

WRITE_MEANING = {
    ("d2", d2.REG_CHARGE_MOS): "charge MOS",
    ("d2", d2.REG_DISCHARGE_MOS): "discharge MOS",
    ("d2", d2.REG_SOC): "SOC set (0.1 %)",
    ("d2", 0xCF): "balancer",
    ("p81", p81.REG_CHARGE_MOS): "charge MOS",
    ("p81", p81.REG_DISCHARGE_MOS): "discharge MOS",
}


def looks_modbus(data: bytes) -> bool:
    """The capture starts like a D2 / 0x81 frame (address, then a known function)."""
    return (
        len(data) >= 5
        and (data[0] == d2.ADDRESS or p81.board_of(data[0]) is not None)
        and data[1] in (READ, WRITE_SINGLE, WRITE_MULTIPLE, READ | 0x80, WRITE_SINGLE | 0x80)
    )


def _family(address: int) -> str:
    return "d2" if address == d2.ADDRESS else "p81"


def _request_json(raw: bytes) -> dict[str, Any] | None:
    req = parse_request(raw)
    if req is None or req.register is None or req.value is None:
        return None
    fam = _family(req.address)
    out: dict[str, Any] = {"protocol": fam, "direction": "request", "address": f"0x{req.address:02X}"}
    if fam == "p81":
        out["board"] = p81.board_of(req.address)
    out["function"] = req.function
    if req.function == READ:
        out.update(start_register=f"0x{req.register:04X}", count=req.value)
    elif req.function == WRITE_SINGLE:
        out.update(register=f"0x{req.register:04X}", value=req.value)
        if meaning := WRITE_MEANING.get((fam, req.register)):
            out["meaning"] = meaning
    else:
        out.update(start_register=f"0x{req.register:04X}", count=req.value, values=list(req.registers))
    return out


def _reply_json(raw: bytes, start: int, invert_current: bool) -> dict[str, Any]:
    frame = parse_reply(raw)
    fam = _family(frame.address)
    # a D2 write and its echo are the same bytes
    direction = "write (request or its echo)" if fam == "d2" and frame.function != READ else "reply"
    out: dict[str, Any] = {"protocol": fam, "direction": direction, "address": f"0x{frame.address:02X}"}
    if fam == "p81":
        out["board"] = p81.board_of(frame.address)
    out["function"] = frame.function
    if frame.exception is not None:
        out["exception"] = frame.exception
    elif frame.function == READ:
        out["byte_count"] = frame.byte_count
        decode = d2.decode_block if fam == "d2" else p81.decode_block
        out.update(decode(start, list(frame.registers), invert_current=invert_current))
        if len(frame.registers) <= 8:
            out.setdefault("values", list(frame.registers))  # short reads: the raw values too
    else:
        key = "register" if frame.function == WRITE_SINGLE else "start_register"
        out[key] = f"0x{frame.register or 0:04X}"
        out["value" if frame.function == WRITE_SINGLE else "count"] = frame.value
        if frame.function == WRITE_SINGLE and (meaning := WRITE_MEANING.get((fam, frame.register or 0))):
            out["meaning"] = meaning
    return out


def decode_modbus(
    data: bytes, *, start: int | None = None, invert_current: bool = False
) -> tuple[list[dict[str, Any]], list[str]]:
    """Objects for every frame found, and the problems (offset and reason) of what was skipped."""
    objects: list[dict[str, Any]] = []
    problems: list[str] = []
    last_start: int | None = None
    i, skipped_at, skipped = 0, 0, 0

    def note_skip() -> None:
        nonlocal skipped
        if skipped:
            problems.append(f"byte offset {skipped_at}: {skipped} byte(s) that form no D2 / 0x81 frame")
            skipped = 0

    while i < len(data):
        buf = data[i:]
        addr = buf[0]
        is_addr = addr == d2.ADDRESS or p81.board_of(addr) is not None
        got: tuple[int, dict[str, Any]] | None = None
        if is_addr and len(buf) >= 4:
            may_ask = addr == d2.ADDRESS or addr > p81.REQUEST_BASE
            may_answer = addr == d2.ADDRESS or addr < p81.REQUEST_BASE
            n = _reply_length(bytearray(buf)) if may_answer else None
            if n and len(buf) >= n and crc_ok(buf[:n]):
                reply_start = last_start if last_start is not None else (start or 0)
                if buf[1] == READ:
                    last_start = None  # a request's start applies to its own reply only
                got = (n, _reply_json(buf[:n], reply_start, invert_current))
            elif may_ask:
                m = request_length(buf)
                if m and len(buf) >= m and (obj := _request_json(buf[:m])) is not None:
                    if buf[1] == READ:
                        last_start = int(obj["start_register"], 16)
                    got = (m, obj)
        if got is None:
            if not skipped:
                skipped_at = i
            skipped += 1
            i += 1
            continue
        note_skip()
        n, obj = got
        obj["offset"] = i
        objects.append(obj)
        i += n
    note_skip()
    return objects, problems
