"""Async links: byte streams and frame streams, chosen by the port's URL scheme (:data:`LINKS`).

==============================================  ===========================================================
port                                            link
==============================================  ===========================================================
``/dev/ttyUSB0``, ``COM3`` (no scheme)          :class:`SerialLink` (UART, RS485 adapters, ptys)
``tcp://host:port``                             :class:`TcpLink` (ser2net-style adapters, the simulator)
``can://<interface>/<channel>?bitrate=250000``  a frame link through python-can (``trackingbms.links.can``)
``ble://<address or name>``                     a byte link over Bluetooth LE (``trackingbms.links.ble``)
==============================================  ===========================================================

Links know nothing of Daly: byte links move bytes (:class:`ByteLink`), frame links move CAN frames
(:class:`FrameLink`). Each link has a ``wire`` name (the Sample's source depends on it) and an
``asyncio.Lock`` (``lock``): clients sharing one link (several boards on one RS485 bus) take it for each
exchange, so only one exchange is on the wire at a time. The can / ble modules are imported only when
such a port is opened.

    link = await open_link("/dev/ttyUSB0", baud=9600)
    await link.write(b"...")
    data = await link.read(64, timeout_s=0.2)   # b"" on timeout
    await link.close()
"""

from __future__ import annotations

import asyncio
import errno
import importlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit


class LinkError(Exception):
    """A link could not be opened or broke; the message says what to do."""


@runtime_checkable
class ByteLink(Protocol):
    url: str
    wire: str
    lock: asyncio.Lock

    async def write(self, data: bytes) -> None: ...

    async def read(self, max_bytes: int, timeout_s: float) -> bytes:
        """Up to ``max_bytes`` as soon as any arrive; ``b""`` when nothing came within ``timeout_s``."""
        ...

    def reset_input(self) -> None:
        """Discard everything received and not yet read."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class FrameLink(Protocol):
    """A link that moves whole frames with an id (CAN: 29-bit arbitration id, up to 8 data bytes)."""

    url: str
    wire: str
    lock: asyncio.Lock

    async def send(self, frame_id: int, data: bytes) -> None: ...

    async def recv(self, timeout_s: float) -> tuple[int, bytes] | None:
        """The next frame received, or None when none came within ``timeout_s``."""
        ...

    def reset_input(self) -> None:
        """Discard every frame received and not yet read."""
        ...

    async def close(self) -> None: ...


def link_wire(link: Any) -> str:
    """The wire a link runs over: "serial", "tcp", "can", "ble" ("" if it does not say)."""
    return str(getattr(link, "wire", "") or "")


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
    wire = ""

    def __init__(self, url: str, transport: asyncio.WriteTransport, protocol: _BufferProtocol) -> None:
        self.url = url
        self.lock = asyncio.Lock()
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

    wire = "tcp"


class SerialLink(_StreamLink):
    """A serial port: USB-UART, RS485 adapter, or a pty."""

    wire = "serial"

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
    if code == errno.ENOTTY or "Inappropriate ioctl" in str(exc):
        return LinkError(f"{port} is not a serial port (a file? a serial adapter is /dev/ttyUSB0 or alike)")
    return LinkError(f"cannot open serial port {port}: {exc}")


async def open_tcp(port: str, *, baud: int = 9600, **_: Any) -> TcpLink:
    """``tcp://host:port``; ``baud`` does not apply (the bridge sets the line's speed)."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(port)
    try:
        number = parts.port
    except ValueError:
        bad = parts.netloc.rpartition(":")[2]
        raise LinkError(f"bad TCP port {port!r}: {bad!r} is not a port number (1–65535)") from None
    if not parts.hostname or not number:
        raise LinkError(f"bad TCP port {port!r}: expected tcp://host:port, e.g. tcp://127.0.0.1:9600")
    try:
        async with asyncio.timeout(5.0):
            transport, proto = await loop.create_connection(_BufferProtocol, parts.hostname, number)
    except TimeoutError:
        raise LinkError(f"cannot connect to {port}: timed out after 5 s") from None
    except OSError as exc:
        raise LinkError(f"cannot connect to {port}: {exc.strerror or exc}") from None
    return TcpLink(port, transport, proto)  # type: ignore[arg-type]


async def open_serial(port: str, *, baud: int = 9600, **_: Any) -> SerialLink:
    """A serial device path (8N1 at ``baud``)."""
    import serial
    import serial_asyncio_fast

    loop = asyncio.get_running_loop()
    try:
        transport, proto = await serial_asyncio_fast.create_serial_connection(
            loop, _BufferProtocol, port, baudrate=baud, bytesize=8, parity="N", stopbits=1
        )
    except serial.SerialException as exc:
        inner = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        raise _explain_os_error(port, OSError(inner, str(exc))) from None
    except OSError as exc:
        raise _explain_os_error(port, exc) from None
    except ValueError as exc:  # e.g. a baud rate pyserial refuses
        raise LinkError(f"cannot open serial port {port}: {exc}") from None
    return SerialLink(port, transport, proto)  # type: ignore[arg-type]


Opener = Callable[..., Awaitable[Any]]

#: URL scheme → (module, opener); "serial" is a port without a scheme. Imported when first used.
LINKS: dict[str, tuple[str, str]] = {
    "serial": ("trackingbms.links", "open_serial"),
    "tcp": ("trackingbms.links", "open_tcp"),
    "can": ("trackingbms.links.can", "open_can"),
    "ble": ("trackingbms.links.ble", "open_ble"),
}


def link_scheme(port: str) -> str:
    """The :data:`LINKS` key of a port string: its URL scheme, or "serial" for a device path."""
    if "://" not in port:
        return "serial"
    return port.split("://", 1)[0].lower()


async def open_link(port: str, *, baud: int = 9600, **options: Any) -> Any:
    """Open ``port`` with the link its scheme names (:data:`LINKS`); :class:`LinkError` says what is
    wrong (unknown scheme, bad address, nothing listening, missing device, missing optional package)."""
    if not isinstance(port, str) or not port.strip():
        raise LinkError("no port given: a serial device path, tcp://host:port, can://... or ble://...")
    scheme = link_scheme(port)
    try:
        module_name, attr = LINKS[scheme]
    except KeyError:
        known = ", ".join(f"{k}://" for k in LINKS if k != "serial")
        raise LinkError(f"unsupported port {port!r}: use a serial device path or {known}") from None
    try:
        opener: Opener = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise LinkError(f"{scheme}:// links are not available here ({exc})") from None
    return await opener(port, baud=baud, **options)


__all__ = [
    "LINKS",
    "ByteLink",
    "FrameLink",
    "LinkError",
    "SerialLink",
    "TcpLink",
    "link_scheme",
    "link_wire",
    "open_link",
    "open_serial",
    "open_tcp",
]
