"""The CLI imports lazily: a BMS command never loads the server's stack (start-up time, issue 14).

Asserted on ``sys.modules`` in a fresh interpreter, not on time (the machine is shared).
"""

from __future__ import annotations

import importlib
import json
import socket
import subprocess
import sys

import pytest

HEAVY = ("fastapi", "sqlalchemy", "numpy", "uvicorn", "asyncpg", "alembic", "starlette")

PROBE = """
import json, sys
from trackingbms.cli import main
try:
    main()
except SystemExit as e:
    code = e.code
else:
    code = 0
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def run_cli(*args: str) -> tuple[str, int, set[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return proc.stdout, report["code"], set(report["modules"])


def heavy_loaded(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_import_of_cli_loads_no_command_module_nor_server_stack() -> None:
    code = "import json, sys, trackingbms.cli; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    modules = set(json.loads(out))
    assert heavy_loaded(modules) == []
    assert "asyncio" not in modules
    assert not [m for m in modules if m.startswith("trackingbms.cli.") and m != "trackingbms.cli.app"]


def test_decode_loads_only_the_bms_commands() -> None:
    out, code, modules = run_cli("decode", "a5", "01 90 08 02 3a 00 00 75 30 01 ed 0d")
    assert code == 0
    assert json.loads(out.splitlines()[0])["voltage_v"] == 57.0
    assert heavy_loaded(modules) == []
    assert "trackingbms.cli.server" not in modules and "trackingbms.server" not in modules
    assert "trackingbms.cli.demo" not in modules and "trackingbms.gateway" not in modules
    # decoding needs the codecs, not the model (pydantic) nor the BMS clients
    assert "trackingbms.model" not in modules and "trackingbms.bms" not in modules


#: what ``read`` must not load before the BMS answers: pydantic comes with the first reading built, rich with
#: the table printed (together ~120 ms of imports, issue 14)
NOT_BEFORE_THE_FIRST_REPLY = ("pydantic", "pydantic_core", "annotated_types", "rich", "trackingbms.sample")


def test_read_reaches_the_bms_without_pydantic_nor_rich() -> None:
    with (
        socket.socket() as s
    ):  # a port nobody listens on: read fails fast at the connect, as a BMS that is off
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, code, modules = run_cli("read", f"tcp://127.0.0.1:{port}")
    assert code == 1
    assert "trackingbms.bms.a5" in modules and "asyncio" in modules  # the probe saw a real read's imports
    assert heavy_loaded(modules) == []
    loaded = sorted(m for m in modules if m.startswith(NOT_BEFORE_THE_FIRST_REPLY))
    assert loaded == [], f"imported before the BMS answered (import them where they are used): {loaded}"


def test_the_model_resolves_the_pydantic_models_on_first_use() -> None:
    code = """
import json, sys
import trackingbms.model as model
before = "pydantic" in sys.modules
from trackingbms.model import Reading, Sample
import trackingbms.sample as sample
try:
    model.nope
except AttributeError as exc:
    missing = str(exc)
print(json.dumps({"before": before, "same": [Reading is sample.Reading, Sample is sample.Sample],
                  "subclass": issubclass(Sample, Reading), "missing": missing}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == {
        "before": False,
        "same": [True, True],
        "subclass": True,
        "missing": "module 'trackingbms.model' has no attribute 'nope'",
    }


def test_typer_does_not_coerce_through_pydantic() -> None:
    """Typer 0.29 validates every parameter with pydantic (+90 ms per command): pinned below it."""
    _, code, modules = run_cli("decode", "a5", "01 90 08 02 3a 00 00 75 30 01 ed 0d")
    assert code == 0
    assert "pydantic" not in modules


def test_the_daly_package_names_resolve_lazily() -> None:
    import trackingbms.daly as daly

    assert sorted(daly.__all__) == sorted(daly._EXPORTS)
    for name in daly.__all__:
        module = importlib.import_module(f"trackingbms.daly.{daly._EXPORTS[name]}")
        assert getattr(daly, name) is getattr(module, name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        daly.nope  # noqa: B018


@pytest.mark.parametrize("args", [("read", "--help"), ("--help",)])
def test_help_lists_every_command_without_the_server_stack(args: tuple[str, ...]) -> None:
    out, code, modules = run_cli(*args)
    assert code == 0
    assert heavy_loaded(modules) == []
    if args == ("--help",):
        for command in ("read", "decode", "simulate", "gateway", "server", "admin", "ingest-worker", "demo"):
            assert f" {command} " in out
        assert "asyncio" not in modules


def test_admin_group_has_the_commands_of_every_module_that_adds_to_it() -> None:
    # server.py, admin_data.py and worker.py each add to "admin": all must show, whatever loaded first
    out, code, _ = run_cli("admin", "--help")
    assert code == 0
    for command in ("create-tenant", "backup", "create-api-token", "mqtt-worker"):
        assert command in out


def test_misspelt_command_is_a_clear_error_with_a_suggestion() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from trackingbms.cli import main; main()", "decod"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "No such command 'decod'" in proc.stderr and "decode" in proc.stderr.split("Did you mean")[1]
    assert "Traceback" not in proc.stderr


def test_every_command_module_and_command_is_in_the_lazy_map() -> None:
    # a module or command missing from LAZY_COMMANDS would silently vanish from the CLI
    code = """
import json, pkgutil, typer, trackingbms.cli as cli
from trackingbms.cli.app import ALL_MODULES, LAZY_COMMANDS, app, load_commands
mods = sorted(m.name for m in pkgutil.iter_modules(cli.__path__) if m.name != "app")
load_commands()
names = sorted(typer.main.get_group(app).commands)
print(json.dumps({"mods": mods, "all": sorted(ALL_MODULES), "names": names, "lazy": sorted(LAZY_COMMANDS)}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    r = json.loads(out)
    assert r["mods"] == r["all"]
    assert sorted(set(r["names"]) - {"version"}) == r["lazy"]
