"""Command: ``trackingbms direct ble://<address or name>`` — a gateway's Bluetooth service from a laptop.

Live readings, the stored history by seq, and the configuration commands (uplink URL, Wi-Fi, poll interval)
that need the gateway's pairing code (docs/ble.md). The connection is :mod:`trackingbms.gateway.ble.central`.
"""

from __future__ import annotations

import typer

from trackingbms.cli.app import app


@app.command("direct")
def direct_command(
    target: str = typer.Argument(
        ...,
        help="ble://TrackingBMS-<device> or ble://<address>; add ?hci=usb:0 to use a USB dongle through "
        "bumble instead of the system's Bluetooth (bleak)",
    ),
    history: bool = typer.Option(False, "--history", help="print the stored samples (sent or not) and exit"),
    from_seq: int = typer.Option(0, "--from-seq", help="with --history: start at this seq"),
    battery: str = typer.Option(None, "--battery", help="only this battery (default: every one)"),
    count: int = typer.Option(0, "--count", help="live: stop after this many readings (default: Ctrl-C)"),
    info: bool = typer.Option(
        False, "--info", help="print the gateway's facts (batteries, uplinks) and exit"
    ),
    as_json: bool = typer.Option(
        False, "--json", help="one JSON object per reading (the Sample's field names)"
    ),
    set_uplink: str = typer.Option(None, "--set-uplink", help="point an uplink at this server URL"),
    uplink: str = typer.Option("", "--uplink", help="with --set-uplink: which uplink (default: the first)"),
    set_wifi: str = typer.Option(None, "--set-wifi", help="join this Wi-Fi network (SSID)"),
    wifi_psk: str = typer.Option("", "--wifi-psk", help="with --set-wifi: the network's password"),
    set_poll: float = typer.Option(None, "--set-poll", help="poll interval in seconds (with --battery: one)"),
    pairing_code: str = typer.Option(
        "", "--pairing-code", envvar="TBMS_PAIRING_CODE", help="the gateway's pairing code (for --set-*)"
    ),
    timeout_s: float = typer.Option(15.0, "--timeout", help="seconds to find and connect to the gateway"),
) -> None:
    """Talk to a gateway over Bluetooth: live readings, history by seq, configuration (pairing code)."""
    import asyncio

    from trackingbms.gateway.ble.central import DirectError

    if not target.startswith("ble://"):
        typer.echo(
            f"error: {target!r}: direct takes ble://<address or name>; a gateway on the LAN is "
            "http://<gateway>:8081/ in a browser",
            err=True,
        )
        raise typer.Exit(2)
    try:
        asyncio.run(
            _run(
                target,
                history=history,
                from_seq=from_seq,
                battery=battery,
                count=count,
                info=info,
                as_json=as_json,
                set_uplink=set_uplink,
                uplink=uplink,
                set_wifi=set_wifi,
                wifi_psk=wifi_psk,
                set_poll=set_poll,
                pairing_code=pairing_code,
                timeout_s=timeout_s,
            )
        )
    except DirectError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


async def _run(target: str, **o: object) -> None:
    from trackingbms.gateway.ble import codec
    from trackingbms.gateway.ble.central import DirectError, connect
    from trackingbms.links import LinkError
    from trackingbms.links.ble import parse_ble_url

    try:
        address, options = parse_ble_url(target)
    except LinkError as exc:
        raise DirectError(str(exc)) from None
    timeout_s = float(options.get("timeout", o["timeout_s"]))  # type: ignore[arg-type]
    session = await connect(address, hci=options.get("hci"), timeout_s=timeout_s)
    try:
        gw = await session.info()
        batteries = [str(o["battery"])] if o["battery"] else session.battery_ids
        for bid in batteries:
            session.index_of(bid)  # an unknown id is a clear error before anything else
        configure = [o["set_uplink"], o["set_wifi"], o["set_poll"]]
        if any(v is not None for v in configure):
            code = str(o["pairing_code"])
            if not code:
                raise DirectError(
                    "configuration needs the pairing code: --pairing-code CODE (shown in the gateway's app)"
                )
            if o["set_uplink"] is not None:
                await session.checked(
                    codec.CMD_SET_UPLINK, {"name": o["uplink"], "url": o["set_uplink"]}, pairing_code=code
                )
                typer.echo(f"uplink {o['uplink'] or gw['uplinks'][0]['name']} now {o['set_uplink']}")
            if o["set_wifi"] is not None:
                await session.checked(
                    codec.CMD_SET_WIFI, {"ssid": o["set_wifi"], "psk": o["wifi_psk"]}, pairing_code=code
                )
                typer.echo(f"Wi-Fi set to {o['set_wifi']}")
            if o["set_poll"] is not None:
                every_s = float(o["set_poll"])  # type: ignore[arg-type]
                index = session.index_of(str(o["battery"])) if o["battery"] else codec.ALL_BATTERIES
                await session.checked(
                    codec.CMD_SET_POLL,
                    {"battery": index, "interval_ms": round(every_s * 1000)},
                    pairing_code=code,
                )
                typer.echo(f"poll interval of {', '.join(batteries)} now {every_s:g} s")
            return
        if o["info"]:
            _print_info(gw, bool(o["as_json"]))
            return
        if o["history"]:
            for bid in batteries:
                async for page in session.history(bid, from_seq=int(o["from_seq"])):  # type: ignore[call-overload]
                    for sample in page:
                        _print_sample(sample, bool(o["as_json"]))
            return
        if not o["as_json"]:
            _print_info(gw, False)
        seen = 0
        async for sample in session.live():
            if sample["battery_id"] not in batteries:
                continue
            _print_sample(sample, bool(o["as_json"]))
            seen += 1
            if o["count"] and seen >= int(o["count"]):  # type: ignore[call-overload]
                return
    finally:
        await session.close()


def _print_info(gw: dict[str, object], as_json: bool) -> None:
    import json

    if as_json:
        typer.echo(json.dumps(gw))
        return
    uplinks = ", ".join(f"{u['name']}={u['url']}" for u in gw["uplinks"])  # type: ignore[attr-defined]
    typer.echo(
        f"gateway {gw['device']} (TrackingBMS {gw['version']}): uplink {gw['uplink']} · "
        f"{gw['queue_depth']} samples queued · uplinks {uplinks}"
    )
    for b in gw["batteries"]:  # type: ignore[attr-defined]
        typer.echo(
            f"  {b['battery_id']}: link {b['link_state']}, every {b['poll_interval_s']:g} s, "
            f"seq {b['oldest_seq']}…{max(0, b['next_seq'] - 1)} stored"
        )


def _print_sample(s: dict[str, object], as_json: bool) -> None:
    import json

    if as_json:
        typer.echo(json.dumps(s))
        return
    parts = [f"{s['battery_id']}", f"seq {s['seq']}", str(s["ts"])]
    for key, unit, digits in (("voltage_v", "V", 2), ("current_a", "A", 1), ("soc_pct", "%", 1)):
        if s.get(key) is not None:
            parts.append(f"{s[key]:.{digits}f} {unit}")
    cells = s.get("cells_mv")
    if cells:
        parts.append(f"cells {min(cells)}–{max(cells)} mV")  # type: ignore[type-var]
    temps = s.get("temps_c")
    if temps:
        parts.append("/".join(f"{t:.0f}" for t in temps) + " °C")  # type: ignore[attr-defined]
    if s.get("faults"):
        parts.append("faults " + ", ".join(s["faults"]))  # type: ignore[arg-type]
    if s.get("errors"):
        parts.append(f"partial {s['errors']}")
    typer.echo("  ".join(parts))
