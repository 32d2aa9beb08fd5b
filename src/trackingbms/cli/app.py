"""The Typer application every command module registers on. Heavy imports stay inside commands.

Command modules are imported lazily: :class:`LazyGroup` knows which module registers each
top-level command and imports it only when that command is resolved (run, or listed by
``--help``), so ``trackingbms decode …`` loads ``bms_commands`` alone and never pays for the
server's, demo's or worker's modules. Typer has no lazy loading of its own, hence this subclass.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

# top-level command -> the cli modules that register it (and, for groups, its subcommands)
LAZY_COMMANDS: dict[str, tuple[str, ...]] = {
    "read": ("bms_commands",),
    "watch": ("bms_commands",),
    "set": ("bms_commands",),
    "decode": ("bms_commands",),
    "probe": ("bms_commands",),
    "simulate": ("simulate",),
    "gateway": ("gateway",),
    "server": ("server",),
    "admin": ("server", "admin_data", "worker"),
    "ingest-worker": ("worker",),
    "analyze": ("analyze",),
    "demo": ("demo",),
    "direct": ("direct",),
}
ALL_MODULES: tuple[str, ...] = tuple(dict.fromkeys(m for mods in LAZY_COMMANDS.values() for m in mods))


def load_commands(modules: tuple[str, ...] = ALL_MODULES) -> None:
    """Import the given cli modules so their commands are registered on :data:`app`."""
    for module in modules:
        importlib.import_module(f"trackingbms.cli.{module}")


class LazyGroup(TyperGroup):
    """Root group resolving each command on first use, importing only the module that defines it."""

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        names = list(self.commands)
        return names + [n for n in LAZY_COMMANDS if n not in self.commands]

    def get_command(self, ctx: typer.Context, cmd_name: str) -> typer.core.click.Command | None:  # type: ignore[override,name-defined]
        # an unknown name loads everything so the "did you mean" suggestion sees all commands
        wanted = LAZY_COMMANDS.get(cmd_name, () if cmd_name in self.commands else ALL_MODULES)
        missing = tuple(m for m in wanted if f"trackingbms.cli.{m}" not in sys.modules)
        if missing:
            load_commands(missing)
            # rebuilt so a group ("admin") gets the subcommands every one of its modules adds
            self.commands.update(typer.main.get_group(app).commands)
        return self.commands.get(cmd_name)


app = typer.Typer(
    name="trackingbms",
    help="Track fleets of Daly BMS battery packs: read a BMS, simulate packs, run a gateway, a server, "
    "a demo.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    cls=LazyGroup,
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
