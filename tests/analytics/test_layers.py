"""design.md's layers: analytics is pure and imports only trackingbms.model (and itself)."""

from __future__ import annotations

import ast
from pathlib import Path

import trackingbms.analytics

ALLOWED = ("trackingbms.analytics", "trackingbms.model")
NO_IO = ("socket", "asyncio", "sqlalchemy", "httpx", "os", "pathlib", "time")


def test_analytics_imports_only_model_and_no_io() -> None:
    bad = []
    for path in Path(trackingbms.analytics.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.startswith("trackingbms.") and not name.startswith(ALLOWED):
                    bad.append(f"{path.name}: {name}")
                if name.split(".")[0] in NO_IO:
                    bad.append(f"{path.name}: {name} (I/O or clock)")
    assert not bad, bad
