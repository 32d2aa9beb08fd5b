"""The Bluetooth payload format, version 1: sans-I/O encode and decode of both directions (docs/ble.md).

Hand-written binary (``struct`` and byte counts) rather than CBOR / protobuf: a 16S reading must fit one
notification at a modest ATT MTU (73 bytes here against ~400 as JSON), the app decodes it in ~150 lines of
JavaScript with no library (the PWA vendors nothing for this), and every byte is specified in docs/ble.md.
The JavaScript decoder (``static/js/ble.js``) is tested in Chromium against vectors made here.

Layers, from the radio up:

- **Fragments.** Every notification (``live``, ``response``) and every write (``command``) carries one
  fragment: a header byte (bit 7 = more fragments follow, bits 0–6 = fragment index, 0 for the first)
  and up to ``ATT MTU − 4`` bytes of a message. :func:`fragment` splits, :class:`Reassembler` joins; a
  fragment out of order drops the message (notifications do not get lost on a live link, but a phone's
  queue may overflow) and the next index 0 starts afresh. At an MTU ≥ 77 a 16S reading is one fragment.
- **Messages.** Byte 0 = format version (1), byte 1 = kind: :data:`KIND_READING` (live), a request
  (:data:`KIND_REQUEST`, written by the client) or a response (:data:`KIND_RESPONSE`).
- **Readings.** A battery index (position in the gateway's info), ``seq`` (u48), ``ts`` (u48 ms since
  the Unix epoch), a u16 mask of the fields present (a partial sample stays partial), then the present
  fields in mask order at the wire's resolution: V in 0.01, A in 0.1 (signed, + = charging), SOC in 0.1 %,
  remaining in mAh, whole °C offset by 40 as Daly sends them.

Everything is big-endian. Strings are a u8 byte count and UTF-8 (cut at 255 bytes on a character boundary).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from trackingbms.model import SOURCES, STATES, format_ts

VERSION = 1

#: 128-bit UUIDs of the service and its characteristics (random base 71de….-bf98-4cc9-9194-44c4f14e3ad9)
SERVICE_UUID = "71de0001-bf98-4cc9-9194-44c4f14e3ad9"
LIVE_UUID = "71de0002-bf98-4cc9-9194-44c4f14e3ad9"  # notify: readings as they are taken
COMMAND_UUID = "71de0003-bf98-4cc9-9194-44c4f14e3ad9"  # write: requests
RESPONSE_UUID = "71de0004-bf98-4cc9-9194-44c4f14e3ad9"  # notify: responses
#: advertised name: NAME_PREFIX + the gateway's device name (Web Bluetooth filters on the prefix)
NAME_PREFIX = "TrackingBMS-"

DEFAULT_MTU = 23
#: ATT header of a notification / write (opcode + handle) and our fragment header
ATT_OVERHEAD = 3
FRAGMENT_HEADER = 1
MORE = 0x80
MAX_FRAGMENTS = 128

KIND_READING = 0x01
KIND_REQUEST = 0x10
KIND_RESPONSE = 0x11

# commands (request byte 3)
CMD_INFO = 0x01
CMD_GET_READING = 0x02
CMD_HISTORY = 0x03
CMD_SET_UPLINK = 0x20
CMD_SET_WIFI = 0x21
CMD_SET_POLL = 0x22
#: commands that change the gateway: they need the pairing code
CONFIG_COMMANDS = frozenset({CMD_SET_UPLINK, CMD_SET_WIFI, CMD_SET_POLL})
COMMAND_NAMES = {
    CMD_INFO: "info",
    CMD_GET_READING: "get_reading",
    CMD_HISTORY: "history",
    CMD_SET_UPLINK: "set_uplink",
    CMD_SET_WIFI: "set_wifi",
    CMD_SET_POLL: "set_poll",
}

# response status (byte 3); anything but OK carries a UTF-8 message as its body
OK = 0
BAD_REQUEST = 1
UNKNOWN_COMMAND = 2
PAIRING_REQUIRED = 3
LOCKED_OUT = 4
NOT_FOUND = 5
UNSUPPORTED = 6
INVALID_VALUE = 7
INTERNAL_ERROR = 8
BAD_VERSION = 9
STATUS_NAMES = {
    OK: "ok",
    BAD_REQUEST: "bad_request",
    UNKNOWN_COMMAND: "unknown_command",
    PAIRING_REQUIRED: "pairing_required",
    LOCKED_OUT: "locked_out",
    NOT_FOUND: "not_found",
    UNSUPPORTED: "unsupported",
    INVALID_VALUE: "invalid_value",
    INTERNAL_ERROR: "internal_error",
    BAD_VERSION: "bad_version",
}
#: battery index meaning "every battery" (set_poll)
ALL_BATTERIES = 0xFF
LINK_STATES = ("ok", "degraded", "asleep", "disconnected")

#: reading fields in mask-bit order (bit 0 first); "flags" packs the four booleans in one byte
MASK_FIELDS = (
    "source",
    "voltage_v",
    "current_a",
    "soc_pct",
    "remaining_ah",
    "cycles",
    "state",
    "flags",
    "fault_code",
    "cells_mv",
    "temps_c",
    "balancing",
    "faults",
    "errors",
)
FLAG_FIELDS = ("charge_mos", "discharge_mos", "charger_connected", "load_connected")


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PayloadError(ValueError):
    """Bytes that are not a valid message of this format, or a value the format cannot carry."""


# ------------------------------------------------------------------------------------------ fragments


def payload_size(mtu: int) -> int:
    """Message bytes per fragment at an ATT MTU (20 − 1 = 19 at the default 23)."""
    return max(1, mtu - ATT_OVERHEAD - FRAGMENT_HEADER)


def max_message(mtu: int) -> int:
    """The largest message that fits the 128 fragments a header can number."""
    return MAX_FRAGMENTS * payload_size(mtu)


def fragment(message: bytes, mtu: int = DEFAULT_MTU) -> list[bytes]:
    """Split a message into notification / write payloads for this MTU."""
    size = payload_size(mtu)
    parts = [message[i : i + size] for i in range(0, len(message), size)] or [b""]
    if len(parts) > MAX_FRAGMENTS:
        raise PayloadError(f"message of {len(message)} bytes needs {len(parts)} fragments at MTU {mtu}")
    last = len(parts) - 1
    return [bytes([(MORE if i < last else 0) | i]) + p for i, p in enumerate(parts)]


class Reassembler:
    """Fragments in, whole messages out. One per characteristic and connection."""

    def __init__(self, max_bytes: int = 64 * 1024) -> None:
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._next = 0  # index expected; -1 = skipping until a first fragment
        self.dropped = 0

    def feed(self, data: bytes) -> bytes | None:
        """A fragment; returns the message it completes, or None."""
        if not data:
            self.dropped += 1
            return None
        head, body = data[0], data[1:]
        index = head & 0x7F
        if index == 0:
            if self._buf or self._next > 0:
                self.dropped += 1  # a new message began before the last one ended
            self._buf = bytearray()
        elif index != self._next:
            if self._next != -1:
                self.dropped += 1
            self._buf = bytearray()
            self._next = -1
            return None
        self._buf += body
        if len(self._buf) > self.max_bytes:
            self.dropped += 1
            self._buf = bytearray()
            self._next = -1
            return None
        if head & MORE:
            self._next = index + 1
            return None
        message = bytes(self._buf)
        self._buf = bytearray()
        self._next = 0
        return message


# ------------------------------------------------------------------------------------ primitive writers


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def u8(self, v: int) -> None:
        self.out += _pack(">B", v)

    def u16(self, v: int) -> None:
        self.out += _pack(">H", v)

    def i16(self, v: int) -> None:
        self.out += _pack(">h", v)

    def u32(self, v: int) -> None:
        self.out += _pack(">I", v)

    def u48(self, v: int) -> None:
        if not 0 <= v < 1 << 48:
            raise PayloadError(f"{v} does not fit 48 bits")
        self.out += v.to_bytes(6, "big")

    def text(self, s: str) -> None:
        raw = s.encode("utf-8")
        if len(raw) > 255:  # cut on a character boundary
            raw = raw[:255].decode("utf-8", "ignore").encode("utf-8")
        self.u8(len(raw))
        self.out += raw


def _pack(fmt: str, v: int) -> bytes:
    try:
        return struct.pack(fmt, v)
    except struct.error:
        raise PayloadError(f"{v} out of range for {fmt}") from None


class _Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise PayloadError(f"message cut short: needs {self.pos + n} bytes, has {len(self.data)}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def i16(self) -> int:
        return int.from_bytes(self.take(2), "big", signed=True)

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u48(self) -> int:
        return int.from_bytes(self.take(6), "big")

    def text(self) -> str:
        raw = self.take(self.u8())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("a string is not UTF-8") from None

    def end(self) -> None:
        if self.pos != len(self.data):
            raise PayloadError(f"{len(self.data) - self.pos} unexpected bytes at the end of the message")


def _header(w: _Writer, kind: int) -> None:
    w.u8(VERSION)
    w.u8(kind)


def _check_header(r: _Reader, kind: int | None = None) -> int:
    version = r.u8()
    if version != VERSION:
        raise PayloadError(f"format version {version}; this side speaks version {VERSION} (update it)")
    got = r.u8()
    if kind is not None and got != kind:
        raise PayloadError(f"message kind 0x{got:02x}, expected 0x{kind:02x}")
    return got


def message_kind(message: bytes) -> int:
    """The kind of a message (after checking its version)."""
    return _check_header(_Reader(message))


# ----------------------------------------------------------------------------------------- readings


def ts_to_ms(ts: str | datetime) -> int:
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise PayloadError("ts without a timezone")
    # integer arithmetic: a float timestamp loses the millisecond far from 1970
    return (ts - EPOCH) // timedelta(milliseconds=1)


def ms_to_ts(ms: int) -> str:
    try:
        return format_ts(EPOCH + timedelta(milliseconds=ms))
    except OverflowError:
        raise PayloadError(f"ts {ms} ms is past year 9999") from None


def _scaled(value: float, scale: int) -> int:
    return round(value * scale)


def write_reading(w: _Writer, index: int, sample: dict[str, Any]) -> None:
    """A sample as the queue stores it (wire field names) for battery ``index``."""
    w.u8(index)
    w.u48(int(sample["seq"]))
    w.u48(ts_to_ms(sample["ts"]))
    present = {f for f in MASK_FIELDS if sample.get(f) is not None}
    if any(sample.get(f) is not None for f in FLAG_FIELDS):
        present.add("flags")
    mask = sum(1 << i for i, f in enumerate(MASK_FIELDS) if f in present)
    w.u16(mask)
    s = sample
    if "source" in present:
        if s["source"] not in SOURCES:
            raise PayloadError(f"unknown source {s['source']!r}")
        w.u8(SOURCES.index(s["source"]))
    if "voltage_v" in present:
        w.u16(_scaled(s["voltage_v"], 100))
    if "current_a" in present:
        w.i16(_scaled(s["current_a"], 10))
    if "soc_pct" in present:
        w.u16(_scaled(s["soc_pct"], 10))
    if "remaining_ah" in present:
        w.u32(_scaled(s["remaining_ah"], 1000))
    if "cycles" in present:
        w.u16(int(s["cycles"]))
    if "state" in present:
        if s["state"] not in STATES:
            raise PayloadError(f"unknown state {s['state']!r}")
        w.u8(STATES.index(s["state"]))
    if "flags" in present:
        flags = 0
        for bit, name in enumerate(FLAG_FIELDS):
            value = s.get(name)
            if value is not None:
                flags |= 1 << bit  # present
                flags |= (1 << (bit + 4)) if value else 0
        w.u8(flags)
    if "fault_code" in present:
        w.u8(int(s["fault_code"]))
    if "cells_mv" in present:
        _count(w, s["cells_mv"], "cells_mv")
        for mv in s["cells_mv"]:
            w.u16(int(mv))
    if "temps_c" in present:
        _count(w, s["temps_c"], "temps_c")
        for t in s["temps_c"]:
            w.u8(round(t) + 40)
    if "balancing" in present:
        _count(w, s["balancing"], "balancing")
        for cell in s["balancing"]:
            w.u8(int(cell))
    if "faults" in present:
        _count(w, s["faults"], "faults")
        for name in s["faults"]:
            w.text(str(name))
    if "errors" in present:
        _count(w, s["errors"], "errors")
        for key, why in s["errors"].items():
            w.text(str(key))
            w.text(str(why))


def _count(w: _Writer, items: Any, name: str) -> None:
    if len(items) > 255:
        raise PayloadError(f"{name}: {len(items)} items, at most 255")
    w.u8(len(items))


def read_reading(r: _Reader) -> tuple[int, dict[str, Any]]:
    """(battery index, sample with wire field names but no battery_id)."""
    index = r.u8()
    out: dict[str, Any] = {"seq": r.u48(), "ts": ms_to_ts(r.u48())}
    mask = r.u16()
    if mask >> len(MASK_FIELDS):
        raise PayloadError(f"unknown fields in mask 0x{mask:04x} (a newer gateway?)")
    present = {f for i, f in enumerate(MASK_FIELDS) if mask & (1 << i)}
    if "source" in present:
        code = r.u8()
        if code >= len(SOURCES):
            raise PayloadError(f"unknown source code {code}")
        out["source"] = SOURCES[code]
    if "voltage_v" in present:
        out["voltage_v"] = r.u16() / 100
    if "current_a" in present:
        out["current_a"] = r.i16() / 10
    if "soc_pct" in present:
        out["soc_pct"] = r.u16() / 10
    if "remaining_ah" in present:
        out["remaining_ah"] = r.u32() / 1000
    if "cycles" in present:
        out["cycles"] = r.u16()
    if "state" in present:
        code = r.u8()
        if code >= len(STATES):
            raise PayloadError(f"unknown state code {code}")
        out["state"] = STATES[code]
    if "flags" in present:
        flags = r.u8()
        for bit, name in enumerate(FLAG_FIELDS):
            if flags & (1 << bit):
                out[name] = bool(flags & (1 << (bit + 4)))
    if "fault_code" in present:
        out["fault_code"] = r.u8()
    if "cells_mv" in present:
        out["cells_mv"] = [r.u16() for _ in range(r.u8())]
    if "temps_c" in present:
        out["temps_c"] = [float(r.u8() - 40) for _ in range(r.u8())]
    if "balancing" in present:
        out["balancing"] = [r.u8() for _ in range(r.u8())]
    if "faults" in present:
        out["faults"] = [r.text() for _ in range(r.u8())]
    if "errors" in present:
        out["errors"] = {r.text(): r.text() for _ in range(r.u8())}
    return index, out


def encode_reading(index: int, sample: dict[str, Any]) -> bytes:
    """A live notification's message."""
    w = _Writer()
    _header(w, KIND_READING)
    write_reading(w, index, sample)
    return bytes(w.out)


def decode_reading(message: bytes) -> tuple[int, dict[str, Any]]:
    r = _Reader(message)
    _check_header(r, KIND_READING)
    result = read_reading(r)
    r.end()
    return result


# ----------------------------------------------------------------------------------------- requests


@dataclass
class Request:
    """A command from the client. ``args`` by command: get_reading {battery}; history {battery, from_seq,
    max_count}; set_uplink {name, url}; set_wifi {ssid, psk}; set_poll {battery, interval_ms}."""

    command: int
    request_id: int = 0
    pairing_code: str = ""
    args: dict[str, Any] = field(default_factory=dict)


def encode_request(req: Request) -> bytes:
    w = _Writer()
    _header(w, KIND_REQUEST)
    w.u8(req.request_id & 0xFF)
    w.u8(req.command)
    w.text(req.pairing_code)
    a = req.args
    if req.command == CMD_GET_READING:
        w.u8(a["battery"])
    elif req.command == CMD_HISTORY:
        w.u8(a["battery"])
        w.u48(a["from_seq"])
        w.u8(a.get("max_count", 255))
    elif req.command == CMD_SET_UPLINK:
        w.text(a.get("name", ""))
        w.text(a["url"])
    elif req.command == CMD_SET_WIFI:
        w.text(a["ssid"])
        w.text(a.get("psk", ""))
    elif req.command == CMD_SET_POLL:
        w.u8(a.get("battery", ALL_BATTERIES))
        w.u32(a["interval_ms"])
    return bytes(w.out)


def decode_request(message: bytes) -> Request:
    r = _Reader(message)
    _check_header(r, KIND_REQUEST)
    req = Request(request_id=r.u8(), command=r.u8())
    req.pairing_code = r.text()
    c = req.command
    if c == CMD_GET_READING:
        req.args = {"battery": r.u8()}
    elif c == CMD_HISTORY:
        req.args = {"battery": r.u8(), "from_seq": r.u48(), "max_count": r.u8()}
    elif c == CMD_SET_UPLINK:
        req.args = {"name": r.text(), "url": r.text()}
    elif c == CMD_SET_WIFI:
        req.args = {"ssid": r.text(), "psk": r.text()}
    elif c == CMD_SET_POLL:
        req.args = {"battery": r.u8(), "interval_ms": r.u32()}
    elif c not in COMMAND_NAMES:
        return req  # the service answers unknown_command (the request id is known)
    r.end()
    return req


# ---------------------------------------------------------------------------------------- responses


@dataclass
class Response:
    """The gateway's answer: ``status`` OK with a ``body`` by command (info, reading, page, {}), else a
    ``message`` saying what is wrong."""

    request_id: int
    command: int
    status: int = OK
    message: str = ""
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == OK


def encode_response(resp: Response) -> bytes:
    w = _Writer()
    _header(w, KIND_RESPONSE)
    w.u8(resp.request_id & 0xFF)
    w.u8(resp.command)
    w.u8(resp.status)
    if resp.status != OK:
        w.text(resp.message)
        return bytes(w.out)
    b = resp.body
    if resp.command == CMD_INFO:
        _write_info(w, b)
    elif resp.command == CMD_GET_READING:
        write_reading(w, b["battery"], b["sample"])
    elif resp.command == CMD_HISTORY:
        w.u8(b["battery"])
        w.u8(1 if b["more"] else 0)
        w.u48(b["next_seq"])
        _count(w, b["samples"], "samples")
        for s in b["samples"]:
            write_reading(w, b["battery"], s)
    return bytes(w.out)


def decode_response(message: bytes) -> Response:
    r = _Reader(message)
    _check_header(r, KIND_RESPONSE)
    resp = Response(request_id=r.u8(), command=r.u8(), status=r.u8())
    if resp.status != OK:
        resp.message = r.text()
    elif resp.command == CMD_INFO:
        resp.body = _read_info(r)
    elif resp.command == CMD_GET_READING:
        index, sample = read_reading(r)
        resp.body = {"battery": index, "sample": sample}
    elif resp.command == CMD_HISTORY:
        index, more, next_seq = r.u8(), bool(r.u8()), r.u48()
        samples = []
        for _ in range(r.u8()):
            i, s = read_reading(r)
            if i != index:
                raise PayloadError(f"history page of battery {index} holds a reading of battery {i}")
            samples.append(s)
        resp.body = {"battery": index, "more": more, "next_seq": next_seq, "samples": samples}
    r.end()
    return resp


def _write_info(w: _Writer, info: dict[str, Any]) -> None:
    """device, version, uplink in use, queue depth, wifi settable, uplinks [(name, url)], batteries
    [{battery_id, link_state, poll_interval_s, oldest_seq, next_seq}] (seqs 0 = none stored)."""
    w.text(info["device"])
    w.text(info["version"])
    w.text(info.get("uplink") or "")
    w.u32(min(int(info.get("queue_depth") or 0), 0xFFFFFFFF))
    w.u8(1 if info.get("wifi_settable") else 0)
    _count(w, info["uplinks"], "uplinks")
    for up in info["uplinks"]:
        w.text(up["name"])
        w.text(up["url"])
    _count(w, info["batteries"], "batteries")
    for b in info["batteries"]:
        w.text(b["battery_id"])
        w.u8(LINK_STATES.index(b["link_state"]))
        w.u32(round(b["poll_interval_s"] * 1000))
        w.u48(b.get("oldest_seq") or 0)
        w.u48(b.get("next_seq") or 0)


def _read_info(r: _Reader) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": r.text(),
        "version": r.text(),
        "uplink": r.text() or None,
        "queue_depth": r.u32(),
        "wifi_settable": bool(r.u8() & 1),
    }
    info["uplinks"] = [{"name": r.text(), "url": r.text()} for _ in range(r.u8())]
    batteries = []
    for _ in range(r.u8()):
        bid = r.text()
        code = r.u8()
        if code >= len(LINK_STATES):
            raise PayloadError(f"unknown link state code {code}")
        batteries.append(
            {
                "battery_id": bid,
                "link_state": LINK_STATES[code],
                "poll_interval_s": r.u32() / 1000,
                "oldest_seq": r.u48(),
                "next_seq": r.u48(),
            }
        )
    info["batteries"] = batteries
    return info


def iter_fragments(messages: list[bytes], mtu: int) -> Iterator[bytes]:
    for m in messages:
        yield from fragment(m, mtu)


__all__ = [
    "COMMAND_UUID",
    "LIVE_UUID",
    "NAME_PREFIX",
    "RESPONSE_UUID",
    "SERVICE_UUID",
    "VERSION",
    "PayloadError",
    "Reassembler",
    "Request",
    "Response",
    "decode_reading",
    "decode_request",
    "decode_response",
    "encode_reading",
    "encode_request",
    "encode_response",
    "fragment",
]
