"""Command: ``trackingbms simulate`` — virtual Daly packs on TCP ports or ptys until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trackingbms.cli.app import app


def _reason(exc: OSError) -> str:
    import os

    return os.strerror(exc.errno).lower() if exc.errno else str(exc)


def _link_for(link: str, index: int, packs: int) -> str:
    if "{n}" in link:
        return link.replace("{n}", str(index))
    return link if packs == 1 else f"{link}-{index}"


@app.command()
def simulate(
    packs: Annotated[int, typer.Option(min=1, max=64, help="Number of packs.")] = 1,
    cells: Annotated[int, typer.Option(min=3, max=48, help="Cells in series per pack.")] = 16,
    sensors: Annotated[int, typer.Option(min=1, max=16, help="Temperature sensors per pack.")] = 4,
    chemistry: Annotated[str, typer.Option(help="lfp, nmc or lto.")] = "lfp",
    capacity_ah: Annotated[float, typer.Option("--capacity-ah", help="Rated capacity (Ah).")] = 100.0,
    soc: Annotated[float, typer.Option(help="Initial state of charge (%).")] = 60.0,
    scenario: Annotated[
        str,
        typer.Option(
            help="idle, constant, solar-day, ebike-ride, charge-full, ups, or schedule (with --schedule)."
        ),
    ] = "idle",
    schedule: Annotated[
        Path | None,
        typer.Option(help="Schedule (.toml or .csv file, or a bundled one: workshop-day, pulse-test)."),
    ] = None,
    current: Annotated[float, typer.Option(help="Current (A, + = charging) for --scenario constant.")] = 0.0,
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of pack 1 (pack n uses seed + n - 1).")] = 1,
    faults: Annotated[
        str,
        typer.Option(
            help="Wire quirks, e.g. 'loss=0.01,sleep_after=3600,bad_checksum=0.001,garbage=0.01,latency=0.06,"
            "baud=9600,echo=1,hosts=both,frames=auto,invert_current=0,stale=1,heartbeat=1'."
        ),
    ] = "",
    weak_cell: Annotated[int | None, typer.Option(help="Cell (1-based) with high self-discharge.")] = None,
    capacity_fade: Annotated[float, typer.Option(help="Capacity fade of every cell (%).")] = 0.0,
    resistance_growth: Annotated[float, typer.Option(help="Resistance growth of every cell (%).")] = 0.0,
    tcp_port_base: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="TCP port of pack 1 (pack n: base + n - 1); default: any."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address the TCP servers listen on.")] = "127.0.0.1",
    pty: Annotated[bool, typer.Option("--pty", help="Serve each pack on a pty instead of TCP.")] = False,
    link: Annotated[
        str | None,
        typer.Option(help="With --pty: stable symlink (PATH, or PATH-n / PATH with {n} for several)."),
    ] = None,
    bus: Annotated[
        bool, typer.Option("--bus", help="All packs on one shared line (boards 1..N, host 0x40 + board - 1).")
    ] = False,
    truth_port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Serve the ground truth at http://HOST:PORT/truth.")
    ] = None,
    truth_file: Annotated[
        Path | None, typer.Option(help="Also write the ground truth to this JSON file.")
    ] = None,
    weak_cell_extra_sd: Annotated[
        float | None,
        typer.Option(
            help="With --weak-cell: its self-discharge over the pack's median cell, %/month "
            "(instead of 20x its own)."
        ),
    ] = None,
    current_offset: Annotated[float, typer.Option(help="Current-sensor offset (A).")] = 0.05,
    current_noise: Annotated[float, typer.Option(help="Current-sensor noise, 1 sigma (A).")] = 0.0,
    bms_soc_error: Annotated[
        float, typer.Option(help="The BMS's SOC starts this many points off the truth (drift).")
    ] = 0.0,
    record: Annotated[
        Path | None,
        typer.Option(
            help="Instead of serving: run in simulated time as fast as possible and write what a gateway "
            "would have recorded to this CSV (export format; several packs: FILE-n.csv or {n} in FILE)."
        ),
    ] = None,
    duration: Annotated[
        str, typer.Option(help="With --record: simulated time, e.g. 30d, 12h, 90m, 3600.")
    ] = "1d",
    interval: Annotated[
        float | None,
        typer.Option(
            help="With --record: sampling period in simulated seconds (default: the gateway's poll)."
        ),
    ] = None,
    protocol: Annotated[
        str,
        typer.Option(
            help="Protocol the packs speak: a5, d2 (fixed address 0xD2) or p81 (boards 1–16); "
            "on --wire can: a5 (legacy Daly CAN) or hkms (H/K/M/S broadcast, experimental)."
        ),
    ] = "a5",
    wire: Annotated[
        str | None,
        typer.Option(
            help="serial (a pty, same as --pty), tcp (default), can (all packs on one CAN bus, boards 1..N) "
            "or ble (one virtual Bluetooth module per pack, reached through bumble)."
        ),
    ] = None,
    can_interface: Annotated[
        str,
        typer.Option(
            help="With --wire can: slcan (default: a simulated USB-CAN adapter on a pty, for clients in "
            "other processes), or a python-can interface to join (socketcan with --can-channel vcan0...)."
        ),
    ] = "slcan",
    can_channel: Annotated[
        str | None, typer.Option(help="With --wire can and a python-can interface: its channel.")
    ] = None,
    broadcast_interval: Annotated[
        float, typer.Option(min=0.05, help="With --protocol hkms: seconds between broadcast rounds.")
    ] = 1.0,
) -> None:
    """Virtual Daly BMS packs with battery physics, speaking a real Daly protocol, until Ctrl-C.

    With --record, no BMS is served: the packs run in simulated time and their samples go to CSV files.
    """
    import asyncio
    import contextlib
    import signal

    from trackingbms.sim import PackConfig, SimConfigError, SimulatedPack, parse_faults
    from trackingbms.sim.config import Quirks

    if protocol not in ("a5", "d2", "p81", "hkms"):
        raise typer.BadParameter(f"{protocol!r}: use a5, d2, p81 or hkms", param_hint="--protocol")
    if wire is not None:
        if wire == "serial":
            pty = True
        elif wire not in ("tcp", "can", "ble"):
            raise typer.BadParameter(f"{wire!r}: use serial, tcp, can or ble", param_hint="--wire")
    if wire == "can":
        if protocol not in ("a5", "hkms"):
            raise typer.BadParameter("on CAN the packs speak a5 or hkms", param_hint="--protocol")
        if packs > 16:
            raise typer.BadParameter("a CAN bus here holds at most 16 boards", param_hint="--packs")
        if can_interface != "slcan" and not can_channel:
            raise typer.BadParameter(
                f"--can-interface {can_interface} needs --can-channel", param_hint="--can-channel"
            )
        bus = packs > 1  # one bus, boards 1..N
    elif protocol == "hkms":
        raise typer.BadParameter("hkms is a CAN protocol: add --wire can", param_hint="--protocol")
    if wire == "ble" and (bus or protocol == "p81"):
        raise typer.BadParameter(
            "over BLE each pack is its own module speaking a5 or d2", param_hint="--wire"
        )
    if protocol == "d2" and bus and packs > 1:
        raise typer.BadParameter(
            "D2 boards all answer at 0xD2: one per bus (use --protocol p81 or a5 for several)",
            param_hint="--bus",
        )
    if link is not None and not pty:
        raise typer.BadParameter("--link needs --pty", param_hint="--link")
    if pty and tcp_port_base is not None:
        raise typer.BadParameter("choose --pty or --tcp-port-base, not both", param_hint="--pty")
    if bus and packs > 16:
        raise typer.BadParameter("a shared bus holds at most 16 boards", param_hint="--packs")
    if tcp_port_base and not bus and tcp_port_base + packs - 1 > 65535:
        raise typer.BadParameter("ports would run past 65535", param_hint="--tcp-port-base")
    try:
        base_quirks = parse_faults(faults)
    except SimConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--faults") from None
    step_s = 5.0
    if record is not None:
        from trackingbms.gateway.config import BmsConfig

        if interval is None:
            interval = BmsConfig.model_fields["poll_interval_s"].default
        if not 0 < interval <= 3600:
            raise typer.BadParameter("must be in (0, 3600] seconds", param_hint="--interval")
        duration_s = _duration_s(duration)
        step_s = min(5.0, interval)
    sim_packs: list[SimulatedPack] = []
    configs: list[PackConfig] = []
    for n in range(1, packs + 1):
        try:
            config = PackConfig(
                pack_id=f"sim-{n}",
                cells=cells,
                sensors=sensors,
                chemistry=chemistry.lower(),  # type: ignore[arg-type]
                capacity_ah=capacity_ah,
                soc_pct=soc,
                seed=seed + n - 1,
                scenario=scenario,
                schedule=schedule,
                constant_current_a=current,
                speed=speed,
                weak_cell=weak_cell,
                capacity_fade_pct=capacity_fade,
                resistance_growth_pct=resistance_growth,
                weak_cell_extra_self_discharge_pct_month=weak_cell_extra_sd,
                current_offset_a=current_offset,
                current_noise_a=current_noise,
                bms_soc_error_pct=bms_soc_error,
                step_s=step_s,
            )
            configs.append(config)
            if record is not None:
                continue
            quirks = Quirks(
                **{
                    **base_quirks.__dict__,
                    "board": n if bus else base_quirks.board,
                    "protocol": "a5" if protocol == "hkms" else protocol,
                }
            )
            sim_packs.append(SimulatedPack(config, quirks))
        except SimConfigError as exc:
            raise typer.BadParameter(str(exc)) from None

    if record is not None:
        try:
            _record(configs, record, duration_s, interval, truth_file)  # type: ignore[arg-type]
        except OSError as exc:
            typer.echo(f"error: cannot write {exc.filename}: {_reason(exc)}", err=True)
            raise typer.Exit(1) from None
        return
    try:
        asyncio.run(
            _run(
                sim_packs,
                pty=pty,
                link=link,
                bus=bus,
                host=host,
                tcp_port_base=tcp_port_base,
                truth_port=truth_port,
                truth_file=truth_file,
                wire=wire,
                can=(
                    protocol if protocol == "hkms" else "a5",
                    can_interface,
                    can_channel,
                    broadcast_interval,
                ),
            )
        )
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    with contextlib.suppress(Exception):
        signal.signal(signal.SIGINT, signal.SIG_DFL)


def _duration_s(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    try:
        value = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3 * 365 * 86400:
        raise typer.BadParameter(f"{text!r}: give e.g. 30d, 12h, 90m or seconds (up to 3 years)")
    return value


def _record(configs: list, path: Path, duration_s: float, interval_s: float, truth_file: Path | None) -> None:
    """Write each pack's samples in the export format (one file per pack), then the truth."""
    import csv
    import json
    import time

    from trackingbms.model import csv_header, csv_row
    from trackingbms.sim.record import Recorder

    started = time.monotonic()
    truths = {}
    total = 0
    for n, cfg in enumerate(configs, start=1):
        target = path if len(configs) == 1 else _pack_path(path, n)
        rec = Recorder(cfg)
        n_temps = len(rec.battery.temps_c())
        with open(target, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(csv_header(cfg.cells, n_temps))
            for sample in rec.run(duration_s, interval_s):
                w.writerow(csv_row(sample, cfg.cells, n_temps))
                total += 1
        truths[cfg.pack_id] = {**rec.truth(), "id": cfg.pack_id, "csv": str(target)}
        typer.echo(f"{cfg.pack_id}  {target}  {rec.seq} samples")
    if truth_file is not None:
        truth_file.write_text(json.dumps({"packs": truths}, indent=1))
    wall = time.monotonic() - started
    typer.echo(
        f"{total} samples in {wall:.1f} s ({duration_s * len(configs) / max(wall, 1e-9):.0f}x real time)",
        err=True,
    )


def _pack_path(path: Path, n: int) -> Path:
    if "{n}" in path.name:
        return path.with_name(path.name.replace("{n}", str(n)))
    return path.with_name(f"{path.stem}-{n}{path.suffix}")


async def _run(
    sim_packs: list,  # list[SimulatedPack]; kept loose so the module imports nothing heavy
    *,
    pty: bool,
    link: str | None,
    bus: bool,
    host: str,
    tcp_port_base: int | None,
    truth_port: int | None,
    truth_file: Path | None,
    wire: str | None = None,
    can: tuple[str, str, str | None, float] = ("a5", "slcan", None, 1.0),
) -> None:
    import asyncio
    import signal

    from trackingbms.sim import serve_pty, serve_tcp, serve_truth, write_truth_file

    groups = [sim_packs] if bus or wire == "can" else [[p] for p in sim_packs]
    endpoints: list = []
    truth = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        for i, group in enumerate(groups, start=1):
            if wire in ("can", "ble"):
                endpoints += await _serve_wire(wire, group, i, can)
                continue
            if pty:
                ep = await serve_pty(group, link=_link_for(link, i, len(groups)) if link else None)
                where = ep.path if not link else f"{ep.path} -> {ep.tty_path}"
            else:
                port = tcp_port_base + i - 1 if tcp_port_base else 0
                try:
                    ep = await serve_tcp(group, host=host, port=port)
                except OSError as exc:
                    raise OSError(f"cannot listen on {host}:{port}: {_reason(exc)}") from None
                where = ep.url
            endpoints.append(ep)
            for pack in group:
                asked_at = min(pack.responder.accepted)  # A5: host 0x40 + board - 1; 0x81: 0x80 + board
                board = f"  board {pack.board} (address 0x{asked_at:02X})" if bus else ""
                proto = f"  {pack.quirks.protocol}" if pack.quirks.protocol != "a5" else ""
                typer.echo(f"{pack.id}  {where}{board}{proto}")
        if truth_port is not None:
            try:
                truth = await serve_truth(sim_packs, host=host, port=truth_port)
            except OSError as exc:
                raise OSError(
                    f"cannot serve the truth on {host}:{truth_port}: {exc.strerror or exc}"
                ) from None
            typer.echo(f"truth  {truth.url}")
        typer.echo("running; Ctrl-C to stop", err=True)
        while not stop.is_set():
            if truth_file is not None:
                write_truth_file(sim_packs, truth_file)
            else:
                for pack in sim_packs:
                    pack.sync()  # keep physics current so no single request pays for a long catch-up
            try:
                await asyncio.wait_for(stop.wait(), timeout=1.0)
            except TimeoutError:
                pass
    finally:
        for ep in endpoints:
            await ep.close()
        if truth is not None:
            await truth.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _serve_wire(wire: str, group: list, index: int, can: tuple[str, str, str | None, float]) -> list:
    """CAN: every pack of the group on one bus; BLE: one virtual module for the pack. Prints the ports."""
    if wire == "can":
        from trackingbms.sim.can import serve_can, serve_slcan_pty

        protocol, interface, channel, interval = can
        try:
            if interface == "slcan":
                ep = await serve_slcan_pty(group, protocol=protocol, broadcast_interval_s=interval)
            else:
                ep = await serve_can(
                    group,
                    channel or "",
                    interface=interface,
                    protocol=protocol,
                    broadcast_interval_s=interval,
                )
        except ImportError:
            raise OSError("--wire can needs python-can: pip install 'trackingbms[can]'") from None
        except Exception as exc:  # python-can's errors for a missing interface / channel
            raise OSError(f"cannot open CAN interface {interface} {channel or ''}: {exc}") from None
        for pack in group:
            kind = "hkms-can" if protocol == "hkms" else "a5-can"
            typer.echo(f"{pack.id}  {ep.url}  board {pack.board}  {kind}")
        return [ep]
    from trackingbms.sim.ble import serve_ble

    (pack,) = group
    try:
        ep = await serve_ble(pack, address=f"C0:DA:17:00:00:{index:02X}", name=f"DL-{pack.id}")
    except ImportError:
        raise OSError("--wire ble needs bumble: pip install 'trackingbms[ble]'") from None
    proto = f"  {pack.quirks.protocol}" if pack.quirks.protocol != "a5" else "  a5 (host 0x80)"
    typer.echo(f"{pack.id}  {ep.url}{proto}")
    return [ep]
