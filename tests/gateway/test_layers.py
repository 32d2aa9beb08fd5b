"""Cadence groups come from the BMS interface (import rules of all layers: tests/test_layers.py)."""

from __future__ import annotations

from trackingbms.bms import GROUPS
from trackingbms.gateway.config import SLOW_COMMANDS


def test_cadence_groups_come_from_the_bms_interface() -> None:
    assert set(SLOW_COMMANDS) == set(GROUPS) - {"pack"}
