"""Command: ``trackingbms gateway -c gateway.toml`` (the transmitter agent)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from trackingbms.cli.app import app

if TYPE_CHECKING:
    from trackingbms.gateway.config import GatewayConfig


@app.command("gateway")
def gateway_command(
    config: Path = typer.Option(None, "--config", "-c", help="gateway TOML file (see --example-config)"),
    example_config: bool = typer.Option(
        False, "--example-config", help="print a commented example config and exit"
    ),
    log_level: str = typer.Option(
        None, "--log-level", help="override log_level: debug, info, warning, error"
    ),
    replay_dead_letters: bool = typer.Option(
        False,
        "--replay-dead-letters",
        help="move the samples the server rejected (dead letters) back to the queue and exit; "
        "they are sent on the next start (the gateway must be stopped)",
    ),
) -> None:
    """Run the gateway: poll BMSs, queue samples durably, send them to the server, serve the LAN API."""
    from trackingbms.gateway.config import EXAMPLE_CONFIG, ConfigError, GatewayConfig

    if example_config:
        typer.echo(EXAMPLE_CONFIG, nl=False)
        raise typer.Exit(0)
    if config is None:
        typer.echo("error: --config / -c gateway.toml is required (try --example-config)", err=True)
        raise typer.Exit(2)
    try:
        cfg = GatewayConfig.from_toml(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if replay_dead_letters:
        _replay_dead_letters(cfg)
        raise typer.Exit(0)

    import asyncio
    import logging
    import signal
    import sys

    # Memory budget (< 50 MB RSS with 4 packs, bench/gateway.py): httpx imports its command-line client
    # (rich, pygments: about 6 MB) whenever rich is installed, and httpcore imports trio (about 4 MB) whenever
    # it is installed, only to learn which event loop it runs on. This process uses neither: it runs asyncio
    # and has no httpx CLI. A None entry makes those optional imports fail the way they do where the packages
    # are absent, which both libraries handle.
    for unused in ("httpx._main", "trio"):
        sys.modules.setdefault(unused, None)  # type: ignore[arg-type]

    level = (log_level or cfg.log_level).upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)

    from trackingbms.gateway import run_gateway
    from trackingbms.gateway.queue import StateDirBusy

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_gateway(cfg, stop=stop)

    try:
        asyncio.run(main())
    except (OSError, StateDirBusy, ConfigError) as exc:  # port taken, state dir not writable, extra missing
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _replay_dead_letters(cfg: GatewayConfig) -> None:
    from trackingbms.gateway.queue import DurableQueue, StateDirBusy

    try:
        queue = DurableQueue(cfg.state_dir, disk_budget_mb=cfg.disk_budget_mb)
    except StateDirBusy as exc:  # a running gateway owns the queue: replaying under it would race
        typer.echo(f"error: {exc}; stop it first", err=True)
        raise typer.Exit(1) from None
    try:
        n = queue.replay_dead_letters()
    finally:
        queue.close()
    typer.echo(f"{n} dead-letter samples moved back to the queue in {cfg.state_dir}; sent on the next start")
