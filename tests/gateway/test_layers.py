"""The gateway takes its command table from the client (import rules of all layers: tests/test_layers.py)."""

from __future__ import annotations

from trackingbms.bms import COMMANDS
from trackingbms.gateway.config import SLOW_COMMANDS
from trackingbms.gateway.poller import COMMAND_IDS


def test_command_table_comes_from_the_client() -> None:
    assert set(COMMAND_IDS) == set(COMMANDS)
    assert set(SLOW_COMMANDS) == set(COMMANDS) - {"pack"}
    assert COMMAND_IDS["cells"] == "0x95"  # the key a failed command has in Reading.errors
