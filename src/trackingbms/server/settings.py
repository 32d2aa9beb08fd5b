"""Server settings: environment (``TRACKINGBMS_*``), an optional TOML file, then explicit overrides."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from trackingbms.server.db import default_sqlite_url, normalize_url


class Settings(BaseSettings):
    """Everything the server can be told. ``TRACKINGBMS_DATABASE_URL`` picks the backend."""

    model_config = SettingsConfigDict(env_prefix="TRACKINGBMS_", extra="ignore")

    data_dir: Path = Field(default=Path("./trackingbms-data"), description="where the SQLite file lives")
    database_url: str | None = Field(
        default=None,
        description="sqlite+aiosqlite:///… or postgresql+asyncpg://…; default: SQLite in data_dir",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    migrate_on_start: bool = True
    #: ingest limits (design.md): samples per batch, body size before and after gzip
    max_batch_samples: int = 5000
    max_body_bytes: int = 8 * 1024 * 1024
    max_decoded_bytes: int = 32 * 1024 * 1024
    #: every other request body (login, heartbeat, config: JSON of a few KB), checked before parsing
    max_request_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_login_body_bytes: int = Field(default=4 * 1024, ge=256)
    #: the request line and headers together, and how many headers (refused with 431 before parsing ends)
    max_header_bytes: int = Field(default=32 * 1024, ge=4096)
    max_header_count: int = Field(default=100, ge=16)
    #: failed logins (docs/security.md): after this many in a row for an account / a client address, each
    #: further failure locks it for base × 2^k seconds, up to the max (429 + Retry-After meanwhile)
    login_free_failures_account: int = Field(default=5, ge=1)
    login_free_failures_address: int = Field(default=20, ge=1)
    login_base_delay_s: float = Field(default=1.0, gt=0)
    login_max_delay_s: float = Field(default=900.0, gt=0)
    #: password hashes (scrypt) computed at once, and logins allowed to wait for one (then 429)
    login_hash_concurrency: int = Field(default=2, ge=1)
    login_hash_queue: int = Field(default=32, ge=0)
    #: how often an open live WebSocket re-checks its token (revoked elsewhere, expired)
    live_token_recheck_s: float = Field(default=30.0, gt=0)
    #: samples further than this in the future are rejected (a wrong gateway clock)
    max_clock_skew_s: float = Field(default=300.0, ge=0)
    #: per-device token bucket on ingest requests (heartbeats have their own bucket of the same size);
    #: 0 (either) = no limit
    ingest_rate_per_s: float = Field(default=20.0, ge=0)
    ingest_burst: int = Field(default=40, ge=0)
    #: connectivity (design.md): offline after this long without heartbeat or sample
    offline_timeout_s: float = 300.0
    #: slack added to 3 poll intervals before a battery stops being "online" (gateways upload in batches)
    online_grace_s: float = 15.0
    default_poll_interval_s: float = 5.0
    session_ttl_s: float = 7 * 24 * 3600
    #: GET /metrics needs `Authorization: Bearer <metrics_token>`; unset: loopback clients only
    metrics_token: str | None = None
    #: how often raw samples past a tenant's retention are deleted (0: never, e.g. a cron job does it)
    retention_interval_s: float = 3600.0
    #: how often samples older than the hot window are compacted into compressed blocks (0: never, e.g. a
    #: cron job runs `trackingbms server compact`)
    compact_interval_s: float = Field(default=600.0, ge=0)
    #: samples newer than this stay plain rows (live views, re-sends, recent history); see store/cold.py
    compact_hot_window_s: float = Field(default=3600.0, ge=60)
    #: 1-minute rollups older than this many days are deleted by the same pass (0: kept); history over
    #: older ranges then answers in whole hours. About 3 bytes per 1 Hz sample; the hour rollups 1/60 of that
    rollup_1m_retention_days: float = Field(default=0.0, ge=0)
    #: 1-hour rollups older than this many days are deleted by the same pass (0: kept)
    rollup_1h_retention_days: float = Field(default=0.0, ge=0)
    #: evaluate alarm rules and the analytics engine on ingested samples (off: storage only)
    alarms_enabled: bool = True
    #: how often the no-data rules run, analytics findings are evaluated and analytics state is saved
    alarm_interval_s: float = Field(default=30.0, gt=0)
    #: alarm transitions are held this long and sent as one message per target (a burst is one message)
    notify_group_s: float = Field(default=5.0, ge=0)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalize_url(self.database_url)
        return default_sqlite_url(self.data_dir)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Settings from a TOML file (keys as the field names, optionally under ``[server]``), then the
        environment, then ``overrides`` (None values ignored): explicit beats environment beats file."""
        file_values: dict[str, Any] = {}
        if config_file is not None:
            raw = tomllib.loads(Path(config_file).read_text())
            file_values = raw.get("server", raw)
        env = cls()
        merged = {**file_values}
        for name in cls.model_fields:
            if name in env.model_fields_set:
                merged[name] = getattr(env, name)
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(merged) if merged else env
