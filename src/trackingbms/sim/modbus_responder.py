"""The D2 and 0x81 responders: Modbus-shaped requests in, reply bytes and when to send them out. No I/O.

Same battery physics as the A5 responder (:class:`~trackingbms.sim.battery.Battery`); registers are laid
out from reference/daly-protocol.md §5.4 and §6, independently of the client's decoders. Quirks of the
real boards: D2 answers at its fixed address 0xD2 whatever the board number; a 0x81 board answers
requests to 0x80 + board from 0x50 + board; a write to a register the board does not know gets no reply
(batmon-ha#356); a write is answered with its echo; function 16 requests carry no byte count.
``bad_checksum`` corrupts a reply's CRC, ``loss`` cuts a reply's tail, ``garbage`` puts junk before it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from trackingbms.daly.modbus import (
    READ,
    WRITE_MULTIPLE,
    WRITE_SINGLE,
    parse_request,
    request_length,
    wire_time_s,
    with_crc,
)
from trackingbms.sim.config import Quirks
from trackingbms.sim.responder import Emission

if TYPE_CHECKING:
    from trackingbms.sim.battery import Battery

ModbusProtocol = Literal["d2", "p81"]
D2_ADDRESS = 0xD2
SOFTWARE_VERSION = "SIM-D2-20230517"
HARDWARE_VERSION = "DL-SIM-BMS"


def _clip(v: float) -> int:
    return max(0, min(0xFFFF, round(v)))


def _temp(c: float) -> int:
    return _clip(round(c) + 40)


def _ascii_regs(text: str, n: int) -> list[int]:
    raw = text.encode("ascii")[: 2 * n].ljust(2 * n, b"\0")
    return [raw[2 * i] << 8 | raw[2 * i + 1] for i in range(n)]


class ModbusRequestParser:
    """Cuts a byte stream into checked requests for the given addresses (resync byte by byte)."""

    def __init__(self, addresses: frozenset[int], max_request_bytes: int = 300) -> None:
        self.addresses = addresses
        self.max_request_bytes = max_request_bytes
        self._buf = bytearray()
        self.dropped_bytes = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        while buf:
            if buf[0] not in self.addresses:
                self.dropped_bytes += 1
                del buf[:1]
                continue
            n = request_length(buf)
            if n is None or (n and n > self.max_request_bytes):
                self.dropped_bytes += 1
                del buf[:1]
                continue
            if n == 0 or len(buf) < n:
                break
            raw = bytes(buf[:n])
            if parse_request(raw) is None:
                self.dropped_bytes += 1
                del buf[:1]
                continue
            out.append(raw)
            del buf[:n]
        return out


class ModbusResponder:
    """Answers D2 or 0x81 requests for one board from a :class:`Battery`."""

    def __init__(
        self,
        battery: Battery,
        quirks: Quirks,
        *,
        protocol: ModbusProtocol,
        seed: int,
        rtc: Callable[[], datetime],
    ) -> None:
        self.battery = battery
        self.quirks = quirks
        self.protocol = protocol
        self.rng = random.Random(seed * 1_000_003 + quirks.board + 77)
        self.rtc = rtc
        self.heartbeat = self.rng.randrange(256)
        if protocol == "d2":
            self.request_address = self.reply_address = D2_ADDRESS
        else:
            self.request_address = 0x80 + quirks.board
            self.reply_address = 0x50 + quirks.board
        self.accepted = frozenset({self.request_address})

    def accepts(self, request: bytes) -> bool:
        return bool(request) and request[0] == self.request_address

    # ---- registers ---------------------------------------------------------------------------------
    def _current_raw(self) -> int:
        # D2 / 0x81 convention: raw above 30000 = charging (reference §2.1); invert_current flips it
        i = self.battery.measured_current_a()
        return _clip(30000 - i * 10 if self.quirks.invert_current else 30000 + i * 10)

    def _bitmap(self, words: int) -> list[int]:
        bits = 0
        for cell in self.battery.balancing():
            bits |= 1 << (cell - 1)
        return [bits >> (16 * w) & 0xFFFF for w in range(words)]

    def _fault_regs(self) -> list[int]:
        flags = bytes(self.battery.fault_bits()[:7]).ljust(8, b"\0")
        return [flags[2 * i] | flags[2 * i + 1] << 8 for i in range(4)]

    def registers(self) -> dict[int, int]:
        return self._d2_registers() if self.protocol == "d2" else self._p81_registers()

    def _common(self) -> tuple[list[int], list[float], float]:
        b = self.battery
        return b.cells_mv(), [float(t) for t in b.temps_c()], b.pack_voltage_v()

    def _d2_registers(self) -> dict[int, int]:
        b = self.battery
        cells, temps, volts = self._common()
        r: dict[int, int] = dict.fromkeys(range(0x00, 0x50), 0)
        for i, mv in enumerate(cells[:32]):
            r[i] = _clip(mv)
        for i, t in enumerate(temps[:8]):
            r[0x20 + i] = _temp(t)
        r[0x28] = _clip(volts * 10)
        r[0x29] = self._current_raw()
        r[0x2A] = _clip(b.bms_soc_pct * 10)
        r[0x2B], r[0x2C] = max(cells), min(cells)
        r[0x2D], r[0x2E] = _temp(max(temps)), _temp(min(temps))
        r[0x2F] = b.state()
        r[0x30] = _clip(b.bms_soc_pct / 100 * b.rated_ah * 10)
        r[0x31], r[0x32] = len(cells), len(temps)
        r[0x33] = _clip(b.cycles)
        r[0x34] = int(bool(b.balancing()))
        r[0x35], r[0x36] = int(b.charge_mos), int(b.discharge_mos)
        r[0x37] = _clip(sum(cells) / len(cells))
        r[0x38] = max(cells) - min(cells)
        r[0x39] = _clip(abs(volts * b.measured_current_a()))  # unsigned magnitude
        for i, v in enumerate(self._fault_regs()):
            r[0x3A + i] = v
        if self.quirks.d2_status_registers == 80:
            r[0x3E], r[0x3F] = self._bitmap(2)
            r[0x40] = 30000
            r[0x42] = _temp(max(temps))  # MOS temperature
            r[0x43] = 0xFFFF  # no board sensor
        else:  # older firmware: the block ends at 0x3D
            for reg in range(0x3E, 0x50):
                del r[reg]
        r.update(self._settings(0x80))
        for i, v in enumerate(_ascii_regs(SOFTWARE_VERSION, 16) + _ascii_regs(HARDWARE_VERSION, 16)):
            r[0xA9 + i] = v
        for i, v in enumerate(_ascii_regs("123456", 3)):
            r[0xC9 + i] = v
        return r

    def _p81_registers(self) -> dict[int, int]:
        b = self.battery
        cells, temps, volts = self._common()
        r: dict[int, int] = dict.fromkeys(range(0x00, 0x5D), 0)
        for i, mv in enumerate(cells[:48]):
            r[i] = _clip(mv)
        for i in range(8):
            r[0x30 + i] = _temp(temps[i]) if i < len(temps) else 0xFF
        r[0x38] = _clip(volts * 10)
        r[0x39] = self._current_raw()
        r[0x3A] = _clip(b.bms_soc_pct * 10)
        self.heartbeat = (self.heartbeat + 1) & 0xFF
        r[0x3B] = self.heartbeat
        r[0x3C], r[0x3D] = len(cells), len(temps)
        r[0x3E], r[0x3F] = max(cells), cells.index(max(cells)) + 1
        r[0x40], r[0x41] = min(cells), cells.index(min(cells)) + 1
        r[0x42] = max(cells) - min(cells)
        r[0x43], r[0x44] = _temp(max(temps)), temps.index(max(temps)) + 1
        r[0x45], r[0x46] = _temp(min(temps)), temps.index(min(temps)) + 1
        r[0x47] = round(max(temps) - min(temps))
        r[0x48] = b.state()
        r[0x4B] = _clip(b.bms_soc_pct / 100 * b.rated_ah * 10)
        r[0x4C] = _clip(b.cycles)
        r[0x4D] = int(bool(b.balancing()))
        r[0x4E] = 30000
        r[0x4F], r[0x50], r[0x51] = self._bitmap(3)
        r[0x52], r[0x53] = int(b.charge_mos), int(b.discharge_mos)
        r[0x57] = _clip(sum(cells) / len(cells))
        r[0x58] = _clip(abs(volts * b.measured_current_a()))
        r[0x59] = _clip(b.bms_soc_pct / 100 * b.rated_ah * volts / 10)
        r[0x5A] = _temp(max(temps))
        r[0x5B] = _temp(max(temps))
        r[0x5C] = 0xFF
        r.update(self._settings(0x100))
        r[0x0121], r[0x0122] = int(b.charge_mos), int(b.discharge_mos)
        return r

    def _settings(self, base: int) -> dict[int, int]:
        b, th = self.battery, self.battery.th
        values = {
            0x80: _clip(b.rated_ah * 10),
            0x81: _clip(b.chem.nominal_mv),
            0x82: 1,
            0x83: len(b.cells),
            0x86: len(b.temps_c()),
            0x89: b.chem.type_code,
            0x8A: _clip(self.quirks.sleep_after_s or 0),
            0x8B: _clip(th.cell_ov_mv[0]),
            0x8C: _clip(th.cell_ov_mv[1]),
            0x8D: _clip(th.cell_uv_mv[0]),
            0x8E: _clip(th.cell_uv_mv[1]),
            0x8F: _clip(th.pack_ov_v[0] * 10),
            0x90: _clip(th.pack_ov_v[1] * 10),
            0x91: _clip(th.pack_uv_v[0] * 10),
            0x92: _clip(th.pack_uv_v[1] * 10),
            0x93: _clip(30000 + th.charge_oc_a[0] * 10),
            0x94: _clip(30000 + th.charge_oc_a[1] * 10),
            0x95: _clip(30000 - th.discharge_oc_a[0] * 10),
            0x96: _clip(30000 - th.discharge_oc_a[1] * 10),
            0x97: _temp(th.charge_ot_c[0]),
            0x98: _temp(th.charge_ot_c[1]),
            0x99: _temp(th.charge_ut_c[0]),
            0x9A: _temp(th.charge_ut_c[1]),
            0x9B: _temp(th.discharge_ot_c[0]),
            0x9C: _temp(th.discharge_ot_c[1]),
            0x9D: _temp(th.discharge_ut_c[0]),
            0x9E: _temp(th.discharge_ut_c[1]),
            0x9F: _clip(th.cell_diff_mv[0]),
            0xA0: _clip(th.cell_diff_mv[1]),
            0xA3: _clip(th.balance_start_mv),
            0xA4: _clip(th.balance_delta_mv),
            0xA5: int(b.charge_mos),
            0xA6: int(b.discharge_mos),
            0xA7: _clip(b.bms_soc_pct * 10),
            0xA8: _temp(80),
        }
        out = dict.fromkeys(range(base, base + 41), 0)
        out.update({reg - 0x80 + base: v for reg, v in values.items()})
        return out

    # ---- writes ------------------------------------------------------------------------------------
    def _write(self, register: int, value: int) -> bool:
        """Apply a write; False for a register this board does not know (it then stays silent)."""
        b = self.battery
        if self.protocol == "d2":
            charge, discharge, soc = 0xA5, 0xA6, 0xA7
        else:
            charge, discharge, soc = 0x0121, 0x0122, None
        if register == charge and value in (0, 1):
            b.set_mos(charge=bool(value))
        elif register == discharge and value in (0, 1):
            b.set_mos(discharge=bool(value))
        elif soc is not None and register == soc and value <= 1000:
            b.set_soc(value / 10)
        else:
            return False
        return True

    # ---- replies -----------------------------------------------------------------------------------
    def reply(self, request: bytes) -> bytes | None:
        req = parse_request(request)
        if req is None or req.register is None or req.value is None:
            return None
        if req.function == READ:
            regs = self.registers()
            values = [regs.get(req.register + i) for i in range(req.value)]
            if any(v is None for v in values) or not req.value:
                return None  # a block this board does not have: silence, as real units
            body = bytes((self.reply_address, READ, 2 * req.value))
            return with_crc(body + b"".join(int(v or 0).to_bytes(2, "big") for v in values))
        if req.function == WRITE_SINGLE:
            if not self._write(req.register, req.value):
                return None
            return with_crc(bytes((self.reply_address,)) + request[1:6])
        if req.function == WRITE_MULTIPLE:
            if not all(self._write(req.register + i, v) for i, v in enumerate(req.registers)):
                return None
            return with_crc(bytes((self.reply_address,)) + request[1:6])
        return None

    def respond(self, request: bytes) -> list[Emission]:
        if not self.accepts(request):
            return []
        data = self.reply(request)
        if data is None:
            return []
        q, rng = self.quirks, self.rng
        frame = bytearray(data)
        if q.bad_checksum and rng.random() < q.bad_checksum:
            frame[-1] ^= 1 + rng.randrange(255)
        if q.loss and rng.random() < q.loss:
            del frame[len(frame) - rng.randrange(1, min(8, len(frame) - 1)) :]
        if q.garbage and rng.random() < q.garbage:
            frame[:0] = bytes(rng.choice((0x00, 0xFF, rng.randrange(256))) for _ in range(rng.randint(1, 4)))
        latency = q.latency_s + (rng.uniform(0, q.latency_jitter_s) if q.latency_jitter_s else 0.0)
        if q.baud:
            latency += wire_time_s(q.baud, len(request)) + wire_time_s(q.baud, len(frame))
        return [Emission(latency, bytes(frame))]
