"""Real processes for the gateway's end-to-end tests: the server, the gateway, simulated packs.

Nothing here fakes our own code: the server is ``trackingbms server`` over HTTP, the gateway is
``trackingbms gateway`` (so it can be SIGKILLed), the packs are the simulator on TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")
CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on ``port`` (and not another test run's server)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{f[9]}]")
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return True
    return False


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 60.0, every_s: float = 0.2) -> Any:
    """Poll until ``check()`` is truthy (a generous ceiling, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # keep polling: the thing may not be up yet
            last_exc = exc
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last error: {last_exc})")


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def to_toml(data: dict[str, Any]) -> str:
    """Just enough TOML writing for gateway configs (top-level keys, tables, arrays of tables)."""
    lines: list[str] = []
    tables: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict) or (isinstance(value, list) and value and isinstance(value[0], dict)):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {toml_value(value)}")
    for key, value in tables:
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"\n[[{key}]]" if isinstance(value, list) else f"\n[{key}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


class GatewayProcess:
    """``trackingbms gateway -c <file>`` as a child process, its log in ``log_path``."""

    def __init__(self, config: dict[str, Any], workdir: Path):
        self.config = config
        self.workdir = workdir
        self.config_path = workdir / "gateway.toml"
        self.config_path.write_text(to_toml(config))
        self.log_path = workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def local_url(self) -> str:
        return f"http://{self.config['local_api']['listen']}"

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*CLI, "gateway", "-c", str(self.config_path)], stdout=log, stderr=log
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def state(self) -> dict[str, Any]:
        # plain HTTP: verify=False spares building a TLS context on every poll of a wait loop
        return httpx.get(self.local_url + "/local/v1/state", timeout=5, verify=False).json()


def env_with(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


class LoopThread:
    """An asyncio loop in a thread, for the simulated packs and the uplink proxy while the test blocks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def call(self, fn: Callable[[], T]) -> T:
        async def go() -> T:
            return fn()

        return self.run(go())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Packs:
    """Simulated packs on TCP (one endpoint each), served from a :class:`LoopThread`."""

    def __init__(self, loop: LoopThread, battery_ids: list[str], cells: int = 8, sensors: int = 2):
        from trackingbms.sim import PackConfig, Quirks, SimulatedPack

        self.loop = loop
        self.packs = {
            bid: SimulatedPack(
                PackConfig(pack_id=bid, cells=cells, sensors=sensors, seed=i + 1, scenario="idle"),
                Quirks(latency_s=0.005),
            )
            for i, bid in enumerate(battery_ids)
        }
        self.endpoints: dict[str, Any] = {}
        self.ports: dict[str, int] = {}
        for bid in battery_ids:
            self.plug(bid)

    def plug(self, bid: str) -> None:
        from trackingbms.sim import serve_tcp

        self.endpoints[bid] = self.loop.run(serve_tcp(self.packs[bid], "127.0.0.1", self.ports.get(bid, 0)))
        self.ports[bid] = self.endpoints[bid].port

    def plug_pty(self, bid: str) -> str:
        """Serve the pack on a pseudo-terminal instead (the serial-port path); returns its device path."""
        from trackingbms.sim import serve_pty

        self.endpoints[bid] = self.loop.run(serve_pty(self.packs[bid]))
        return self.endpoints[bid].path

    def unplug(self, bid: str) -> None:
        self.loop.run(self.endpoints.pop(bid).close())

    def url(self, bid: str) -> str:
        return f"tcp://127.0.0.1:{self.ports[bid]}"

    def sleep(self, bid: str) -> None:
        self.loop.call(lambda: setattr(self.packs[bid], "asleep", True))

    def wake(self, bid: str) -> None:
        self.loop.call(self.packs[bid].wake)

    def close(self) -> None:
        for bid in list(self.endpoints):
            self.unplug(bid)


class TcpProxy:
    """A plain TCP forwarder standing for a network path (the "wifi" route); cut() drops it."""

    def __init__(self, loop: LoopThread, target_port: int):
        self.loop = loop
        self.target_port = target_port
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.restore()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    def restore(self) -> None:
        async def go() -> None:
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            self.port = self.server.sockets[0].getsockname()[1]

        self.loop.run(go())

    def cut(self) -> None:
        async def go() -> None:
            assert self.server is not None
            self.server.close()
            for w in list(self.writers):
                w.transport.abort()
            self.writers.clear()

        self.loop.run(go())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class ServerProcess:
    """``trackingbms server`` on SQLite in ``data_dir``, provisioned: tenant, user, device, batteries."""

    EMAIL, PASSWORD = "ops@acme.test", "s3cret-pass"

    def __init__(
        self,
        data_dir: Path,
        battery_ids: list[str],
        device: str = "gw-1",
        db_url: str | None = None,
        **env: str,
    ):
        from trackingbms.server import provisioning as p
        from trackingbms.server.db import default_sqlite_url

        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url or default_sqlite_url(data_dir)
        if db_url:  # PostgreSQL (or another file): the server is told by its environment variable
            env = {"TRACKINGBMS_DATABASE_URL": db_url, **env}
        self.device = device

        async def provision() -> str:
            await p.create_tenant(self.db_url, "acme")
            await p.create_user(self.db_url, "acme", self.EMAIL, self.PASSWORD, "admin")
            await p.create_site(self.db_url, "acme", "depot")
            dev = await p.provision_device(self.db_url, "acme", device)
            for bid in battery_ids:
                await p.create_battery(self.db_url, "acme", "depot", bid, device=device)
            return dev["token"]

        self.device_token = asyncio.run(provision())
        self.port = free_port()
        self.env = env_with(
            **{"TRACKINGBMS_INGEST_RATE_PER_S": "1000", "TRACKINGBMS_INGEST_BURST": "1000", **env}
        )
        self.log_path = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._user_token: str | None = None
        self._started = False
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start and wait until *this* process answers on the port. Ports come from :func:`free_port`, and on
        a machine shared with other test runs another server may take one between the pick and the bind:
        before the first start a new port is picked then; on a restart that is a clear failure."""
        for _ in range(3):
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [
                        *CLI,
                        "server",
                        "--port",
                        str(self.port),
                        "--data-dir",
                        str(self.data_dir),
                        "--log-level",
                        "warning",
                    ],
                    stdout=log,
                    stderr=log,
                    env=self.env,
                )
            proc = self.proc

            def up(proc: subprocess.Popen[bytes] = proc) -> bool:
                if proc.poll() is not None:
                    return True
                return (
                    listens(proc.pid, self.port)
                    and httpx.get(self.url + "/api/v1/me", timeout=2).status_code == 401
                )

            wait_for("the server to answer", up, timeout_s=180)  # migrations on a loaded 2-core machine
            if proc.poll() is None:
                self._started = True
                return
            if self._started or "address already in use" not in self.log_path.read_text(errors="replace"):
                raise AssertionError(
                    f"the server exited with {proc.returncode}:\n{self.log_path.read_text()[-3000:]}"
                )
            self.port = free_port()
        raise AssertionError("no free port for the server after 3 tries")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (what a crash or the OOM killer does)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def user_headers(self) -> dict[str, str]:
        if self._user_token is None:
            r = httpx.post(
                self.url + "/api/v1/auth/login", json={"email": self.EMAIL, "password": self.PASSWORD}
            )
            r.raise_for_status()
            self._user_token = r.json()["access_token"]
        return {"Authorization": f"Bearer {self._user_token}"}

    def export(self, battery_id: str) -> list[dict[str, str]]:
        r = httpx.get(
            f"{self.url}/api/v1/batteries/{battery_id}/export.csv",
            params={"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"},
            headers=self.user_headers(),
            timeout=60,
        )
        r.raise_for_status()
        return list(csv.DictReader(io.StringIO(r.text)))

    def seqs(self, battery_id: str) -> list[int]:
        return [int(row["seq"]) for row in self.export(battery_id)]

    def device_info(self) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/api/v1/devices/{self.device}", headers=self.user_headers(), timeout=10)
        r.raise_for_status()
        return r.json()

    def set_config(self, config: dict[str, Any]) -> dict[str, Any]:
        from trackingbms.server import provisioning as p

        return asyncio.run(p.set_device_config(self.db_url, "acme", self.device, config))


def gateway_seqs(state_dir: Path) -> dict[str, list[int]]:
    """Every seq the gateway ever stored, per battery (acked samples stay for the local history)."""
    db = sqlite3.connect(state_dir / "queue.sqlite3")
    try:
        out: dict[str, list[int]] = {}
        for bid, seq in db.execute("SELECT battery_id, seq FROM samples ORDER BY battery_id, seq"):
            out.setdefault(bid, []).append(seq)
        return out
    finally:
        db.close()


def gateway_config(
    token: str, state_dir: Path, uplinks: list[dict[str, Any]], bms: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "device_token": token,
        "state_dir": str(state_dir),
        "heartbeat_interval_s": 2.0,
        "log_level": "info",
        "uplinks": uplinks,
        "bms": bms,
        "retry": {"backoff_initial_s": 0.2, "backoff_max_s": 2.0},
        "local_api": {"listen": f"127.0.0.1:{free_port()}"},
        **extra,
    }
    return cfg
