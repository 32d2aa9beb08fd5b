"""The ``trackingbms`` command line: thin commands over the library layers.

Each module registers its commands on :data:`trackingbms.cli.app.app`; the root group imports a
command's module only when that command is used (see :mod:`trackingbms.cli.app`), so
``trackingbms decode …`` starts without the server's dependencies.
"""

from __future__ import annotations

from trackingbms.cli.app import app, load_commands

__all__ = ["app", "load_commands", "main"]


def main() -> None:
    app()
