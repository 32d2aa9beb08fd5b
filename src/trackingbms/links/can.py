"""CAN frame link through python-can: ``can://<interface>/<channel>?bitrate=250000``.

Any python-can interface works: ``can://socketcan/can0``, ``can://slcan/dev/ttyACM0`` (a serial device
path keeps its leading slash), ``can://virtual/bench`` (python-can's in-process bus: tests, simulator),
``can://pcan/PCAN_USBBUS1``… Other query parameters are passed to ``can.Bus`` as they are (numbers
converted), e.g. ``can://slcan/dev/ttyACM0?bitrate=250000&sleep_after_open=0``.

The link moves whole frames, not bytes (:class:`~trackingbms.links.FrameLink`): ``send(frame_id, data)``
and ``recv(timeout_s)`` → ``(frame_id, data)`` or None on timeout; ids above 0x7FF go out as 29-bit
extended ids. Error and remote frames are skipped. It knows nothing of Daly.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from trackingbms.links import LinkError

#: interfaces whose channel is a serial device path (the URL's path keeps its leading slash)
SERIAL_INTERFACES = frozenset({"slcan", "serial", "robotell", "seeedstudio", "canalystii", "slcan-serial"})
DEFAULT_BITRATE = 250_000

CanMessage = tuple[int, bytes]


def parse_can_url(url: str) -> tuple[str, str, dict[str, Any]]:
    """``can://iface/channel?k=v`` → (interface, channel, keyword arguments for ``can.Bus``)."""
    parts = urlsplit(url)
    if parts.scheme != "can" or not parts.netloc:
        raise LinkError(
            f"bad CAN port {url!r}: expected can://<interface>/<channel>, e.g. can://socketcan/can0"
        )
    interface = parts.netloc
    channel = parts.path if interface in SERIAL_INTERFACES else parts.path.lstrip("/")
    if not channel:
        raise LinkError(f"bad CAN port {url!r}: no channel after the interface (can://{interface}/<channel>)")
    kwargs: dict[str, Any] = {"bitrate": DEFAULT_BITRATE}
    for key, value in parse_qsl(parts.query):
        kwargs[key] = _number(value)
    return interface, channel, kwargs


def _number(text: str) -> Any:
    for conv in (int, float):
        try:
            return conv(text, 0) if conv is int else conv(text)  # type: ignore[call-arg]
        except ValueError:
            continue
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


class CanLink:
    """One python-can bus, read by a thread of its own into an asyncio queue.

    Hand-written instead of ``can.Notifier``: for buses with a file descriptor (slcan, socketcan) the
    Notifier reads from the event loop and an adapter that goes away raises inside an asyncio callback,
    logged as a traceback on every readable event; this reader stops and the next ``recv`` says why.
    """

    wire = "can"
    POLL_S = 0.05

    def __init__(self, url: str, bus: Any) -> None:
        self.url = url
        #: one exchange on the bus at a time for the clients sharing this link (several boards)
        self.lock = asyncio.Lock()
        self.bus = bus
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._error: Exception | None = None
        self._closed = False
        self._stop = threading.Event()
        self.frames_in = 0
        self.frames_out = 0
        self._thread = threading.Thread(target=self._read_thread, name=f"can-reader {url}", daemon=True)
        self._thread.start()

    def _read_thread(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.bus.recv(self.POLL_S)
            except Exception as exc:  # python-can's errors for a lost adapter come in several types
                if not self._stop.is_set():
                    self._error = exc
                    with contextlib.suppress(RuntimeError):  # the loop is closing
                        self._loop.call_soon_threadsafe(self._queue.put_nowait, None)
                return
            if msg is not None and not (msg.is_error_frame or msg.is_remote_frame):
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._queue.put_nowait, msg)

    async def send(self, frame_id: int, data: bytes) -> None:
        import can

        self._check()
        msg = can.Message(arbitration_id=frame_id, data=data, is_extended_id=frame_id > 0x7FF)
        try:
            if _slow_send(self.bus):
                await asyncio.to_thread(self.bus.send, msg, 0.5)
            else:
                self.bus.send(msg)
        except can.CanError as exc:
            raise LinkError(
                f"{self.url}: cannot send CAN frame ({exc}); is the bus up and terminated?"
            ) from None
        self.frames_out += 1

    def _check(self) -> None:
        if self._closed:
            raise LinkError(f"{self.url}: link closed")
        exc = self._error  # the reader thread died: the adapter went away
        if exc is not None:
            raise LinkError(
                f"{self.url}: CAN adapter lost ({str(exc).splitlines()[0] if str(exc) else exc!r})"
            )

    async def recv(self, timeout_s: float) -> CanMessage | None:
        """The next frame, or None when none came within ``timeout_s``."""
        self._check()
        try:
            async with asyncio.timeout(max(0.0, timeout_s)):
                msg = await self._queue.get()
        except TimeoutError:
            self._check()
            return None
        if msg is None:
            self._check()
            return None
        self.frames_in += 1
        return msg.arbitration_id, bytes(msg.data)

    def reset_input(self) -> None:
        """Drop frames received and not yet read."""
        while not self._queue.empty():
            msg = self._queue.get_nowait()
            if msg is None:  # keep the news of a lost adapter for the next recv
                self._queue.put_nowait(None)
                break

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        await asyncio.to_thread(self._thread.join, 1.0)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.bus.shutdown)

    def __repr__(self) -> str:
        return f"<CanLink {self.url}>"


def _slow_send(bus: Any) -> bool:
    """Interfaces that may block on send (a serial adapter) run it off the event loop."""
    return type(bus).__name__ not in ("VirtualBus", "SocketcanBus")


async def open_can(url: str, *, baud: int | None = None, **_: Any) -> CanLink:
    """Open ``can://interface/channel``; :class:`LinkError` says what to do when it fails. (``baud`` is
    the serial rate of the other links; a CAN bit rate comes with the URL's ``bitrate``.)"""
    interface, channel, kwargs = parse_can_url(url)
    try:
        import can
    except ImportError:
        raise LinkError("CAN needs python-can: pip install 'trackingbms[can]'") from None
    if interface == "virtual":
        kwargs.pop("bitrate", None)  # the virtual bus has no bit timing
    try:
        bus = await asyncio.to_thread(can.Bus, interface=interface, channel=channel, **kwargs)
    except can.CanInterfaceNotImplementedError as exc:
        raise LinkError(f"CAN interface {interface!r} is not available here: {exc}") from None
    except (can.CanError, OSError, ValueError, TypeError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LinkError(f"cannot open {url}: {text}") from None
    return CanLink(url, bus)


#: the old name
open_can_link = open_can

__all__ = ["CanLink", "CanMessage", "open_can", "open_can_link", "parse_can_url"]
