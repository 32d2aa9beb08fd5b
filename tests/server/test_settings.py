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
