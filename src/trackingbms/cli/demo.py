"""Command: ``trackingbms demo`` — the whole system on one machine, in one process.

Six simulated Daly packs on two sites (served on TCP on 127.0.0.1, speaking the real A5 protocol),
one gateway per site polling them, the server on SQLite in a data directory, a demo tenant, user and
devices. Prints the dashboard URL and the login; runs until Ctrl-C.

:func:`run_demo` is the asyncio core; :class:`DemoThread` runs it in a background thread (the browser
tests use it).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from trackingbms.cli.app import app

if TYPE_CHECKING:  # asyncio is imported where it runs: `trackingbms --help` starts without it
    import asyncio

DEMO_TENANT = "demo"
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "demo-battery"


@dataclass(frozen=True)
class DemoPack:
    battery_id: str
    name: str
    story: str
    pack: dict[str, Any]
    quirks: dict[str, Any] = field(default_factory=dict)
    #: prefill this pack's history (a pack "installed today" has none)
    history: bool = True
    #: the newest hours of that history are sampled every 5 s, as a gateway polls (the rest every few
    #: minutes): the resistance estimate needs samples seconds apart while the current moves
    dense_history_h: float = 0.5


#: hours of history on a new data dir: the Old bank floats from its first hour and the engine needs a day
#: of its float to name the weak cell, so the finding is there on the first analytics tick
DEFAULT_HISTORY_H = 36.0


@dataclass(frozen=True)
class DemoSite:
    name: str
    device: str
    packs: tuple[DemoPack, ...]


# Scenarios chosen so that a few minutes at --speed 60 show every dashboard state: solar charging,
# a weak cell found by the analytics, a BMS falling asleep, a pack charging into its over-voltage alarm.
SITES: tuple[DemoSite, ...] = (
    DemoSite(
        "Lakeside cabin",
        "gw-cabin",
        (
            DemoPack(
                "cabin-house",
                "House bank",
                "16S LFP 280 Ah charging from solar",
                dict(
                    cells=16,
                    sensors=4,
                    chemistry="lfp",
                    capacity_ah=280,
                    soc_pct=45,
                    seed=11,
                    scenario="solar-day",
                ),
            ),
            DemoPack(
                "cabin-weak",
                "Old bank",
                "16S LFP 100 Ah standby bank on a float charger, one cell self-discharging (cell 7)",
                dict(
                    cells=16,
                    sensors=2,
                    chemistry="lfp",
                    capacity_ah=100,
                    soc_pct=92,
                    seed=12,
                    # a float charger holds the bank at the top knee, where LFP cell voltages tell SOC: the
                    # weak cell's drift against the others is measurable there (on the plateau it is not)
                    scenario="ups",
                    weak_cell=7,
                    # ten times a bad cell's rate, so that the history shows it: the engine names cell 7 once
                    # it has watched a day of float (live samples carry wall-clock time: history it must be)
                    weak_cell_extra_self_discharge_pct_month=30.0,
                    soc_spread_pct=2.0,
                    capacity_fade_pct=12.0,
                ),
            ),
            DemoPack(
                "cabin-boat",
                "Boat battery",
                "8S LFP 50 Ah at rest: its BMS falls asleep",
                dict(
                    cells=8, sensors=1, chemistry="lfp", capacity_ah=50, soc_pct=80, seed=13, scenario="idle"
                ),
                dict(sleep_after_s=900.0),
            ),
        ),
    ),
    DemoSite(
        "Workshop",
        "gw-workshop",
        (
            DemoPack(
                "shop-ebike",
                "E-bike",
                "13S NMC 20 Ah out on rides",
                dict(
                    cells=13,
                    sensors=2,
                    chemistry="nmc",
                    capacity_ah=20,
                    soc_pct=70,
                    seed=21,
                    scenario="ebike-ride",
                ),
                # a ride every 6 h: the last one before the demo goes live, at 5 s, gives the Health card a
                # resistance trend
                dense_history_h=6.5,
            ),
            DemoPack(
                "shop-charger",
                "Charging cart",
                "16S LFP 100 Ah charging to full (over-voltage alarm)",
                dict(
                    cells=16,
                    sensors=2,
                    chemistry="lfp",
                    capacity_ah=100,
                    soc_pct=93,
                    seed=22,
                    scenario="charge-full",
                ),
                history=False,
            ),
            DemoPack(
                "shop-ups",
                "UPS",
                "16S LFP 200 Ah feeding a small load",
                dict(
                    cells=16,
                    sensors=4,
                    chemistry="lfp",
                    capacity_ah=200,
                    soc_pct=88,
                    seed=23,
                    scenario="constant",
                    constant_current_a=-3.0,  # 36 h of history leave it about half full
                ),
            ),
        ),
    ),
)


@dataclass
class DemoInfo:
    """What a running demo tells its user (and the tests)."""

    url: str
    email: str
    password: str
    data_dir: Path
    database_url: str
    batteries: dict[str, DemoPack]
    sim_urls: dict[str, str]
    device_tokens: dict[str, str] = field(repr=False, default_factory=dict)
    #: per gateway (device name), its LAN page: the same app served by the gateway (direct mode)
    gateway_urls: dict[str, str] = field(default_factory=dict)


class DemoError(RuntimeError):
    """The demo cannot start (port taken, data dir unusable, …); the message says why."""


async def _provision(db_url: str, poll_interval_s: float) -> tuple[dict[str, str], bool]:
    """Tenant, user, sites, devices, batteries; idempotent on a reused data dir.

    → ({device: token}, whether the data dir was new)."""
    from trackingbms.server import provisioning as p
    from trackingbms.server.store import NotFound

    tokens: dict[str, str] = {}
    async with p.open_store(db_url) as store:
        try:
            await store.tenant_by_name(DEMO_TENANT)
            fresh = False
        except NotFound:  # a new data dir
            fresh = True
        if fresh:
            await p.create_tenant(store, DEMO_TENANT)
            await p.create_user(store, DEMO_TENANT, DEMO_EMAIL, DEMO_PASSWORD, "admin")
            for site in SITES:
                await p.create_site(store, DEMO_TENANT, site.name)
                dev = await p.provision_device(store, DEMO_TENANT, site.device)
                tokens[site.device] = dev["token"]
                for pk in site.packs:
                    await p.create_battery(
                        store,
                        DEMO_TENANT,
                        site.name,
                        pk.battery_id,
                        name=pk.name,
                        device=site.device,
                        poll_interval_s=poll_interval_s,
                        # as an admin registers a pack: its chemistry picks the cell-voltage alarm
                        # thresholds (an NMC pack at 4.1 V is full, not in over-voltage) and the rated
                        # capacity is what SOH is measured against
                        chemistry=pk.pack.get("chemistry", "lfp"),
                        rated_capacity_ah=pk.pack.get("capacity_ah"),
                    )
        else:
            # Tokens are stored hashed: a restarted demo issues its gateways new ones.
            for site in SITES:
                tokens[site.device] = (await p.new_device_token(store, DEMO_TENANT, site.device))["token"]
    return tokens, fresh


def _gateway_config(
    site: DemoSite,
    token: str,
    server_url: str,
    sim_urls: dict[str, str],
    state_dir: Path,
    poll_interval_s: float,
    lan_listen: str,
) -> Any:
    from trackingbms.gateway import GatewayConfig
    from trackingbms.gateway.config import SLOW_COMMANDS

    return GatewayConfig.from_dict(
        {
            "device_token": token,
            "state_dir": str(state_dir),
            "heartbeat_interval_s": 10.0,
            "log_level": "warning",
            "uplinks": [{"name": "lan", "url": server_url, "batch_max_age_s": 0.5}],
            # the gateway's own page (the app in direct mode, reading the gateway, no server needed)
            "local_api": {"enabled": True, "listen": lan_listen, "server_url": server_url},
            "bms": [
                {
                    "battery_id": pk.battery_id,
                    "port": sim_urls[pk.battery_id],
                    "source": "sim",
                    "poll_interval_s": poll_interval_s,
                    # every command on every poll: each sample is a full reading, so every page of the
                    # dashboard has cells and temperatures from the first sample on
                    "cadences_s": dict.fromkeys(SLOW_COMMANDS, 0.0),
                    "asleep_after_s": 8.0,
                    "reconnect_max_s": 5.0,
                }
                for pk in site.packs
            ],
        },
        origin=f"demo gateway {site.device}",
    )


def _past_samples(
    sim: Any,
    battery_id: str,
    start: datetime,
    hours: float,
    every_s: float,
    dense_tail_s: float = 0.0,
    dense_every_s: float = 5.0,
) -> list[dict[str, Any]]:
    """Samples for the past ``hours``: the pack is read over the A5 protocol (the simulator's reply bytes,
    decoded by the Daly codec) while its simulated time steps through them, without waiting. Every
    ``every_s``, and every ``dense_every_s`` over the last ``dense_tail_s``, as a gateway polls: the
    resistance estimate needs samples seconds apart (minutes apart, current steps are not resolved)."""
    from trackingbms.daly import A5Parser, CommandPoll
    from trackingbms.daly.exchange import A5Exchange, Timing, run_offline
    from trackingbms.daly.snapshot import A5Counts, A5Snapshot
    from trackingbms.model import Sample

    out: list[dict[str, Any]] = []
    counts = A5Counts()
    parser = A5Parser(board=1)
    timing = Timing(baud=9600, turnaround_s=0.2, retries=0)

    def reply(request: bytes) -> bytes:
        return b"".join(e.data for e in sim.respond(request))

    def new_exchange(data_id: int) -> A5Exchange:
        poll = CommandPoll(
            data_id, address=0x40, board=1, cell_count=counts.cell_count, sensor_count=counts.sensor_count
        )
        return A5Exchange(poll, parser=parser, timing=timing)

    span_s = hours * 3600
    dense_from_s = max(0.0, span_s - dense_tail_s)
    offsets = [k * every_s for k in range(int(dense_from_s // every_s) + 1) if k * every_s < dense_from_s]
    offsets += [
        dense_from_s + k * dense_every_s for k in range(int((span_s - dense_from_s) // dense_every_s))
    ]
    previous_s = 0.0
    for offset_s in offsets:
        if offset_s:
            sim.advance(offset_s - previous_s)
        previous_s = offset_s
        # the same plan and exchanges as the gateway's client, fed the simulator's bytes with no clock
        plan = A5Snapshot(None, new_exchange=new_exchange, counts=counts)
        ex = plan.next_exchange()
        while ex is not None:
            ex = plan.settle(run_offline(ex, reply))
        if plan.no_reply is not None:
            continue  # asleep: only the echo of the request came back
        records = plan.records
        if not records:
            continue
        ts = start + timedelta(seconds=offset_s)
        reading = plan.reading(source="sim").model_copy(update={"ts": ts})
        # seq from the time in ms, like the gateway's first seq: the gateway's later ones stay above it
        out.append(
            Sample.from_reading(
                reading, battery_id=battery_id, seq=int(ts.timestamp() * 1000), via="lan"
            ).to_wire()
        )
    return out


async def _upload(url: str, token: str, samples: list[dict[str, Any]]) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        for i in range(0, len(samples), 2000):
            resp = await http.post(
                "/api/v1/ingest",
                json={"samples": samples[i : i + 2000]},
                headers={"Authorization": f"Bearer {token}"},
            )
            if resp.status_code != 200 or resp.json().get("rejected"):
                raise DemoError(f"the server refused the demo history: {resp.status_code} {resp.text[:300]}")


def _make_server(config: Any) -> Any:
    """uvicorn's Server without its own signal handling: the demo owns Ctrl-C and shuts down in order."""
    import uvicorn

    class QuietServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return QuietServer(config)


async def run_demo(
    *,
    port: int = 8080,
    host: str = "127.0.0.1",
    data_dir: Path | None = None,
    speed: float = 60.0,
    poll_interval_s: float = 2.0,
    history_h: float = DEFAULT_HISTORY_H,
    stop: asyncio.Event,
    on_ready: Callable[[DemoInfo], None] | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Run the demo until ``stop`` is set; ``on_ready`` gets the URL and login once all parts run."""
    import asyncio

    import uvicorn

    from trackingbms.gateway import run_gateway
    from trackingbms.server.app import create_app
    from trackingbms.server.db import default_sqlite_url
    from trackingbms.server.guard import uvicorn_options
    from trackingbms.server.settings import Settings
    from trackingbms.sim import PackConfig, Quirks, SimulatedPack, serve_tcp
    from trackingbms.sim.pack import ManualClock, RealTimeClock

    temp_dir = data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="trackingbms-demo-")) if data_dir is None else data_dir
    endpoints: list[Any] = []
    gateways: list[asyncio.Task[None]] = []
    gw_stop = asyncio.Event()
    server: Any = None
    server_task: asyncio.Task[None] | None = None
    sock: socket.socket | None = None
    lan_socks: dict[str, socket.socket] = {}
    announced = False
    try:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DemoError(f"cannot use data dir {data_dir}: {exc.strerror or exc}") from None
        db_url = default_sqlite_url(data_dir)
        log(f"Data dir: {data_dir}{' (temporary, removed on exit)' if temp_dir else ''}")
        tokens, fresh = await _provision(db_url, poll_interval_s)
        if stop.is_set():
            return

        # Simulated days begin at 07:30 so that the solar packs see the sun rise in the first minutes;
        # packs with history start that much earlier and live through it (at once) before going live.
        history_h = history_h if fresh else 0.0  # a reused data dir has its history already
        morning = datetime.now(UTC).replace(hour=7, minute=30, second=0, microsecond=0)
        sims: dict[str, Any] = {}
        batteries: dict[str, DemoPack] = {}
        for site in SITES:
            for pk in site.packs:
                lead_h = history_h if pk.history else 0.0
                sims[pk.battery_id] = SimulatedPack(
                    PackConfig(
                        pack_id=pk.battery_id,
                        speed=speed,
                        start=morning - timedelta(hours=lead_h),
                        # 10 s physics steps (the simulator's default is 2 s): history fills in 4x faster
                        step_s=10.0,
                        **pk.pack,
                    ),
                    Quirks(**pk.quirks),
                    clock=ManualClock(),
                )
                batteries[pk.battery_id] = pk

        # Bind here rather than in uvicorn: a taken port becomes a clear message (uvicorn would
        # sys.exit), and port 0 picks a free one.
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise DemoError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} (try another --port)"
            ) from None
        bound_port = sock.getsockname()[1]
        # a wildcard address is where to listen, not where to connect
        near = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(
            host, f"[{host}]" if ":" in host else host
        )
        url = f"http://{near}:{bound_port}"
        # each gateway's own page (its LAN API): the dashboard's port + 1, + 2, … when free
        lan_socks = {
            site.device: _lan_port(host, bound_port + 1 + k if port else 0) for k, site in enumerate(SITES)
        }
        lan_ports = {device: int(sk.getsockname()[1]) for device, sk in lan_socks.items()}
        gateway_urls = {device: f"http://{near}:{p}/" for device, p in lan_ports.items()}
        settings = Settings.load(
            data_dir=data_dir,
            database_url=db_url,
            host=host,
            port=bound_port,
            log_level="warning",
            # the app served by a gateway calls the server's API from the browser in server mode
            relay_origins=[u.rstrip("/") for u in gateway_urls.values()],
        )
        server = _make_server(
            uvicorn.Config(
                create_app(settings),
                host=host,
                port=bound_port,
                log_level="warning",
                **uvicorn_options(settings),
            )
        )
        server_task = asyncio.create_task(server.serve(sockets=[sock]), name="demo-server")
        while not server.started:
            if server_task.done():
                exc = server_task.exception() if not server_task.cancelled() else None
                raise DemoError(f"the server did not start on {host}:{bound_port}: {exc!r}")
            await asyncio.sleep(0.05)

        if history_h > 0:
            log(f"Filling in {history_h:g} h of history…")
            since = datetime.now(UTC) - timedelta(hours=history_h)
            every_s = max(60.0, history_h * 3600 / 500)
            for site in SITES:
                for pk in site.packs:
                    if stop.is_set():
                        return  # Ctrl-C while starting
                    if pk.history:
                        past = await asyncio.to_thread(
                            _past_samples,
                            sims[pk.battery_id],
                            pk.battery_id,
                            since,
                            history_h,
                            every_s,
                            dense_tail_s=min(pk.dense_history_h, history_h) * 3600,
                        )
                        await _upload(url, tokens[site.device], past)

        # the packs go live (simulated time now runs at `speed`), each on its own TCP port as if
        # behind a serial-to-network adapter
        sim_urls: dict[str, str] = {}
        for battery_id, sim in sims.items():
            sim.clock = RealTimeClock(speed)
            ep = await serve_tcp(sim, host="127.0.0.1", port=0)
            endpoints.append(ep)
            sim_urls[battery_id] = ep.url

        for sk in lan_socks.values():
            sk.close()  # each gateway listens on its port now
        lan_socks.clear()
        for site in SITES:
            config = _gateway_config(
                site,
                tokens[site.device],
                url,
                sim_urls,
                data_dir / "gateways" / site.device,
                poll_interval_s,
                f"{host}:{lan_ports[site.device]}",
            )
            gateways.append(
                asyncio.create_task(run_gateway(config, stop=gw_stop), name=f"gateway-{site.device}")
            )

        info = DemoInfo(
            url=url + "/",
            email=DEMO_EMAIL,
            password=DEMO_PASSWORD,
            data_dir=data_dir,
            database_url=db_url,
            batteries=batteries,
            sim_urls=sim_urls,
            device_tokens=tokens,
            gateway_urls=gateway_urls,
        )
        lines = [
            "",
            f"TrackingBMS demo is running: {len(batteries)} simulated packs on {len(SITES)} sites, "
            f"simulated time x{speed:g}.",
            "",
            f"  Dashboard:  {info.url}",
            f"  Email:      {DEMO_EMAIL}",
            f"  Password:   {DEMO_PASSWORD}",
            "",
        ]
        for site in SITES:
            lines.append(f"  {site.name} (gateway {site.device}, its own page: {gateway_urls[site.device]}):")
            lines += [f"    {pk.battery_id:<14} {pk.story}" for pk in site.packs]
        lines += [
            "",
            "A gateway's own page is the same app served on the site's LAN: with no server (or no internet)",
            "it reads the gateway directly (direct mode); the badge in its top bar says which mode it is in.",
            "",
            "Press Ctrl-C to stop.",
        ]
        log("\n".join(lines))
        announced = True
        if on_ready is not None:
            on_ready(info)

        stop_wait = asyncio.create_task(stop.wait())
        watched: set[asyncio.Task[Any]] = {stop_wait, server_task, *gateways}
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        for task in done:
            if task is not stop_wait and not task.cancelled() and task.exception() is not None:
                raise DemoError(f"{task.get_name()} stopped: {task.exception()!r}")
    finally:
        if announced:  # a start-up error is said on its own (the caller prints it)
            log("Stopping…")
        gw_stop.set()
        if gateways:
            _, pending = await asyncio.wait(gateways, timeout=10)
            for task in pending:
                task.cancel()
            await asyncio.gather(*gateways, return_exceptions=True)
        if server is not None and server_task is not None:
            server.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(server_task, timeout=10)
        if sock is not None:
            sock.close()
        for sk in lan_socks.values():
            sk.close()
        for ep in endpoints:
            with contextlib.suppress(Exception):
                await ep.close()
        if temp_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


def _lan_port(host: str, wanted: int) -> socket.socket:
    """A socket bound to ``wanted`` if it is free on ``host`` (the dashboard's port + 1, + 2, …: easy to
    remember), else to any free port (a gateway page is a convenience: a taken port must not stop the
    demo). Kept bound, so that nothing else takes the port, until the gateway is about to listen on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for candidate in (wanted, 0) if wanted and wanted <= 65535 else (0,):
        probe = socket.socket(family, socket.SOCK_STREAM)
        try:
            probe.bind((host, candidate))
        except OSError:
            probe.close()
            continue
        return probe
    raise DemoError(f"no free port on {host} for a gateway's page")


class DemoThread:
    """Run the demo in a background thread with its own event loop (for tests and notebooks)::

    with DemoThread(port=0, speed=120) as info:
        print(info.url)
    """

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.info: DemoInfo | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="trackingbms-demo", daemon=True)

    def _run(self) -> None:
        import asyncio

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await run_demo(stop=self._stop, on_ready=self._on_ready, log=lambda _msg: None, **self.options)

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()

    def _on_ready(self, info: DemoInfo) -> None:
        self.info = info
        self._ready.set()

    def start(self, timeout_s: float = 60.0) -> DemoInfo:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            self.stop()
            raise DemoError(f"the demo did not start within {timeout_s:g} s")
        if self.info is None:
            raise DemoError(f"the demo failed to start: {self.error!r}") from self.error
        return self.info

    def stop(self, timeout_s: float = 30.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)

    def __enter__(self) -> DemoInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@app.command()
def demo(
    port: int = typer.Option(8080, min=0, max=65535, help="dashboard / API port on 127.0.0.1"),
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="keep the demo database here (default: a temp dir)"
    ),
    speed: float = typer.Option(60.0, min=0.1, max=10000, help="simulated time runs this many times faster"),
    host: str = typer.Option("127.0.0.1", help="address to serve the dashboard on"),
    history_hours: float = typer.Option(
        DEFAULT_HISTORY_H,
        min=0,
        max=24 * 31,
        help="fill in this much past history on a new data dir (0: none)",
    ),
) -> None:
    """Run everything on this machine: simulated packs, gateways, the server and the dashboard."""
    import asyncio
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await run_demo(
            port=port,
            host=host,
            data_dir=data_dir,
            speed=speed,
            history_h=history_hours,
            stop=stop,
            log=lambda msg: typer.echo(msg, err=msg == "Stopping…"),
        )

    try:
        asyncio.run(main())
    except DemoError as exc:
        typer.echo(f"trackingbms demo: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        raise typer.Exit(130) from None
    typer.echo("Stopped.")
