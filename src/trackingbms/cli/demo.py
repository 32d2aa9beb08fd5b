"""Commands: demo (to be written)."""

from trackingbms.cli.app import app  # noqa: F401
