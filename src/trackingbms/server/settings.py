"""Server settings: environment (``TRACKINGBMS_*``), an optional TOML file, then explicit overrides."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    port: int = Field(default=8000, ge=0, le=65535)
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
    #: evaluate alarm rules and the analytics engine on stored samples (off: storage only). Of the processes
    #: with it on (API servers, ingest workers) one at a time evaluates every sample stored in the database,
    #: whichever process stored it: the holder of the alarm-feed lease (docs/alarms.md)
    alarms_enabled: bool = True
    #: the alarm-feed lease: its holder renews it every third of this; when the holder dies another
    #: process takes over after it (at once when the holder stops normally)
    alarm_lease_s: float = Field(default=10.0, ge=1)
    #: how often the no-data rules run, analytics findings are evaluated and analytics state is saved
    alarm_interval_s: float = Field(default=30.0, gt=0)
    #: how often a process looks for rule edits made by another process (API server or ingest worker)
    rules_check_s: float = Field(default=5.0, gt=0)
    #: alarm transitions are held this long and sent as one message per target (a burst is one message)
    notify_group_s: float = Field(default=5.0, ge=0)

    #: the origins of gateway-served apps allowed to call the API from the browser (CORS): the phone relay
    #: and server mode from a gateway's LAN page (docs/security.md). Exact origins (``http://10.0.0.7:8081``)
    #: or with ``*`` standing for one host label (``http://192.168.1.*:8081``, ``http://*.boat.lan:8081``);
    #: in the environment, comma-separated. Empty (the default): no cross-origin calls at all.
    relay_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("relay_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in (part.strip() for part in value.split(",")) if v]
        if isinstance(value, list):
            for origin in value:
                origin_pattern(origin)  # a clear error at start, naming the entry
        return value

    #: regions (docs/scaling.md): this deployment's region name, its public URL (where another region sends
    #: this region's devices and users), the region's NATS cluster (comma-separated URLs; also carries the
    #: live feed between API processes and shared nothing else) and the other regions whose part of the
    #: tenant directory this region sources (comma-separated names, the JetStream domains of their NATS)
    region: str | None = None
    public_url: str | None = None
    nats_url: str | None = None
    region_peers: str = ""
    #: cluster mode: POST /api/v1/ingest hands batches to JetStream (nats_url) and answers with the ingest
    #: worker's reply, 503 if none comes within the timeout (trackingbms.server.handoff)
    ingest_via_jetstream: bool = False
    ingest_jetstream_timeout_s: float = Field(default=10.0, gt=0)
    #: how often the tenant directory is re-published from the database (tenant moves, new users)
    directory_sync_s: float = Field(default=30.0, gt=0)

    @field_validator("region")
    @classmethod
    def _region_name(cls, v: str | None) -> str | None:
        from trackingbms.server.regions import check_region

        return check_region(v) if v else None

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


_ORIGIN = re.compile(r"^(https?)://([A-Za-z0-9*.-]+|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?$")


def origin_pattern(origin: str) -> re.Pattern[str]:
    """The regular expression an allowed origin entry stands for; ValueError naming the entry if it is not
    ``scheme://host[:port]`` (no path, no trailing slash) or its ``*`` is not a whole host label."""
    m = _ORIGIN.match(origin)
    if m is None:
        raise ValueError(
            f"{origin!r} is not an origin like http://192.168.1.20:8081 (scheme, host, port; no path)"
        )
    scheme, host, port = m.groups()
    labels = host.split(".")
    if any("*" in label and label != "*" for label in labels) or labels == ["*"]:
        raise ValueError(
            f"{origin!r}: '*' may only stand for one whole host label among others "
            "(http://192.168.1.*:8081), never for the whole host"
        )
    host_re = r"\.".join("[A-Za-z0-9-]+" if label == "*" else re.escape(label) for label in labels)
    return re.compile(f"{scheme}://{host_re}" + (f":{port}" if port else ""))
