"""Commands talking to (or about) a Daly BMS: read, watch, set, decode.

Heavy imports stay inside the functions so ``trackingbms --help`` stays fast.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import typer

from trackingbms.cli.app import app

if TYPE_CHECKING:
    from trackingbms.bms import BmsClient
    from trackingbms.bms.writes import WriteResult
    from trackingbms.model import Reading

EXIT_BMS = 1
EXIT_USAGE = 2


def _parse_address(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number (use 0x40 or 0x80)") from None
    if not 0 <= value <= 0xFF:
        raise typer.BadParameter("address must be one byte (0x40 or 0x80)")
    return value


PORT_HELP = "serial device (/dev/ttyUSB0), tcp://host:port, can://iface/channel or ble://address"
FAMILY_OPT = typer.Option(
    "a5",
    "--family",
    help="a5 | d2 | p81 | a5-can | hkms-can, or auto (probes A5 at 0x40/0x80, D2, 0x81 boards 1–16; "
    "on CAN: A5-CAN boards 1–16 and H/K/M/S broadcasts); a5 on a can:// port means a5-can",
)
ADDRESS_OPT = typer.Option(
    None,
    "--address",
    help="A5 host address: 0x40 = RS485/UART via the PC port, 0x80 = Bluetooth/app; default 0x80 on ble://, "
    "else 0x40",
)
BOARD_OPT = typer.Option(1, "--board", min=1, max=16, help="board number on a shared RS485 bus")
INVERT_OPT = typer.Option(
    False, "--invert-current", help="flip the current sign (firmware that reports it inverted)"
)
BAUD_OPT = typer.Option(9600, "--baud", help="serial baud rate")
RETRIES_OPT = typer.Option(2, "--retries", min=0, help="retries per command")
TURNAROUND_OPT = typer.Option(
    0.2, "--turnaround", min=0.0, help="seconds the BMS may take to start answering (raise for slow bridges)"
)


def _err(msg: str, code: int = EXIT_BMS) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(code)


async def _connect(
    port: str,
    address: str | None,
    board: int,
    invert: bool,
    baud: int,
    retries: int,
    turnaround_s: float = 0.2,
    family: str = "a5",
) -> BmsClient:
    from trackingbms.bms import FAMILIES, BmsNoReply, open_bms
    from trackingbms.links import open_link

    options: dict[str, Any] = {
        "board": board,
        "invert_current": invert,
        "retries": retries,
        "turnaround_s": turnaround_s,
    }
    if family == "auto":
        from trackingbms.bms.probe import probe

        link = await open_link(port, baud=baud)
        try:
            found = await probe(link, first_only=True, baud=baud, invert_current=invert)
        except BaseException:
            await link.close()
            raise
        if not found:
            await link.close()
            raise BmsNoReply(
                f"no BMS answered on {port}: tried A5 at 0x40 and 0x80, D2 at 0xD2 and 0x81 boards 1–16 "
                "(asleep? wiring? baud?)"
            )
        hit = found[0]
        typer.echo(f"auto: {hit.family} answered at {hit.address} (board {hit.board})", err=True)
        options.update(hit.options, board=hit.board)
        bms = await open_bms(port, hit.family, link=link, baud=baud, **options)
        bms.owns_link = True
        return bms
    if family not in FAMILIES:
        raise _err(f"unknown family {family!r}: use auto, {', '.join(FAMILIES)}", EXIT_USAGE)
    from trackingbms.links import link_scheme

    if link_scheme(port) == "can" and family == "a5":
        family = "a5-can"  # A5 on a CAN bus is the legacy Daly CAN protocol
    elif link_scheme(port) != "can" and family in ("a5-can", "hkms-can"):
        raise _err(
            f"--family {family} needs a CAN port (can://<interface>/<channel>), not {port}", EXIT_USAGE
        )
    if family == "a5":
        if address is not None:
            options["address"] = _parse_address(address)
    return await open_bms(port, family, baud=baud, **options)


def _run(coro: Any) -> Any:
    """Run a coroutine; turn link and BMS errors into one explained line and exit status 1."""
    import asyncio

    from trackingbms.bms import BmsError, UnknownFamily
    from trackingbms.links import LinkError

    try:
        return asyncio.run(coro)
    except (LinkError, BmsError) as exc:
        raise _err(str(exc)) from None
    except UnknownFamily as exc:
        raise _err(str(exc), EXIT_USAGE) from None


def reading_table(reading: Reading, stats: dict[str, Any] | None = None, width: int = 120) -> Any:
    """A Rich renderable for one reading: pack, cells (min/max highlighted, delta), temps, faults."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from trackingbms.daly.faults import ALARM_FAULTS, fault_text

    parts: list[Any] = []
    pack = Table(title="Pack", show_header=False, box=None, pad_edge=False)
    pack.add_column(style="bold")
    pack.add_column()

    def row(label: str, value: Any, fmt: str = "{}") -> None:
        pack.add_row(label, "—" if value is None else fmt.format(value))

    row("Voltage", reading.voltage_v, "{:.1f} V")
    row("Current", reading.current_a, "{:+.1f} A")
    row("SOC", reading.soc_pct, "{:.1f} %")
    row("Remaining", reading.remaining_ah, "{:.3f} Ah")
    row("State", reading.state)
    row("Cycles", reading.cycles)
    mos = lambda v: None if v is None else ("on" if v else "OFF")  # noqa: E731
    row("Charge MOSFET", mos(reading.charge_mos))
    row("Discharge MOSFET", mos(reading.discharge_mos))
    row(
        "Charger",
        None if reading.charger_connected is None else ("connected" if reading.charger_connected else "—"),
    )
    row("Load", None if reading.load_connected is None else ("connected" if reading.load_connected else "—"))
    parts.append(pack)

    if reading.cells_mv:
        cells = reading.cells_mv
        lo, hi = min(cells), max(cells)
        balancing = set(reading.balancing or [])
        t = Table(title=f"Cells  (Δ {hi - lo} mV, min {lo} mV, max {hi} mV)")
        per_row = max(2, min(8, (width - 4) // 14))  # "#" + "mV" columns need ~14 characters a cell
        for _ in range(min(per_row, len(cells))):
            t.add_column("#", justify="right", style="dim", no_wrap=True)
            t.add_column("mV", justify="right", min_width=5, no_wrap=True)
        line: list[Any] = []
        for i, mv in enumerate(cells, 1):
            style = "bold red" if mv == hi and hi != lo else "bold cyan" if mv == lo and hi != lo else ""
            mark = "~" if i in balancing else ""
            line += [str(i), Text(f"{mv}{mark}", style=style)]
            if len(line) == 2 * per_row:
                t.add_row(*line)
                line = []
        if line:
            t.add_row(*line)
        parts.append(t)
        if balancing:
            parts.append(Text(f"Balancing (~): cells {', '.join(map(str, sorted(balancing)))}"))
        elif reading.balancing is not None:
            parts.append(Text("Balancing: none", style="dim"))
    if reading.temps_c:
        parts.append(
            Text("Temperatures: " + ", ".join(f"T{i} {t:.0f} °C" for i, t in enumerate(reading.temps_c, 1)))
        )
    if reading.faults is not None:
        if reading.faults:
            for name in reading.faults:
                style = "bold red" if name in ALARM_FAULTS else "yellow"
                parts.append(Text(f"Fault: {fault_text(name)} ({name})", style=style))
        else:
            parts.append(Text("Faults: none", style="green"))
        if reading.fault_code:
            parts.append(Text(f"Fault code: {reading.fault_code}", style="red"))
    for cmd, why in (reading.errors or {}).items():
        parts.append(Text(f"Missing {cmd}: {why}", style="yellow"))
    if stats:
        parts.append(
            Text(
                f"link: {stats['frames_good']} good / {stats['frames_bad']} bad frames, "
                f"{stats['retries']} retries, {stats['timeouts']} timeouts",
                style="dim",
            )
        )
    return Group(*parts)


@app.command()
def read(
    port: str = typer.Argument(..., help=PORT_HELP),
    json_out: bool = typer.Option(False, "--json", help="print the reading as JSON (Sample field names)"),
    family: str = FAMILY_OPT,
    address: str | None = ADDRESS_OPT,
    board: int = BOARD_OPT,
    invert_current: bool = INVERT_OPT,
    baud: int = BAUD_OPT,
    retries: int = RETRIES_OPT,
    turnaround: float = TURNAROUND_OPT,
) -> None:
    """One full reading of a Daly BMS: pack, cells, temperatures, MOSFETs, balancing, faults.

    Exit status 1 when the BMS did not answer or the reading is partial (what failed is shown).
    """

    async def go() -> tuple[Reading, dict[str, Any]]:
        bms = await _connect(port, address, board, invert_current, baud, retries, turnaround, family)
        try:
            return await bms.snapshot(), bms.stats.as_dict()
        finally:
            await bms.aclose()

    reading, stats = _run(go())
    if json_out:
        typer.echo(reading.model_dump_json(exclude_none=True))
    else:
        from rich.console import Console

        console = Console()
        console.print(reading_table(reading, stats, console.width))
    if reading.errors:
        raise typer.Exit(EXIT_BMS)


@app.command()
def watch(
    port: str = typer.Argument(..., help=PORT_HELP),
    interval_s: float = typer.Option(1.0, "--interval", min=0.0, help="seconds between readings"),
    family: str = FAMILY_OPT,
    address: str | None = ADDRESS_OPT,
    board: int = BOARD_OPT,
    invert_current: bool = INVERT_OPT,
    baud: int = BAUD_OPT,
    retries: int = RETRIES_OPT,
    turnaround: float = TURNAROUND_OPT,
) -> None:
    """Live view of a Daly BMS, refreshing until Ctrl-C."""
    import asyncio

    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from trackingbms.bms import BmsError

    console = Console()

    async def go() -> None:
        bms = await _connect(port, address, board, invert_current, baud, retries, turnaround, family)

        async def once() -> Any:
            try:
                reading = await bms.snapshot()
                return reading_table(reading, bms.stats.as_dict(), console.width)
            except BmsError as exc:  # keep watching: a sleeping BMS may wake up
                return Text(f"{exc}  (retrying)", style="yellow")

        try:
            if not console.is_terminal:  # piped: one table per reading, flushed as it comes
                while True:
                    console.print(await once())
                    sys.stdout.flush()
                    await asyncio.sleep(interval_s)
            with Live(Text(f"reading {port} …"), console=console, auto_refresh=False) as live:
                while True:
                    live.update(await once(), refresh=True)
                    await asyncio.sleep(interval_s)
        finally:
            await bms.aclose()

    try:
        _run(go())
    except KeyboardInterrupt:
        typer.echo("stopped")


def _on_off(value: str | None, name: str) -> bool | None:
    if value is None:
        return None
    v = value.lower()
    if v in ("on", "1", "true", "yes"):
        return True
    if v in ("off", "0", "false", "no"):
        return False
    raise typer.BadParameter(f"{name} must be on or off, got {value!r}")


@app.command("set")
def set_cmd(
    port: str = typer.Argument(..., help=PORT_HELP),
    charge_mos: str | None = typer.Option(None, "--charge-mos", help="on|off"),
    discharge_mos: str | None = typer.Option(None, "--discharge-mos", help="on|off"),
    soc: float | None = typer.Option(None, "--soc", min=0.0, max=100.0, help="set the BMS's SOC, %"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
    family: str = FAMILY_OPT,
    address: str | None = ADDRESS_OPT,
    board: int = BOARD_OPT,
    baud: int = BAUD_OPT,
    retries: int = RETRIES_OPT,
    turnaround: float = TURNAROUND_OPT,
) -> None:
    """Guarded writes: switch the charge / discharge MOSFET, set the SOC; shows the state read back."""
    chg = _on_off(charge_mos, "--charge-mos")
    dis = _on_off(discharge_mos, "--discharge-mos")
    if chg is None and dis is None and soc is None:
        raise _err("nothing to set: give --charge-mos, --discharge-mos and/or --soc", EXIT_USAGE)
    from trackingbms.bms.writes import describe, guarded_write

    plan = describe(chg, dis, soc)
    if not yes and not typer.confirm(f"Set {', '.join(plan)} on {port}?", default=False):
        raise _err("cancelled, nothing written", EXIT_BMS)

    async def go() -> WriteResult:
        bms = await _connect(port, address, board, False, baud, retries, turnaround, family)
        try:
            return await guarded_write(bms, charge_mos=chg, discharge_mos=dis, soc_pct=soc)
        finally:
            await bms.aclose()

    result = _run(go())
    from rich.console import Console

    console = Console()
    console.print(reading_table(result.reading, None, console.width))
    if result.failed:
        raise _err("; ".join(result.failed))


@app.command()
def decode(
    hex_input: list[str] = typer.Argument(
        ..., metavar="HEX...", help="frames as hex (spaced or not), or - for stdin"
    ),
    cells: int | None = typer.Option(None, "--cells", min=1, max=48, help="cell count for 0x95 replies"),
    sensors: int | None = typer.Option(
        None, "--sensors", min=1, max=16, help="sensor count for 0x96 replies"
    ),
    invert_current: bool = INVERT_OPT,
    start: str | None = typer.Option(
        None,
        "--start",
        help="D2 / 0x81 read replies: the register the read started at (a reply does not carry it); "
        "default: from the request before it in the input, else 0x0000",
    ),
) -> None:
    """Decode captured frames: A5, D2 and 0x81 (Modbus-style), and CAN frames in candump form
    (18904001#0214..., one per argument or line); one JSON object per frame or response (Sample field
    names). D2 / 0x81: paste the request and the reply together, or give --start."""
    import json

    from trackingbms.daly.modbus_stream import decode_modbus, looks_modbus
    from trackingbms.daly.stream import HexError, decode_hex_stream, parse_hex

    text = sys.stdin.read() if hex_input == ["-"] else "\n".join(hex_input)
    if "#" in text or "[" in text:
        _decode_candump(text, cells, sensors, invert_current)
        return
    try:
        data = parse_hex(text)
    except HexError as exc:
        raise _err(f"byte offset {exc.offset}: {exc}", EXIT_USAGE) from None
    if not data:
        raise _err("no bytes to decode", EXIT_USAGE)
    start_reg = None
    if start is not None:
        try:
            start_reg = int(start, 0)
        except ValueError:
            raise _err(
                f"--start {start!r} is not a register number (e.g. 0x0080 or 128)", EXIT_USAGE
            ) from None
        if not 0 <= start_reg <= 0xFFFF:
            raise _err("--start must be a register number 0–0xFFFF", EXIT_USAGE)
    if start_reg is not None or looks_modbus(data):
        mobjects, mproblems = decode_modbus(data, start=start_reg, invert_current=invert_current)
        for obj in mobjects:
            typer.echo(json.dumps(obj))
        for p in mproblems:
            typer.echo(f"error: {p}", err=True)
        if mproblems or not mobjects:
            if not mobjects:
                typer.echo("error: no D2 / 0x81 frame with a good CRC found in the input", err=True)
            raise typer.Exit(EXIT_USAGE)
        return
    objects, problems = decode_hex_stream(data, cells=cells, sensors=sensors, invert_current=invert_current)
    for obj in objects:
        typer.echo(json.dumps(obj))
    for p in problems:
        typer.echo(f"error: {p}", err=True)
    if problems or not objects:
        if not problems:
            typer.echo("error: no A5 frame found in the input", err=True)
        raise typer.Exit(EXIT_USAGE)


def _decode_candump(text: str, cells: int | None, sensors: int | None, invert_current: bool) -> None:
    """CAN frames in candump form: legacy Daly replies decode as their A5 frames (multi-frame replies
    grouped, 0x94 sizing what follows), requests and H/K/M/S broadcasts are named."""
    import json

    from trackingbms.daly import can as dcan
    from trackingbms.daly.stream import decode_hex_stream

    try:
        frames = dcan.parse_candump(text)
    except dcan.CanError as exc:
        raise _err(str(exc), EXIT_USAGE) from None
    if not frames:
        raise _err("no CAN frame to decode", EXIT_USAGE)
    problems = 0
    pending: list[bytes] = []  # legacy replies, as A5 frames, decoded together (bursts, counts)

    def flush() -> None:
        nonlocal problems
        if not pending:
            return
        objects, issues = decode_hex_stream(
            b"".join(pending), cells=cells, sensors=sensors, invert_current=invert_current
        )
        for obj in objects:
            obj.pop("board", None)
            typer.echo(json.dumps({"wire": "can", **obj}))
        for issue in issues:
            problems += 1
            typer.echo(f"error: {issue.reason}", err=True)
        pending.clear()

    for frame in frames:
        info = dcan.describe(frame)
        a5 = dcan.to_a5(frame)
        if a5 is not None and info.get("direction") == "response":
            pending.append(a5.to_bytes())
            continue
        flush()
        if info.get("direction") == "request" or info.get("kind") == "hkms-keepalive":
            typer.echo(json.dumps({"wire": "can", **info}))
        elif info.get("kind") == "hkms-broadcast":
            typer.echo(json.dumps({"wire": "can", **info, **dcan.hkms_fields(frame)}))
        else:
            problems += 1
            typer.echo(
                f"error: {frame.candump()}: not a Daly CAN frame (legacy 0x18xxxxxx or H/K/M/S)", err=True
            )
    flush()
    if problems:
        raise typer.Exit(EXIT_USAGE)


@app.command()
def probe(
    port: str = typer.Argument(..., help=PORT_HELP),
    json_out: bool = typer.Option(False, "--json", help="one JSON object per BMS found"),
    baud: int = BAUD_OPT,
    turnaround: float = typer.Option(0.15, "--turnaround", min=0.0, help="seconds each probe waits"),
) -> None:
    """List every BMS that answers on a wire: family, address / board, cells, firmware.

    Probes A5 at host 0x40 and 0x80 (and boards 2–16), D2 at 0xD2 and 0x81 boards 1–16, one at a time.
    Exit status 1 when nothing answers."""
    import json

    from trackingbms.bms.probe import Found

    async def go() -> list[Found]:
        from trackingbms.bms.probe import probe as run_probe
        from trackingbms.links import open_link

        link = await open_link(port, baud=baud)
        try:
            return await run_probe(link, baud=baud, turnaround_s=turnaround)
        finally:
            await link.close()

    found = _run(go())
    for f in found:
        if json_out:
            typer.echo(json.dumps(f.as_dict()))
        else:
            extra = f", {f.cells} cells" if f.cells is not None else ""
            extra += f", firmware {f.firmware}" if f.firmware else ""
            typer.echo(f"{f.family:4} board {f.board:2} at {f.address}{extra}")
    if not found:
        from trackingbms.links import link_scheme

        tried = (
            "A5-CAN boards 1–16, H/K/M/S broadcasts"
            if link_scheme(port) == "can"
            else "A5 at 0x40/0x80, D2, 0x81 boards 1–16"
        )
        raise _err(f"no BMS answered on {port} ({tried} tried)")
