"""The Typer application every command module registers on. Heavy imports stay inside commands."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    name="trackingbms",
    help="Track fleets of Daly BMS battery packs: read a BMS, simulate packs, run a gateway, a server, "
    "a demo.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the TrackingBMS version."""
    from trackingbms import __version__

    typer.echo(__version__)


def _print_version(value: bool) -> None:
    if value:
        from trackingbms import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    _version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Track fleets of Daly BMS battery packs: read a BMS, simulate packs, run a gateway, a server, a demo."""
