"""Async byte links: one small interface, implementations chosen by the port string.

``tcp://host:port`` → :class:`TcpLink` (ser2net-style adapters, the simulator); anything else is a
serial device path → :class:`SerialLink` (pyserial-asyncio-fast; UART, RS485 adapters, ptys).
Links know nothing of Daly: they move bytes.

    link = await open_link("/dev/ttyUSB0", baud=9600)
    await link.write(b"...")
    data = await link.read(64, timeout_s=0.2)   # b"" on timeout
    await link.close()
"""

from __future__ import annotations

import asyncio
import errno
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit


class LinkError(Exception):
    """A link could not be opened or broke; the message says what to do."""


@runtime_checkable
class ByteLink(Protocol):
    url: str

    async def write(self, data: bytes) -> None: ...

    async def read(self, max_bytes: int, timeout_s: float) -> bytes:
        """Up to ``max_bytes`` as soon as any arrive; ``b""`` when nothing came within ``timeout_s``."""
        ...

    def reset_input(self) -> None:
        """Discard everything received and not yet read."""
        ...

    async def close(self) -> None: ...


class _BufferProtocol(asyncio.Protocol):
    """Collects incoming bytes in one buffer; readers wait on an event (no per-read tasks)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.event = asyncio.Event()
        self.closed: Exception | None = None
        self.transport: asyncio.BaseTransport | None = None
        self.lost = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.event.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = exc or ConnectionResetError("connection closed by the other end")
        self.event.set()
        self.lost.set()


class _StreamLink:
    """Shared read/write over a :class:`_BufferProtocol` transport."""

    url: str

    def __init__(self, url: str, transport: asyncio.WriteTransport, protocol: _BufferProtocol) -> None:
        self.url = url
        self._transport = transport
        self._proto = protocol

    async def write(self, data: bytes) -> None:
        if self._proto.closed is not None:
            raise LinkError(f"{self.url}: link closed ({self._proto.closed})")
        self._transport.write(data)

    async def read(self, max_bytes: int, timeout_s: float) -> bytes:
        proto = self._proto
        if not proto.buffer:
            if proto.closed is not None:
                raise LinkError(f"{self.url}: link closed ({proto.closed})")
            proto.event.clear()
            try:
                async with asyncio.timeout(max(0.0, timeout_s)):
                    await proto.event.wait()
            except TimeoutError:
                return b""
            if not proto.buffer and proto.closed is not None:
                raise LinkError(f"{self.url}: link closed ({proto.closed})")
        data = bytes(proto.buffer[:max_bytes])
        del proto.buffer[:max_bytes]
        return data

    def reset_input(self) -> None:
        self._proto.buffer.clear()

    async def close(self) -> None:
        self._transport.close()
        try:
            async with asyncio.timeout(1.0):
                await self._proto.lost.wait()
        except TimeoutError:
            pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


class TcpLink(_StreamLink):
    """A TCP byte stream (ser2net, ESP-Link style adapters, the simulator)."""


class SerialLink(_StreamLink):
    """A serial port: USB-UART, RS485 adapter, or a pty."""

    def reset_input(self) -> None:
        super().reset_input()
        serial = getattr(self._transport, "serial", None)
        if serial is not None:
            try:
                serial.reset_input_buffer()
            except Exception:  # a pty or a closed port may refuse; our own buffer is already empty
                pass


def _explain_os_error(port: str, exc: OSError) -> LinkError:
    code = exc.errno
    if code == errno.ENOENT or (code is None and "No such file" in str(exc)):
        return LinkError(f"serial port {port} does not exist (is the adapter plugged in? see `ls /dev/tty*`)")
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in str(exc):
        return LinkError(
            f"permission denied opening {port}: add your user to the 'dialout' group "
            "(sudo usermod -aG dialout $USER, then log in again)"
        )
    if code == errno.EBUSY:
        return LinkError(f"serial port {port} is busy (another program has it open)")
    return LinkError(f"cannot open serial port {port}: {exc}")


async def open_link(port: str, *, baud: int = 9600) -> ByteLink:
    """Open ``port``: ``tcp://host:port`` or a serial device path."""
    loop = asyncio.get_running_loop()
    if port.startswith("tcp://"):
        parts = urlsplit(port)
        if not parts.hostname or not parts.port:
            raise LinkError(f"bad TCP port {port!r}: expected tcp://host:port")
        try:
            async with asyncio.timeout(5.0):
                transport, proto = await loop.create_connection(_BufferProtocol, parts.hostname, parts.port)
        except TimeoutError:
            raise LinkError(f"cannot connect to {port}: timed out after 5 s") from None
        except OSError as exc:
            raise LinkError(f"cannot connect to {port}: {exc.strerror or exc}") from None
        return TcpLink(port, transport, proto)  # type: ignore[arg-type]
    if "://" in port:
        raise LinkError(f"unsupported port {port!r}: use a serial device path or tcp://host:port")
    import serial
    import serial_asyncio_fast

    try:
        transport, proto = await serial_asyncio_fast.create_serial_connection(
            loop, _BufferProtocol, port, baudrate=baud, bytesize=8, parity="N", stopbits=1
        )
    except serial.SerialException as exc:
        inner = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        raise _explain_os_error(port, OSError(inner, str(exc))) from None
    except OSError as exc:
        raise _explain_os_error(port, exc) from None
    return SerialLink(port, transport, proto)  # type: ignore[arg-type]


__all__ = ["ByteLink", "LinkError", "SerialLink", "TcpLink", "open_link"]
