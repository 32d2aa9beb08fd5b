"""The A5 responder: request frames in, reply bytes and when to send them out. No I/O, no clocks.

Payload layouts are written from reference/daly-protocol.md §2, independently of the client's decoders,
so a test that decodes simulator output with ``trackingbms.daly`` checks both sides.

Timing is in wall-clock seconds after the request's bytes arrived: the request's own wire time (a real
line delivers its last byte 13.5 ms after the first at 9600 baud), then ``latency_s``, then each 13-byte
frame takes 10 bits per byte at ``baud``; an emission is scheduled when its last byte would leave a
real UART.
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from trackingbms.daly.a5 import checksum, encode_frame
from trackingbms.sim.config import Quirks

if TYPE_CHECKING:
    from trackingbms.sim.battery import Battery

FRAME_LEN = 13
START = 0xA5
#: a payload byte of None is "reserved": it carries the stale byte left from the previous reply
Payload = list[int | None]

#: data ids answered with several frames (loss only happens inside these bursts)
MULTI_FRAME = frozenset({0x95, 0x96, 0x57, 0x62, 0x63})
SUPPORTED_IDS = frozenset({
    0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98,
    0x50, 0x51, 0x52, 0x53, 0x54, 0x57, 0x59, 0x5A, 0x5B, 0x5C, 0x5D, 0x5E, 0x5F, 0x60, 0x61, 0x62, 0x63,
    0xD9, 0xDA, 0x21, 0x00,
})  # fmt: skip

PRODUCTION_DATE = (23, 5, 17)
FIRMWARE_INDEX = "20230517"
SOFTWARE_VERSION = "20230517-V1.2"
ECHO_DELAY_S = 0.003


@dataclass(frozen=True)
class Emission:
    """Bytes to write ``delay_s`` wall-clock seconds after the request arrived."""

    delay_s: float
    data: bytes


def _u16(v: float) -> list[int | None]:
    raw = max(0, min(0xFFFF, round(v)))
    return [raw >> 8, raw & 0xFF]


def _u32(v: float) -> list[int | None]:
    raw = max(0, min(0xFFFFFFFF, round(v)))
    return list(struct.pack(">I", raw))


def _temp(c: float) -> int:
    return max(0, min(255, round(c) + 40))


def _ascii_frames(text: str, frames: int) -> list[Payload]:
    raw = text.encode("ascii")[: 7 * frames].ljust(7 * frames, b"\x00")
    return [[k + 1, *raw[7 * k : 7 * k + 7]] for k in range(frames)]


class RequestParser:
    """Cuts a byte stream into checked 13-byte A5 requests.

    Junk before a start byte, a wrong length byte or a bad checksum are skipped byte by byte (resync).
    A chunk longer than ``max_request_bytes`` arriving at once is an oversized request: real units stay
    silent (reference Q9), so the whole chunk is dropped.
    """

    def __init__(self, max_request_bytes: int = 64) -> None:
        self.max_request_bytes = max_request_bytes
        self._buf = bytearray()
        self.dropped_bytes = 0

    def feed(self, data: bytes) -> list[bytes]:
        if len(data) > self.max_request_bytes:
            self.dropped_bytes += len(data) + len(self._buf)
            self._buf.clear()
            return []
        self._buf += data
        frames: list[bytes] = []
        buf = self._buf
        while True:
            start = buf.find(START)
            if start < 0:
                self.dropped_bytes += len(buf)
                buf.clear()
                break
            if start:
                self.dropped_bytes += start
                del buf[:start]
            if len(buf) < FRAME_LEN:
                break
            cand = bytes(buf[:FRAME_LEN])
            if cand[3] == 0x08 and checksum(cand[:12]) == cand[12]:
                frames.append(cand)
                del buf[:FRAME_LEN]
            else:
                self.dropped_bytes += 1
                del buf[:1]
        return frames


class A5Responder:
    """Answers A5 requests for one board from a :class:`Battery`, with the quirks of real units."""

    def __init__(self, battery: Battery, quirks: Quirks, *, seed: int, rtc: Callable[[], datetime]) -> None:
        self.battery = battery
        self.quirks = quirks
        self.rng = random.Random(seed * 1_000_003 + quirks.board)
        self.rtc = rtc
        self.rtc_offset = timedelta()
        self.stale = bytearray(8)
        self.heartbeat = self.rng.randrange(256)
        self.accepted = quirks.accepted_hosts()

    def accepts(self, request: bytes) -> bool:
        return len(request) > 1 and request[1] in self.accepted

    # ---- payload builders (reference §2) ------------------------------------------------------
    def _current_raw(self) -> int:
        i = self.battery.measured_current_a()
        # A5 default: raw above 30000 = discharging (design.md); invert_current flips it (reference Q7)
        raw = 30000 + round(i * 10) if self.quirks.invert_current else 30000 - round(i * 10)
        return max(0, min(0xFFFF, raw))

    def _current_threshold_raw(self, current_a: float) -> list[int | None]:
        raw = 30000 + round(current_a * 10) if self.quirks.invert_current else 30000 - round(current_a * 10)
        return _u16(raw)

    def payloads(self, data_id: int, address: int, request: bytes) -> list[Payload] | None:
        b = self.battery
        th = b.th
        if data_id == 0x90:
            return [
                [*_u16(b.pack_voltage_v() * 10), 0, 0, *_u16(self._current_raw()), *_u16(b.bms_soc_pct * 10)]
            ]
        if data_id == 0x91:
            cells = b.cells_mv()
            hi, lo = max(cells), min(cells)
            return [[*_u16(hi), cells.index(hi) + 1, *_u16(lo), cells.index(lo) + 1, None, None]]
        if data_id == 0x92:
            temps = b.temps_c()
            hi, lo = max(temps), min(temps)
            return [[_temp(hi), temps.index(hi) + 1, _temp(lo), temps.index(lo) + 1, None, None, None, None]]
        if data_id == 0x93:
            beat = self.heartbeat if self.quirks.heartbeat else 0
            return [
                [
                    b.state(),
                    int(b.charge_mos),
                    int(b.discharge_mos),
                    beat,
                    *_u32(b.bms_soc_pct / 100 * b.rated_ah * 1000),
                ]
            ]
        if data_id == 0x94:
            return [
                [
                    len(b.cells),
                    len(b.temps_c()),
                    int(b.requested_a > 0),
                    int(b.requested_a < 0),
                    0,
                    *_u16(b.cycles),
                    None,
                ]
            ]
        if data_id == 0x95:
            return self._cell_frames(address)
        if data_id == 0x96:
            return self._temp_frames(address)
        if data_id == 0x97:
            bits = 0
            for cell in b.balancing():
                bits |= 1 << (cell - 1)
            # byte i, bit j (LSB first) = cell 8i + j + 1 (reference §2.1)
            return [[*bits.to_bytes(6, "little"), 0, 0]]
        if data_id == 0x98:
            return [[*b.fault_bits(), b.fault_code]]
        if data_id == 0x50:
            return [[*_u32(b.rated_ah * 1000), *_u32(b.chem.nominal_mv)]]
        if data_id == 0x51:
            return [[1, min(255, len(b.cells)), 0, 0, len(b.temps_c()), 0, 0, 0]]
        if data_id == 0x52:
            return [[*_u32(b.charge_ah), *_u32(b.discharge_ah)]]
        if data_id == 0x53:
            sleep_s = self.quirks.sleep_after_s or 0
            return [[0, b.chem.type_code, *PRODUCTION_DATE, *_u16(sleep_s), None]]
        if data_id == 0x54:
            return [list(FIRMWARE_INDEX.encode("ascii"))]
        if data_id == 0x57:
            return _ascii_frames(self.battery_code(), 5)
        if data_id == 0x59:
            return [
                [
                    *_u16(th.cell_ov_mv[0]),
                    *_u16(th.cell_ov_mv[1]),
                    *_u16(th.cell_uv_mv[0]),
                    *_u16(th.cell_uv_mv[1]),
                ]
            ]
        if data_id == 0x5A:
            return [
                [
                    *_u16(th.pack_ov_v[0] * 10),
                    *_u16(th.pack_ov_v[1] * 10),
                    *_u16(th.pack_uv_v[0] * 10),
                    *_u16(th.pack_uv_v[1] * 10),
                ]
            ]
        if data_id == 0x5B:
            # charge limits are charging currents, discharge limits discharging ones, in 0x90's convention
            return [
                [
                    *self._current_threshold_raw(th.charge_oc_a[0]),
                    *self._current_threshold_raw(th.charge_oc_a[1]),
                    *self._current_threshold_raw(-th.discharge_oc_a[0]),
                    *self._current_threshold_raw(-th.discharge_oc_a[1]),
                ]
            ]
        if data_id == 0x5C:
            return [
                [_temp(v) for v in (*th.charge_ot_c, *th.charge_ut_c, *th.discharge_ot_c, *th.discharge_ut_c)]
            ]
        if data_id == 0x5D:
            return [
                [
                    *_u16(th.soc_high_pct[0] * 10),
                    *_u16(th.soc_high_pct[1] * 10),
                    *_u16(th.soc_low_pct[0] * 10),
                    *_u16(th.soc_low_pct[1] * 10),
                ]
            ]
        if data_id == 0x5E:
            return [
                [
                    *_u16(th.cell_diff_mv[0]),
                    *_u16(th.cell_diff_mv[1]),
                    _temp(th.temp_diff_c[0]),
                    _temp(th.temp_diff_c[1]),
                    None,
                    None,
                ]
            ]
        if data_id == 0x5F:
            return [[*_u16(th.balance_start_mv), *_u16(th.balance_delta_mv), None, None, None, None]]
        if data_id == 0x60:
            return [
                [*_u16(th.short_circuit_a), *_u16(th.sampling_resistor_mohm * 1000), None, None, None, None]
            ]
        if data_id == 0x61:
            now = self.rtc() + self.rtc_offset
            return [[now.year % 100, now.month, now.day, now.hour, now.minute, now.second, None, None]]
        if data_id == 0x62:
            return _ascii_frames(SOFTWARE_VERSION, 2)
        if data_id == 0x63:
            return _ascii_frames(f"DL-SIM-{len(b.cells)}S{round(b.rated_ah)}A", 2)
        if data_id in (0xD9, 0xDA):
            on = request[4] == 0x01
            if data_id == 0xD9:
                b.set_mos(discharge=on)
            else:
                b.set_mos(charge=on)
            return [[request[4], None, None, None, None, None, None, None]]
        if data_id == 0x21:
            return self._set_soc(request)
        if data_id == 0x00:
            b.reset()
            self.heartbeat = 0
            return [[0] * 8]
        return None

    def battery_code(self) -> str:
        b = self.battery
        return f"TBMS-{b.chem.name.upper()}-{len(b.cells)}S{round(b.rated_ah)}AH-{b.cfg.pack_id}"[:35]

    def _set_soc(self, request: bytes) -> list[Payload]:
        yy, mm, dd, hh, mi, ss = request[4:10]
        soc_pct = (request[10] << 8 | request[11]) / 10
        ok = soc_pct <= 100.0
        if ok:
            self.battery.set_soc(soc_pct)
            # python-daly-bms sends a zero date: then only the SOC changes
            if any((yy, mm, dd)):
                try:
                    wanted = datetime(2000 + yy, mm, dd, hh, mi, ss, tzinfo=self.rtc().tzinfo)
                    self.rtc_offset = wanted - self.rtc()
                except ValueError:
                    pass
        return [[1 if ok else 0, None, None, None, None, None, None, None]]

    def _frame_count(self, address: int, needed: int, all_frames: int, auto_0x80: int) -> int:
        policy = self.quirks.frames
        if policy == "all":
            return max(needed, all_frames)
        if policy == "auto" and address >= 0x80:
            return max(needed, auto_0x80)
        return needed

    def _cell_frames(self, address: int) -> list[Payload]:
        cells = self.battery.cells_mv()
        needed = math.ceil(len(cells) / 3)
        frames: list[Payload] = []
        for k in range(self._frame_count(address, needed, 16, 16)):
            if k < needed:
                slots: Payload = []
                for cell in cells[3 * k : 3 * k + 3]:
                    slots += _u16(cell)
                # unused slots of the last real frame: zero, or old buffer content on some units (§2.1)
                slots += [None if self.quirks.stale_cell_slots else 0] * (6 - len(slots))
            else:
                slots = [0] * 6
            frames.append([k + 1, *slots, None])
        return frames

    def _temp_frames(self, address: int) -> list[Payload]:
        temps = self.battery.temps_c()
        needed = math.ceil(len(temps) / 7)
        frames: list[Payload] = []
        # host 0x80: a real 1-sensor unit sent one extra all-zero frame (mpp-solar capture), not all 3
        for k in range(self._frame_count(address, needed, 3, min(3, needed + 1))):
            part = [_temp(t) for t in temps[7 * k : 7 * k + 7]]
            frames.append([k + 1, *part, *[0] * (7 - len(part))])
        return frames

    # ---- frames and faults ------------------------------------------------------------------------
    def _fill(self, payload: Payload) -> bytes:
        out = bytearray(8)
        for i, v in enumerate(payload[:8] + [None] * (8 - len(payload))):
            out[i] = (self.stale[i] if self.quirks.stale_bytes else 0) if v is None else v
        self.stale[:] = out
        return bytes(out)

    def respond(self, request: bytes) -> list[Emission]:
        """Reply to one checked 13-byte request (see :class:`RequestParser`); [] = stay silent."""
        address, data_id = request[1], request[2]
        if address not in self.accepted:
            return []
        if data_id not in SUPPORTED_IDS:
            return []
        self.heartbeat = (self.heartbeat + 1) & 0xFF  # free-running: moves on with every reply
        payloads = self.payloads(data_id, address, request)
        if payloads is None:
            return []
        q, rng = self.quirks, self.rng
        wire_s = q.frame_wire_s()
        # delays count from the moment the request's bytes reached the endpoint; on a real line its last
        # byte arrives one frame time after the first, so that is added too
        latency = wire_s + q.latency_s + (rng.uniform(0, q.latency_jitter_s) if q.latency_jitter_s else 0.0)
        out: list[Emission] = []
        for k, payload in enumerate(payloads):
            frame = bytearray(encode_frame(q.board, data_id, self._fill(payload)))
            if q.bad_checksum and rng.random() < q.bad_checksum:
                frame[12] = (frame[12] + 1 + rng.randrange(255)) & 0xFF
            if q.loss and data_id in MULTI_FRAME and rng.random() < q.loss:
                # the frame loses its tail (dbus-serialbattery#165: 4 bytes incl. the checksum); the next
                # frame follows straight on
                del frame[FRAME_LEN - rng.randrange(1, 7) :]
            if k == 0 and q.garbage and rng.random() < q.garbage:
                frame[:0] = bytes(
                    rng.choice((0x00, 0xFF, rng.randrange(256))) for _ in range(rng.randint(1, 4))
                )
            out.append(Emission(latency + (k + 1) * wire_s, bytes(frame)))
        return out
