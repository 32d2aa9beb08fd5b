"""Commands: bms_commands (to be written)."""

from trackingbms.cli.app import app  # noqa: F401
