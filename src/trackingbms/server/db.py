"""Schema (SQLAlchemy Core), engine creation for SQLite / PostgreSQL, and migrations at start.

A *stream* is one (device, battery) pair, so the idempotency key (device, battery_id, seq) is
``(stream_id, seq)`` with small integers. A stream's samples are unique by ``seq`` and by ``ts_ms``: a
re-sent sample (same seq and ts) is a duplicate; a different sample with a seq or a ts already stored for the
stream is refused (store/ingest.py).
Recent samples live in ``sample_segments``: one row per (stream, batch), the batch's samples of the stream
in ts order with their seq / ts arrays and packed rows (:mod:`trackingbms.server.store.segments`; ``data``
rows are the blobs of :mod:`trackingbms.server.store.packing`). Past the hot window compaction moves them
into compressed ``sample_blocks`` (store/cold.py). The segments table is not partitioned on PostgreSQL
(the per-sample table was, by month): it holds about an hour, which compaction keeps emptying.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from trackingbms.analytics.cells import SERIES
from trackingbms.model import MEASUREMENT_FIELDS

metadata = MetaData()

tenants = Table(
    "tenants",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("retention_days", Integer, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    #: home region (trackingbms.server.regions); NULL: the region of the deployment holding this database
    Column("region", String(40), nullable=True),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=False, index=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(300), nullable=False),
    Column("role", String(16), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

user_tokens = Table(
    "user_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

#: personal access tokens for integrations (migration 0004; repository: store/api_tokens.py)
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=False),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("scope", String(16), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("last_used_ms", BigInteger, nullable=True),
    Column("revoked_ms", BigInteger, nullable=True),
    Index("ix_api_tokens_tenant_user", "tenant_id", "user_id"),
)

sites = Table(
    "sites",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=False),
    Column("name", String(200), nullable=False),
    UniqueConstraint("tenant_id", "name"),
)

devices = Table(
    "devices",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("last_contact_ms", BigInteger, nullable=True),
    Column("heartbeat_ms", BigInteger, nullable=True),
    Column("heartbeat", Text, nullable=True),
    Column("config", Text, nullable=True),
    Column("config_version", Integer, nullable=False, default=0),
    Column("reported_config_version", Integer, nullable=True),
    UniqueConstraint("tenant_id", "name"),
)

device_tokens = Table(
    "device_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", Integer, ForeignKey("devices.id"), nullable=False, index=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

batteries = Table(
    "batteries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=False),
    Column("site_id", Integer, ForeignKey("sites.id"), nullable=False),
    Column("device_id", Integer, ForeignKey("devices.id"), nullable=True),
    Column("battery_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("poll_interval_s", Float, nullable=False, default=5.0),
    Column("cell_count", Integer, nullable=False, default=0),
    Column("temp_count", Integer, nullable=False, default=0),
    # the newest sample (by ts) and when samples last arrived, kept at ingest so the fleet view is one query
    Column("last_seq", BigInteger, nullable=True),
    Column("last_ts_ms", BigInteger, nullable=True),
    Column("last_data", LargeBinary, nullable=True),
    Column("last_received_ms", BigInteger, nullable=True),  # arrival time: connectivity needs it
    Column("received_ts_ms", BigInteger, nullable=True),  # ts of the newest sample of the last batch
    # the profile its admin sets (migration 0011): chemistry (lfp | nmc | lto) picks the built-in
    # cell-voltage thresholds and the engine's OCV curve, rated capacity is what SOH is measured against;
    # profile_ms: when either last changed (the alarm service's rule fingerprint includes it)
    Column("chemistry", String(8), nullable=True),
    Column("rated_capacity_ah", Float, nullable=True),
    Column("profile_ms", BigInteger, nullable=True),
    UniqueConstraint("tenant_id", "battery_id"),
)

#: the measurement fields of the last known state, with their column types (lists are JSON text)
STATE_FIELDS: tuple[tuple[str, Any], ...] = (
    ("voltage_v", Float),
    ("current_a", Float),
    ("soc_pct", Float),
    ("remaining_ah", Float),
    ("cycles", Integer),
    ("state", String(16)),
    ("charge_mos", Boolean),
    ("discharge_mos", Boolean),
    ("charger_connected", Boolean),
    ("load_connected", Boolean),
    ("cells_mv", Text),
    ("temps_c", Text),
    ("balancing", Text),
    ("faults", Text),
    ("fault_code", Integer),
)
# The columns of battery_state (changing them takes a migration), so they stay spelled out with their types
# rather than derived from the model; a field added to the model without its column fails here, at import.
if tuple(name for name, _ in STATE_FIELDS) != MEASUREMENT_FIELDS:
    raise ImportError("db.STATE_FIELDS does not match trackingbms.model.MEASUREMENT_FIELDS")
#: the fields of STATE_FIELDS stored as JSON text
STATE_JSON_FIELDS = frozenset(("cells_mv", "temps_c", "balancing", "faults"))


def state_columns() -> list[Column]:
    """Per field its last known value and the ts (ms) of the sample it came from."""
    cols: list[Column] = []
    for name, type_ in STATE_FIELDS:
        cols.append(Column(name, type_, nullable=True))
        cols.append(Column(f"{name}_ts", BigInteger, nullable=True))
    return cols


#: per battery the last known value of each measurement field (gateways poll field groups on their own
#: cadences, so most samples are partial); merged at ingest field by field, only forward in ts
battery_state = Table(
    "battery_state",
    metadata,
    Column("battery_id", Integer, ForeignKey("batteries.id"), primary_key=True),
    *state_columns(),
)

#: failed logins per key ("account:<email>", "address:<host>") when several processes share PostgreSQL
#: (trackingbms.server.pg_throttle); times are epoch seconds
login_throttle = Table(
    "login_throttle",
    metadata,
    Column("key", String(400), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("locked_until", Float, nullable=False),
    Column("last_failure", Float, nullable=False),
)

#: per-device token buckets shared by the API processes on one PostgreSQL database
#: (trackingbms.server.ratelimit.PgTokenBuckets); key "<limiter>:<device id>", times in epoch seconds
rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Column("granted", Boolean, nullable=False),  # the last decision, for RETURNING (see ratelimit.py)
)

streams = Table(
    "streams",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", Integer, ForeignKey("devices.id"), nullable=False),
    Column("battery_id", Integer, ForeignKey("batteries.id"), nullable=False, index=True),
    # the newest ts held in a compressed block of this stream (None: none yet): a sample at or before it
    # may be a re-send of a compacted one, so ingest checks the blocks for it (migration 0009_blocks)
    Column("cold_ts_ms", BigInteger, nullable=True),
    UniqueConstraint("device_id", "battery_id"),
)

#: per series in the 1-minute rollup: count, min, max, sum (partial samples make counts differ)
ROLLUP_SERIES: tuple[str, ...] = SERIES  # in the order packing computes them (migrations keep a frozen copy)
ROLLUP_PARTS: tuple[str, ...] = ("n", "min", "max", "sum")


def rollup_columns() -> list[Column]:
    return [
        Column(f"{name}_{part}", Integer if part == "n" else Float, nullable=True)
        for name in ROLLUP_SERIES
        for part in ROLLUP_PARTS
    ]


#: one row per stream and minute, kept at ingest from the rows actually inserted (re-sends never count twice)
rollup_1m = Table(
    "rollup_1m",
    metadata,
    Column("stream_id", Integer, primary_key=True),
    Column("bucket_ms", BigInteger, primary_key=True),
    *rollup_columns(),
    sqlite_with_rowid=False,  # since migration 0007
)

#: one row per stream and hour, kept at ingest beside the minute rows (migration 0007): long spans read these
rollup_1h = Table(
    "rollup_1h",
    metadata,
    Column("stream_id", Integer, primary_key=True),
    Column("bucket_ms", BigInteger, primary_key=True),
    *rollup_columns(),
    sqlite_with_rowid=False,
)

#: a tenant's alarm rule settings: tenant-wide (no site, no battery), per site or per battery; each non-null
#: field overrides the level below (built-in → tenant → site → battery). ``rule_id`` names a built-in rule
#: (``fault:<name>`` for a fault bit) or the tenant's own rule (then ``metric`` is required).
alarm_rules = Table(
    "alarm_rules",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=False, index=True),
    Column("site_id", Integer, ForeignKey("sites.id"), nullable=True),
    Column("battery_pk", Integer, ForeignKey("batteries.id"), nullable=True),
    Column("rule_id", String(100), nullable=False),
    Column("metric", String(100), nullable=True),
    Column("op", String(1), nullable=True),
    Column("set_value", Float, nullable=True),
    Column("clear_value", Float, nullable=True),
    Column("set_delay_s", Float, nullable=True),
    Column("clear_delay_s", Float, nullable=True),
    Column("severity", String(16), nullable=True),
    Column("repeat_s", Float, nullable=True),
    Column("notify_on_clear", Boolean, nullable=True),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("title", String(200), nullable=True),
    Column("updated_ms", BigInteger, nullable=False),
)

#: alarms, active and past: one active (raised / acknowledged) per (battery, rule), enforced by the index
alarms = Table(
    "alarms",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=False),
    Column("battery_pk", Integer, ForeignKey("batteries.id"), nullable=False),
    Column("rule_id", String(100), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # raised | acknowledged | cleared
    Column("active", Boolean, nullable=False),
    Column("cell", Integer, nullable=True),
    Column("value", Float, nullable=True),
    Column("message", Text, nullable=False),
    Column("raised_ms", BigInteger, nullable=False),
    Column("acked_ms", BigInteger, nullable=True),
    Column("acked_by", String(320), nullable=True),
    Column("cleared_ms", BigInteger, nullable=True),
    Column("clear_message", Text, nullable=True),
    Index("alarms_tenant_raised", "tenant_id", "raised_ms"),
    Index(
        "alarms_one_active",
        "battery_pk",
        "rule_id",
        unique=True,
        sqlite_where=text("active"),
        postgresql_where=text("active"),
    ),
)

#: per battery the analytics engine's and the alarm evaluators' saved state, and the last health report
battery_analytics = Table(
    "battery_analytics",
    metadata,
    Column("battery_pk", Integer, ForeignKey("batteries.id"), primary_key=True),
    Column("t_last_ms", BigInteger, nullable=True),  # newest sample fed (older ones are skipped)
    Column("state", Text, nullable=True),  # JSON: estimator, evaluators, resistance baseline
    Column("health", Text, nullable=True),  # JSON: BatteryEstimator.health()
    Column("updated_ms", BigInteger, nullable=False),
)

#: where a tenant's alarm messages go: an apprise URL and the severities it wants
notify_targets = Table(
    "notify_targets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("tenant_id", Integer, ForeignKey("tenants.id"), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("severities", String(64), nullable=False),  # comma-separated: info,warning,critical
    Column("recovery", Boolean, nullable=False, default=True),  # send "cleared" messages
    Column("created_ms", BigInteger, nullable=False),
)

#: recent samples, one row per (stream, batch): seq / ts ranges, count and payload (store/segments.py).
#: (stream_id, ts_min) finds the segments of a time range (a segment spans < SEGMENT_MAX_SPAN_MS);
#: (stream_id, seq_max) and (stream_id, ts_max) find, per batch, the few segments a re-send overlaps (in
#: the normal case, seqs and ts newer than everything stored, two empty index ranges). A rowid table on
#: SQLite (rows are big)
sample_segments = Table(
    "sample_segments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("stream_id", Integer, nullable=False),
    Column("seq_min", BigInteger, nullable=False),
    Column("seq_max", BigInteger, nullable=False),
    Column("ts_min", BigInteger, nullable=False),
    Column("ts_max", BigInteger, nullable=False),
    Column("n", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Index("sample_segments_stream_ts", "stream_id", "ts_min", unique=True),
    Index("sample_segments_stream_seq_max", "stream_id", "seq_max"),
    Index("sample_segments_stream_ts_max", "stream_id", "ts_max"),
    # ids never reused (SQLite would hand out max(id) + 1 again once compaction emptied the table's end):
    # the alarm feed reads new segments by id (server/alarm_feed.py, migration 0013)
    sqlite_autoincrement=True,
)

#: a lease one process at a time holds (``alarm-feed``: the process that runs the alarm service for the
#: database), with what it must resume from when another process takes it over
service_leases = Table(
    "service_leases",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("holder", String(80), nullable=True),
    Column("expires_ms", BigInteger, nullable=False),
    # bumped whenever a different process takes the lease: a holder that sees it move lost its state
    Column("epoch", BigInteger, nullable=False),
    Column("cursor", BigInteger, nullable=True),  # the alarm feed: every segment id <= it was evaluated
)

#: samples older than the hot window, compressed per stream (store/blocks.py, store/cold.py): one row per run
#: of consecutive samples; a block spans at most ``BLOCK_MAX_SPAN_MS`` so that a time range finds its blocks
#: by ``ts_min`` alone. A rowid table on SQLite (rows are big: WITHOUT ROWID suits small rows only)
sample_blocks = Table(
    "sample_blocks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("stream_id", Integer, nullable=False),
    Column("ts_min", BigInteger, nullable=False),
    Column("ts_max", BigInteger, nullable=False),
    Column("n", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Index("sample_blocks_stream_ts", "stream_id", "ts_min", unique=True),
)

#: the integers 0..BUCKET_NUMBERS_MAX (migration 0010): a tally that history on SQLite joins its rollup rows
#: to, so that SQLite folds them per bucket in the order it reads them instead of sorting them first
#: (store/history.py); PostgreSQL groups by hash and does not read it
BUCKET_NUMBERS_MAX = 5000
bucket_numbers = Table(
    "bucket_numbers", metadata, Column("k", Integer, primary_key=True, autoincrement=False)
)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def default_sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{Path(data_dir).expanduser().resolve() / 'trackingbms.db'}"


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` / ``sqlite:///`` URLs and pick the async drivers."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.split("://", 1)[1]
    return url


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, *, pool_size: int = 8) -> AsyncEngine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before we acknowledge the batch (WAL keeps it one fsync per batch)
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_async_engine(url, pool_size=pool_size, max_overflow=4, pool_pre_ping=False)


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest migration (Alembic), on either backend."""
    from alembic import command
    from sqlalchemy.exc import OperationalError

    def run(sync_conn: Any) -> None:
        command.upgrade(_alembic_config(sync_conn), "head")

    for attempt in range(5):
        try:
            async with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    # several servers starting at once against one database: one migrates, the others wait
                    await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7350001)")
                await conn.run_sync(run)
            return
        except OperationalError:
            # SQLite: another process migrated the same file at the same moment; look again
            if not is_sqlite(engine) or attempt == 4:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))


def migrate_url(url: str) -> None:
    """Synchronous entry point for ``trackingbms server migrate``."""

    async def main() -> None:
        engine = make_engine(url)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    asyncio.run(main())


def describe_url(url: str) -> str:
    """Which database a URL names, for a person: ``SQLite /path/x.db`` or
    ``PostgreSQL db "x" on host:5432 as user`` (never the password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(normalize_url(url))
    except ArgumentError:
        return "an unreadable database URL"
    if u.get_backend_name() == "sqlite":
        return f"SQLite {u.database or ':memory:'}"
    who = f" as {u.username}" if u.username else ""
    kind = {"postgresql": "PostgreSQL", "mysql": "MySQL"}.get(u.get_backend_name(), u.get_backend_name())
    return f'{kind} db "{u.database}" on {u.host or "localhost"}:{u.port or 5432}{who}'


#: what to do about a missing driver, by the module Python could not import
_DRIVERS = {"asyncpg": "asyncpg", "psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary"}


def explain_database_error(exc: BaseException, url: str) -> str | None:
    """One or two lines saying what is wrong with the database at ``url`` and what to do, for the usual
    first-day mistakes (no such database, server not running, wrong password, driver missing, bad URL);
    None for anything else (a real bug: let its traceback through)."""
    import asyncpg
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    where = describe_url(url)
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for e in chain:
        if isinstance(e, asyncpg.InvalidCatalogNameError):
            from sqlalchemy.engine import make_url

            db = make_url(normalize_url(url)).database
            return (
                f"error: {where}: the database does not exist.\n"
                f'Create it first, e.g. `createdb -h HOST -U USER {db}` or `CREATE DATABASE "{db}";` in psql.'
            )
        if isinstance(e, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
            return f"error: {where}: the login was refused ({e}).\nCheck the user and password in the URL."
        if isinstance(e, ConnectionRefusedError):
            return (
                f"error: {where}: connection refused: is PostgreSQL running there?\n"
                "Start it (e.g. `systemctl start postgresql`) or fix the host / port in the URL."
            )
        if isinstance(e, OSError) and e.__class__.__name__ == "gaierror":
            return f"error: {where}: unknown host ({e.strerror or e}). Fix the host in the URL."
        if isinstance(e, TimeoutError):
            return f"error: {where}: no answer from the database server (timed out). Check the host and port."
        if isinstance(e, ModuleNotFoundError):
            pkg = _DRIVERS.get((e.name or "").split(".")[0], e.name)
            return (
                f"error: the driver for this database URL is not installed (no module {e.name!r}).\n"
                f"Install it (`pip install {pkg}`) or use postgresql+asyncpg:// or sqlite+aiosqlite://."
            )
        if isinstance(e, NoSuchModuleError | ArgumentError):
            return (
                f"error: {e}.\nA database URL looks like sqlite+aiosqlite:///path/to/file.db or "
                "postgresql+asyncpg://user@host:5432/db."
            )
        file_error = isinstance(e, FileNotFoundError | PermissionError | IsADirectoryError)
        if file_error and where.startswith("SQLite"):
            return f"error: {where}: cannot create or open the file ({e.strerror or e}). Check the path."
    if "sqlite" in url and any("unable to open database file" in str(x) for x in chain):
        return f"error: {where}: cannot open the database file. Check that its folder exists and is writable."
    return None


async def check_database(url: str) -> None:
    """Connect once and run ``SELECT 1``: raises what a connection would raise."""
    from sqlalchemy import text

    engine = make_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
