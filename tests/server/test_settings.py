"""Settings precedence: explicit options beat the environment, which beats the TOML file."""

from __future__ import annotations

from pathlib import Path

import pytest

from trackingbms.server.settings import Settings


def test_file_then_environment_then_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "server.toml"
    cfg.write_text('[server]\nport = 9000\nonline_grace_s = 3\ndatabase_url = "postgresql://db/x"\n')
    monkeypatch.delenv("TRACKINGBMS_DATABASE_URL", raising=False)
    monkeypatch.delenv("TRACKINGBMS_PORT", raising=False)
    s = Settings.load(cfg)
    assert (s.port, s.online_grace_s) == (9000, 3.0)
    assert s.resolved_database_url() == "postgresql+asyncpg://db/x"
    monkeypatch.setenv("TRACKINGBMS_PORT", "9100")
    assert Settings.load(cfg).port == 9100
    assert Settings.load(cfg, port=9200, host=None).port == 9200


def test_default_database_is_sqlite_in_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRACKINGBMS_DATABASE_URL", raising=False)
    url = Settings.load(None, data_dir=tmp_path).resolved_database_url()
    assert url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'trackingbms.db'}"


def test_negative_ingest_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="ingest_rate_per_s"):
        Settings(ingest_rate_per_s=-1)
    with pytest.raises(ValueError, match="ingest_burst"):
        Settings(ingest_burst=-1)
    assert Settings(ingest_rate_per_s=0, ingest_burst=0).ingest_burst == 0  # 0: no limit


def test_relay_origins_from_the_environment_file_and_their_mistakes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKINGBMS_RELAY_ORIGINS", " http://192.168.1.*:8081 , http://gw.boat.lan:8081,")
    assert Settings.load(None).relay_origins == ["http://192.168.1.*:8081", "http://gw.boat.lan:8081"]
    monkeypatch.delenv("TRACKINGBMS_RELAY_ORIGINS")
    cfg = tmp_path / "server.toml"
    cfg.write_text('relay_origins = ["http://[fd00::7]:8081"]\n')
    assert Settings.load(cfg).relay_origins == ["http://[fd00::7]:8081"]
    assert Settings().relay_origins == []  # the default: no cross-origin calls
    for bad, says in (
        ("http://*:8081", "never for the whole host"),
        ("http://gw*.lan:8081", "one whole host label"),
        ("http://gw.lan:8081/", "no path"),
        ("ftp://gw.lan", "is not an origin"),
    ):
        with pytest.raises(ValueError, match=says):
            Settings(relay_origins=bad)


def test_the_server_names_a_bad_setting_in_a_line_not_a_traceback(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRACKINGBMS_RELAY_ORIGINS": "http://*:8081", "TRACKINGBMS_DATA_DIR": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-c", "from trackingbms.cli import main; main()", "server", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "invalid setting relay_origins (TRACKINGBMS_RELAY_ORIGINS): 'http://*:8081': '*' may only stand for "
        "one whole host label among others (http://192.168.1.*:8081), never for the whole host"
    ]
