"""design.md's layers: imports point down only. Every module of every package is parsed (no import is run),
including imports inside functions, relative imports and ``importlib.import_module("trackingbms.…")``.

The table below is design.md's "Layers" table; a package missing from it (cli, demo) may import anything,
but no layer may import it unless the table says so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import trackingbms

SRC = Path(trackingbms.__file__).parent

#: package → the other trackingbms packages it may import (itself is always allowed)
MAY_IMPORT: dict[str, set[str]] = {
    "daly": {"model"},
    "links": set(),
    "bms": {"daly", "links", "model"},
    # model.py and sample.py are one layer: sample.py holds the pydantic Reading / Sample that model.py
    # resolves on first use (so that importing model does not import pydantic, issue 14)
    "model": {"sample"},
    "sample": {"model"},
    "sim": {"daly", "model"},
    "gateway": {"bms", "model", "webapp"},
    "server": {"analytics", "model", "webapp"},
    "webapp": set(),  # the web app's static files, served by both the server and the gateway
    "analytics": {"model"},
}


def imported(path: Path, root: Path = SRC) -> list[tuple[int, str]]:
    """(line, absolute module name) of every trackingbms import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ["trackingbms", *path.relative_to(root).parent.parts]  # what a relative import starts from
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
                # "from . import gateway" names submodules too
                out += [(node.lineno, f"{name}.{a.name}") for a in node.names] if not node.module else []
                out.append((node.lineno, name))
            elif node.module == "trackingbms":  # "from trackingbms import gateway" imports a layer
                out += [(node.lineno, f"trackingbms.{a.name}") for a in node.names]
            elif node.module:
                out.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) == "import_module"
        ):
            out.append((node.lineno, node.args[0].value))
    return [(line, name) for line, name in out if name == "trackingbms" or name.startswith("trackingbms.")]


def violations(package: str, root: Path = SRC) -> list[str]:
    allowed = MAY_IMPORT[package] | {package}
    module = root / f"{package}.py"
    files = [module] if module.is_file() else sorted((root / package).rglob("*.py"))
    bad = []
    for path in files:
        for line, name in imported(path, root):
            parts = name.split(".")
            if len(parts) < 2:
                continue  # the root package holds only __version__
            target = parts[1]
            if target not in allowed and ((SRC / target).exists() or (SRC / f"{target}.py").exists()):
                bad.append(f"{path.relative_to(root)}:{line}: {package} imports {name}")
    return bad


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_imports_point_down_only(package: str) -> None:
    assert (SRC / package).is_dir() or (SRC / f"{package}.py").is_file(), (
        f"{package} is gone: update the table"
    )
    bad = violations(package)
    assert not bad, "imports against design.md's layers:\n" + "\n".join(bad)


def test_the_server_never_imports_daly_bms_or_gateway() -> None:
    """The promise README and design.md make in so many words, checked on its own."""
    names = {name for path in (SRC / "server").rglob("*.py") for _, name in imported(path)}
    assert names, "no trackingbms import found in the server: the scan is broken"
    for forbidden in ("daly", "bms", "gateway", "links", "sim"):
        assert not any(n.startswith(f"trackingbms.{forbidden}") for n in names), forbidden


def test_the_scan_sees_every_kind_of_import(tmp_path: Path) -> None:
    """A checker that finds nothing would pass everything: show it catches each form."""
    (tmp_path / "server" / "sub").mkdir(parents=True)
    (tmp_path / "server" / "sub" / "probe.py").write_text(
        "import trackingbms.gateway.queue\n"
        "from trackingbms.daly import a5\n"
        "from trackingbms import __version__, links\n"
        "def f():\n"
        "    from ...bms import DalyBMS\n"
        "    from .. import store\n"
        "    import importlib\n"
        "    importlib.import_module('trackingbms.sim')\n"
    )
    bad = violations("server", root=tmp_path)
    found = {line.split(" imports ")[1] for line in bad}
    assert found == {
        "trackingbms.gateway.queue",
        "trackingbms.daly",
        "trackingbms.bms",
        "trackingbms.sim",
        "trackingbms.links",
    }
