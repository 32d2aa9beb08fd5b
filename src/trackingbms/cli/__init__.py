"""The ``trackingbms`` command line: thin commands over the library layers.

Each module registers its commands on :data:`trackingbms.cli.app.app`.
"""

from __future__ import annotations

from trackingbms.cli import analyze, bms_commands, demo, gateway, server, simulate  # noqa: F401  (registration)
from trackingbms.cli.app import app


def main() -> None:
    app()
