"""Where clients meet simulated packs: a TCP server, a pty, and the ground-truth HTTP side channel.

The endpoints do the I/O only: bytes in → :class:`RequestParser` → :meth:`Bus.respond` → replies written
at their scheduled times (latency and wire-time pacing live in the responder).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import termios
import tty
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

from trackingbms.sim.pack import Bus, SimulatedPack

Packs = SimulatedPack | Sequence[SimulatedPack] | Bus


class _Session:
    """One byte stream (a TCP connection or a pty): parse requests, send replies at their times, in order."""

    def __init__(self, bus: Bus, write: Callable[[bytes], None]) -> None:
        self.bus = bus
        self.parser = bus.request_parser()
        self.write = write
        self.loop = asyncio.get_running_loop()
        #: (when, bytes) in sending order: one UART line, so a reply never overtakes an earlier one
        self._queue: deque[tuple[float, bytes]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        now = self.loop.time()
        for request in self.parser.feed(data):
            for emission in self.bus.respond(request):
                at = now + emission.delay_s
                if self._queue and at < self._queue[-1][0]:
                    at = self._queue[-1][0]
                self._queue.append((at, emission.data))
        self._arm()

    def _arm(self) -> None:
        if self._timer is None and self._queue:
            self._timer = self.loop.call_at(self._queue[0][0], self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.loop.time()
        while self._queue and self._queue[0][0] <= now:
            _, data = self._queue.popleft()
            with contextlib.suppress(OSError, RuntimeError):
                self.write(data)
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()


class TcpEndpoint:
    """A TCP server speaking raw A5 bytes (like ser2net); ``url`` is ``tcp://HOST:PORT``."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.server: asyncio.Server | None = None
        self.host = ""
        self.port = 0
        self._sessions: set[_Session] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    @property
    def packs(self) -> list[SimulatedPack]:
        return self.bus.packs

    @property
    def connections(self) -> int:
        """Clients connected now (a test knows a killed client's last request was read once it is 0)."""
        return len(self._sessions)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        session = _Session(self.bus, writer.write)
        self._sessions.add(session)
        try:
            while data := await reader.read(4096):
                session.data_received(data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            session.close()
            self._sessions.discard(session)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for session in list(self._sessions):
            session.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
            self.server = None

    async def __aenter__(self) -> TcpEndpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve_tcp(packs: Packs, host: str = "127.0.0.1", port: int = 0) -> TcpEndpoint:
    """Serve one pack (or a :class:`Bus` / list of packs sharing one line) on TCP; ``port=0`` = any."""
    endpoint = TcpEndpoint(Bus.of(packs))
    endpoint.server = await asyncio.start_server(endpoint._handle, host, port)
    sock = endpoint.server.sockets[0].getsockname()
    endpoint.host, endpoint.port = sock[0], sock[1]
    return endpoint


class PtyEndpoint:
    """A pseudo-terminal; clients open ``path`` (the ``link`` symlink when one was asked for)."""

    def __init__(self, bus: Bus, master: int, slave: int, tty_path: str, link: Path | None) -> None:
        self.bus = bus
        self.master, self.slave = master, slave
        self.tty_path = tty_path
        self.link = link
        self.session = _Session(bus, self._write)
        self._closed = False

    @property
    def path(self) -> str:
        return str(self.link) if self.link else self.tty_path

    @property
    def packs(self) -> list[SimulatedPack]:
        return self.bus.packs

    def _write(self, data: bytes) -> None:
        try:
            os.write(self.master, data)
        except BlockingIOError:
            pass  # nobody reads the line: a real UART's bytes would be lost too

    def _readable(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # EIO while no client holds the slave open
        if data:
            self.session.data_received(data)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.session.close()
        asyncio.get_running_loop().remove_reader(self.master)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                if self.link.is_symlink():
                    self.link.unlink()

    async def __aenter__(self) -> PtyEndpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def serve_pty(packs: Packs, link: str | os.PathLike[str] | None = None) -> PtyEndpoint:
    """Open a pty for one pack (or a bus). ``link`` makes a stable symlink to it (replacing an old link)."""
    bus = Bus.of(packs)
    master, slave = os.openpty()
    # raw mode on both ends: no echo, no line discipline, bytes pass untouched
    for fd in (master, slave):
        tty.setraw(fd, termios.TCSANOW)
    os.set_blocking(master, False)
    tty_path = os.ttyname(slave)
    link_path: Path | None = None
    if link is not None:
        link_path = Path(link)
        try:
            if link_path.is_symlink():
                link_path.unlink()
            elif link_path.exists():
                raise FileExistsError(f"{link_path} exists and is not a symlink; not replacing it")
            link_path.symlink_to(tty_path)
        except OSError as exc:
            os.close(master)
            os.close(slave)
            if isinstance(exc, FileExistsError) and exc.errno is None:
                raise
            raise OSError(f"cannot create link {link_path}: {(exc.strerror or str(exc)).lower()}") from None
    endpoint = PtyEndpoint(bus, master, slave, tty_path, link_path)
    asyncio.get_running_loop().add_reader(master, endpoint._readable)
    return endpoint


class TruthServer:
    """``GET /truth`` → ``{"packs": {id: truth}}``; ``GET /truth/<id>`` → one pack. Plain HTTP/1.0, JSON."""

    def __init__(self, packs: Sequence[SimulatedPack]) -> None:
        self.packs = {p.id: p for p in packs}
        self.server: asyncio.Server | None = None
        self.host, self.port = "", 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/truth"

    def snapshot(self) -> dict[str, object]:
        return {"packs": {pid: p.truth() for pid, p in self.packs.items()}}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            method, target = ([*parts, "", ""])[:2]
            path = target.split("?", 1)[0].rstrip("/")
            status, body = "200 OK", None
            if method != "GET":
                status, body = "405 Method Not Allowed", {"error": "only GET"}
            elif path in ("", "/truth"):
                body = self.snapshot()
            elif path.startswith("/truth/") and path[7:] in self.packs:
                body = self.packs[path[7:]].truth()
            else:
                status, body = "404 Not Found", {"error": f"no such path {path!r}", "packs": list(self.packs)}
            data = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                f"Connection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
            self.server = None


async def serve_truth(packs: Sequence[SimulatedPack], host: str = "127.0.0.1", port: int = 0) -> TruthServer:
    """Serve the ground truth of ``packs`` over HTTP (see :class:`TruthServer`)."""
    server = TruthServer(packs)
    server.server = await asyncio.start_server(server._handle, host, port)
    sock = server.server.sockets[0].getsockname()
    server.host, server.port = sock[0], sock[1]
    return server


def write_truth_file(packs: Sequence[SimulatedPack], path: str | os.PathLike[str]) -> None:
    """Write the ground truth as JSON, atomically (readers never see half a file)."""
    target = Path(path)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps({"packs": {p.id: p.truth() for p in packs}}, indent=1))
    tmp.replace(target)
