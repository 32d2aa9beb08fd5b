"""design.md's layers for the wires: links know nothing of Daly, the CAN codec stays sans-I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import trackingbms

SRC = Path(trackingbms.__file__).parent
BMS_MAY = ("trackingbms.bms", "trackingbms.daly", "trackingbms.links", "trackingbms.model")
RULES = {
    # module: (allowed trackingbms packages, forbidden top-level modules)
    "links/can.py": (("trackingbms.links",), ()),
    "links/ble.py": (("trackingbms.links",), ()),
    "daly/can.py": (("trackingbms.daly", "trackingbms.model"), ("asyncio", "socket", "can", "time")),
    "sim/can.py": (("trackingbms.daly", "trackingbms.model", "trackingbms.sim"), ()),
    "sim/ble.py": (("trackingbms.daly", "trackingbms.model", "trackingbms.sim"), ()),
    "bms/a5_can.py": (("trackingbms.bms", "trackingbms.daly", "trackingbms.links", "trackingbms.model"), ()),
    "bms/hkms_can.py": (
        ("trackingbms.bms", "trackingbms.daly", "trackingbms.links", "trackingbms.model"),
        (),
    ),
}


def imports(path: Path) -> list[str]:
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def test_wire_modules_import_only_downward() -> None:
    bad = []
    for rel, (allowed, forbidden) in RULES.items():
        for name in imports(SRC / rel):
            if name.startswith("trackingbms.") and not name.startswith(allowed):
                bad.append(f"{rel}: {name}")
            if name.split(".")[0] in forbidden:
                bad.append(f"{rel}: {name} (sans-I/O)")
    assert not bad, bad
