"""design.md's layers: the gateway may import only trackingbms.bms and trackingbms.model (and itself)."""

from __future__ import annotations

import ast
from pathlib import Path

import trackingbms.gateway
from trackingbms.bms import GROUPS
from trackingbms.gateway.config import SLOW_COMMANDS

ALLOWED = ("trackingbms.gateway", "trackingbms.bms", "trackingbms.model")


def test_gateway_imports_only_bms_and_model() -> None:
    bad = []
    for path in Path(trackingbms.gateway.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.startswith("trackingbms.") and not name.startswith(ALLOWED):
                    bad.append(f"{path.name}: {name}")
    assert not bad, bad


def test_cadence_groups_come_from_the_bms_interface() -> None:
    assert set(SLOW_COMMANDS) == set(GROUPS) - {"pack"}
