"""The ``trackingbms`` command line: thin commands over the library layers.

Each module registers its commands on :data:`trackingbms.cli.app.app`.
"""

from __future__ import annotations

from trackingbms.cli import (  # noqa: F401  (registration)
    admin_data,
    analyze,
    bms_commands,
    demo,
    gateway,
    server,
    simulate,
    worker,
)
from trackingbms.cli.app import app


def main() -> None:
    app()
