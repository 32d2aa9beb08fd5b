"""Simulated Daly packs on CAN: the legacy A5-on-CAN responder, the H/K/M/S broadcaster, and two endpoints.

:class:`CanResponder` (sans-I/O) turns a request frame into reply frames and their times. Legacy
requests are re-wrapped as the A5 request they stand for and answered by the packs' own A5 responder,
so one battery and one set of payload builders serve every wire. What the A5 quirks do to bytes maps to
what CAN does to frames: a reply frame with a bad checksum or a lost tail is a frame the CAN controller
rejects (its CRC fails), so it is dropped whole; junk before a reply is line noise that never becomes a
frame. A sleeping board is silent (no echo on CAN). Timing: the pack's latency, then one CAN frame time
(0.52 ms at 250 kbit/s) per reply frame; the serial ``baud`` quirk does not apply.

Endpoints: :func:`serve_can` on any python-can interface (``virtual`` in-process for tests), and
:func:`serve_slcan_pty`, a pty speaking the slcan (Lawicel) ASCII protocol as a USB-CAN adapter does,
so a client in another process opens ``can://slcan/dev/pts/N?sleep_after_open=0``. The adapter's side of
slcan is hand-written (a few Lawicel commands): python-can implements only the host side.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trackingbms.daly import can as dcan
from trackingbms.daly.a5 import A5Parser, encode_frame
from trackingbms.sim.pack import Bus, SimulatedPack

#: a board keeps broadcasting this long after the last keep-alive (H/K/M/S)
KEEPALIVE_HOLD_S = 6.0


@dataclass(frozen=True)
class CanEmission:
    delay_s: float
    frame: dcan.CanFrame


class CanResponder:
    """The far end of a CAN bus: one or more packs, legacy (``a5``) or H/K/M/S broadcast (``hkms``)."""

    def __init__(
        self, packs: SimulatedPack | Sequence[SimulatedPack] | Bus, *, protocol: str = "a5",
        bitrate: int = dcan.BITRATE, broadcast_interval_s: float = 1.0,
    ) -> None:  # fmt: skip
        if protocol not in ("a5", "hkms"):
            raise ValueError(f"CAN protocol must be a5 or hkms, got {protocol!r}")
        self.bus = Bus.of(packs)
        self.protocol = protocol
        self.frame_s = dcan.frame_time_s(bitrate)
        self.broadcast_interval_s = broadcast_interval_s
        self.stats = {"requests": 0, "replies": 0, "dropped": 0, "keepalives": 0, "broadcasts": 0}
        self._by_board = {p.board: p for p in self.bus.packs}

    @property
    def packs(self) -> list[SimulatedPack]:
        return self.bus.packs

    def respond(self, frame: dcan.CanFrame) -> list[CanEmission]:
        """Reply frames to one received frame, with their delays after it arrived ([] = silence)."""
        if self.protocol == "hkms":
            if frame.arbitration_id == dcan.KEEPALIVE_ID:
                self.stats["keepalives"] += 1
                return self.broadcast(first_delay_s=self.frame_s)
            return []
        req = dcan.request_of(frame)
        if req is None:
            return []
        data_id, board, host, payload = req
        pack = self._by_board.get(board)
        if pack is None:
            return []
        self.stats["requests"] += 1
        # the A5 request this stands for: host 0x40 / 0x80 + board - 1 reaches board N (reference §1)
        address = host + board - 1 if host in (0x40, 0x80) else host
        emissions = pack.respond(encode_frame(address, data_id, payload))
        wire_s = pack.quirks.frame_wire_s()
        out: list[CanEmission] = []
        k = 0
        for e in emissions:
            parser = A5Parser(board=pack.board)
            frames = parser.feed(e.data) + parser.flush()
            if not frames:
                self.stats["dropped"] += 1  # corrupt on UART = rejected by the CAN controller
                continue
            if k == 0:
                # keep the pack's latency (and jitter); replace the UART pacing by CAN frame times
                latency = max(0.0, e.delay_s - 2 * wire_s)
            for f in frames:
                k += 1
                reply = dcan.encode_reply(f.data_id, f.payload, board=f.address, host=host)
                out.append(CanEmission(latency + self.frame_s * (k + 1), reply))
        self.stats["replies"] += len(out)
        return out

    def broadcast(self, first_delay_s: float = 0.0) -> list[CanEmission]:
        """One broadcast round of every board (H/K/M/S)."""
        out: list[CanEmission] = []
        k = 0
        for pack in self.bus.packs:
            pack.sync()
            if pack.asleep:
                continue
            b = pack.battery
            for f in dcan.hkms_frames(
                board=pack.board,
                voltage_v=b.pack_voltage_v(),
                # the H/K/M/S convention: raw above 30000 = charging (invert_current flips it)
                current_a=-b.measured_current_a() if pack.quirks.invert_current else b.measured_current_a(),
                soc_pct=b.bms_soc_pct,
                cells_mv=b.cells_mv(),
                temps_c=[float(t) for t in b.temps_c()],
                charge_mos=b.charge_mos,
                discharge_mos=b.discharge_mos,
                remaining_ah=b.bms_soc_pct / 100 * b.rated_ah,
                cycles=b.cycles,
                balancing=b.balancing(),
            ):
                out.append(CanEmission(first_delay_s + k * self.frame_s, f))
                k += 1
        self.stats["broadcasts"] += 1
        return out


class _Scheduler:
    """Sends emissions at their times in order, and H/K/M/S rounds while keep-alives keep coming."""

    def __init__(self, responder: CanResponder, send: Any) -> None:
        self.responder = responder
        self.send = send
        self.loop = asyncio.get_running_loop()
        self._handles: set[asyncio.TimerHandle] = set()
        self._last_at = 0.0
        self._keepalive_at: float | None = None
        self._ticker: asyncio.TimerHandle | None = None

    def received(self, frame: dcan.CanFrame) -> None:
        now = self.loop.time()
        for e in self.responder.respond(frame):
            at = max(now + e.delay_s, self._last_at)  # one bus: frames go out in order
            self._last_at = at
            h = self.loop.call_at(at, self._fire, e.frame)
            self._handles.add(h)
        if self.responder.protocol == "hkms" and frame.arbitration_id == dcan.KEEPALIVE_ID:
            self._keepalive_at = now
            if self._ticker is None:
                self._ticker = self.loop.call_later(self.responder.broadcast_interval_s, self._tick)

    def _tick(self) -> None:
        self._ticker = None
        if self._keepalive_at is None or self.loop.time() - self._keepalive_at > KEEPALIVE_HOLD_S:
            return  # no host asks any more: stop broadcasting, as the real boards do
        now = self.loop.time()
        for e in self.responder.broadcast():
            h = self.loop.call_at(max(now + e.delay_s, self._last_at), self._fire, e.frame)
            self._handles.add(h)
        self._ticker = self.loop.call_later(self.responder.broadcast_interval_s, self._tick)

    def _fire(self, frame: dcan.CanFrame) -> None:
        self._handles = {h for h in self._handles if not h.cancelled() and h.when() > self.loop.time()}
        with contextlib.suppress(Exception):
            self.send(frame)

    def close(self) -> None:
        for h in self._handles:
            h.cancel()
        self._handles.clear()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None


class CanEndpoint:
    """Packs on a python-can bus; ``url`` is what a client opens (``can://virtual/<channel>``)."""

    def __init__(self, responder: CanResponder, bus: Any, url: str) -> None:
        import can

        self.responder = responder
        self.bus = bus
        self.url = url
        self._sched = _Scheduler(responder, self._send)
        self._notifier = can.Notifier(bus, [self._on_message], timeout=0.05, loop=asyncio.get_running_loop())

    @property
    def packs(self) -> list[SimulatedPack]:
        return self.responder.packs

    def _on_message(self, msg: Any) -> None:
        if msg.is_error_frame or msg.is_remote_frame:
            return
        frame = dcan.CanFrame(msg.arbitration_id, bytes(msg.data), bool(msg.is_extended_id))
        # python-can calls listeners on its reader thread: hand over to the event loop
        self._sched.loop.call_soon_threadsafe(self._sched.received, frame)

    def _send(self, frame: dcan.CanFrame) -> None:
        import can

        self.bus.send(can.Message(arbitration_id=frame.arbitration_id, data=frame.data, is_extended_id=True))

    async def close(self) -> None:
        self._sched.close()
        with contextlib.suppress(Exception):
            self._notifier.stop(timeout=1.0)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.bus.shutdown)

    async def __aenter__(self) -> CanEndpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve_can(
    packs: SimulatedPack | Sequence[SimulatedPack] | Bus,
    channel: str,
    *,
    interface: str = "virtual",
    protocol: str = "a5",
    broadcast_interval_s: float = 1.0,
    **bus_kwargs: Any,
) -> CanEndpoint:
    """Serve packs on python-can ``interface``/``channel`` (``virtual`` = in-process, name it uniquely)."""
    import can

    responder = CanResponder(packs, protocol=protocol, broadcast_interval_s=broadcast_interval_s)
    bus = can.Bus(interface=interface, channel=channel, **bus_kwargs)
    return CanEndpoint(responder, bus, f"can://{interface}/{channel}")


# --------------------------------------------------------------------------------------- slcan pty


class SlcanPtyEndpoint:
    """A pty that behaves as an slcan (Lawicel) USB-CAN adapter with the packs on its bus."""

    def __init__(self, responder: CanResponder, master: int, slave: int, tty_path: str) -> None:
        self.responder = responder
        self.master, self.slave = master, slave
        self.tty_path = tty_path
        self._buf = bytearray()
        self._sched = _Scheduler(responder, self._send)
        self._open = False
        self._closed = False

    @property
    def path(self) -> str:
        return self.tty_path

    @property
    def url(self) -> str:
        return f"can://slcan{self.tty_path}?bitrate=250000&sleep_after_open=0"

    @property
    def packs(self) -> list[SimulatedPack]:
        return self.responder.packs

    def _write(self, text: str) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.master, text.encode("ascii"))

    def _send(self, frame: dcan.CanFrame) -> None:
        if self._open:
            self._write(f"T{frame.arbitration_id:08X}{len(frame.data)}{frame.data.hex().upper()}\r")

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, InterruptedError, OSError):
            return
        self._buf += data
        while (end := self._buf.find(b"\r")) >= 0:
            line = self._buf[:end].decode("ascii", "replace")
            del self._buf[: end + 1]
            self._command(line)

    def _command(self, line: str) -> None:
        """One Lawicel command: open / close / bitrate / version answered, frames handed on."""
        if not line:
            self._write("\r")
        elif line[0] in "OL":
            self._open = True
            self._write("\r")
        elif line[0] == "C":
            self._open = False
            self._write("\r")
        elif line[0] == "V":
            self._write("V1013\r")
        elif line[0] == "N":
            self._write("NSIM1\r")
        elif line[0] == "F":
            self._write("F00\r")
        elif line[0] in "Tt" and self._open:
            width = 8 if line[0] == "T" else 3
            try:
                ident = int(line[1 : 1 + width], 16)
                dlc = int(line[1 + width])
                data = bytes.fromhex(line[2 + width : 2 + width + 2 * dlc])
            except (ValueError, IndexError):
                self._write("\a")
                return
            self._write("Z\r" if width == 8 else "z\r")
            self._sched.received(dcan.CanFrame(ident, data, width == 8))
        else:
            self._write("\r")  # bitrate (S5) and the rest: accepted

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sched.close()
        asyncio.get_running_loop().remove_reader(self.master)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    async def __aenter__(self) -> SlcanPtyEndpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve_slcan_pty(
    packs: SimulatedPack | Sequence[SimulatedPack] | Bus,
    *,
    protocol: str = "a5",
    broadcast_interval_s: float = 1.0,
) -> SlcanPtyEndpoint:
    """Packs behind a simulated slcan adapter on a pty (for clients in other processes)."""
    responder = CanResponder(packs, protocol=protocol, broadcast_interval_s=broadcast_interval_s)
    master, slave = os.openpty()
    for fd in (master, slave):
        tty.setraw(fd, termios.TCSANOW)
    os.set_blocking(master, False)
    endpoint = SlcanPtyEndpoint(responder, master, slave, os.ttyname(slave))
    asyncio.get_running_loop().add_reader(master, endpoint._readable)
    return endpoint


__all__ = ["CanEmission", "CanEndpoint", "CanResponder", "SlcanPtyEndpoint", "serve_can", "serve_slcan_pty"]
