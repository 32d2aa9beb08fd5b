"""The collection server application: ``create_app(Settings)`` → FastAPI app (run it with uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from trackingbms import __version__
from trackingbms.server import security
from trackingbms.server.alarms import AlarmService
from trackingbms.server.db import describe_url, make_engine, migrate
from trackingbms.server.guard import Guard
from trackingbms.server.hub import Hub, LiveSessions
from trackingbms.server.ingest import IngestService
from trackingbms.server.notify import Notifier
from trackingbms.server.ratelimit import TokenBuckets
from trackingbms.server.regions import Misdirected
from trackingbms.server.security import PasswordChecker
from trackingbms.server.settings import Settings
from trackingbms.server.store import Conflict, NotFound, Store
from trackingbms.server.throttle import MemoryLoginThrottle, ThrottlePolicy

log = logging.getLogger("trackingbms.server")

__all__ = ["Settings", "create_app"]


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: easy to ship to a log store."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k in ("device", "tenant", "accepted", "duplicates", "rejected"):
            if hasattr(record, k):
                out[k] = getattr(record, k)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger("trackingbms")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


#: a query parameter whose name ends in "token", up to the next separator
_TOKEN_IN_QUERY = re.compile(r"([?&][^=&\s\"]*token=)[^&#\s\"]*", re.IGNORECASE)
#: uvicorn writes request lines (HTTP to .access, WebSocket handshakes to .error) with the query string
_REQUEST_LOGGERS = ("uvicorn.access", "uvicorn.error")


def redact_tokens(text: str) -> str:
    return _TOKEN_IN_QUERY.sub(r"\1[redacted]", text)


class RedactTokens(logging.Filter):
    """Blank ``token=…`` values in log lines: the live WebSocket takes its access token in the query
    string (browsers cannot set headers on it), and a token in a log file is a stolen session."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and "token=" in record.msg.lower():
            record.msg = redact_tokens(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_tokens(a) if isinstance(a, str) and "token=" in a.lower() else a for a in record.args
            )
        return True


def install_log_redaction() -> None:
    """Put :class:`RedactTokens` on uvicorn's request loggers, once (logging config keeps filters)."""
    for name in _REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


async def _retention_loop(store: Store, every_s: float) -> None:
    while True:
        try:
            deleted = await store.apply_retention()
            if deleted:
                log.info("retention: deleted %d raw samples and rollup rows", deleted)
        except Exception:  # a failed pass is retried next time; the server keeps serving
            log.exception("retention pass failed")
        await asyncio.sleep(every_s)


async def _compact_loop(store: Store, every_s: float, hot_window_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)  # not at start: a restart should not compete with catching-up gateways
        try:
            await store.compact(hot_window_ms=int(hot_window_s * 1000))
        except Exception:  # a failed pass changes nothing (one transaction per block); retried next time
            log.exception("compaction pass failed")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    install_log_redaction()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_log_redaction()  # idempotent: covers a logging setup that reset filters after create_app
        # computed now, so that the first login with an unknown email costs no more than any other
        await asyncio.to_thread(security.dummy_hash)
        url = settings.resolved_database_url()
        engine = make_engine(url)
        if settings.migrate_on_start:
            await migrate(engine)
        app.state.store = Store(
            engine,
            default_poll_interval_s=settings.default_poll_interval_s,
            offline_timeout_s=settings.offline_timeout_s,
            online_grace_s=settings.online_grace_s,
            session_ttl_s=settings.session_ttl_s,
            rollup_1m_retention_days=settings.rollup_1m_retention_days,
            rollup_1h_retention_days=settings.rollup_1h_retention_days,
        )
        notifier = Notifier(app.state.store, group_s=settings.notify_group_s)
        app.state.alarms = AlarmService(
            app.state.store,
            interval_s=settings.alarm_interval_s,
            notifier=notifier,
            rules_check_s=settings.rules_check_s,
            lease_ttl_s=settings.alarm_lease_s,
        )
        if settings.alarms_enabled:
            app.state.alarms.start()
        app.state.ingest = IngestService(
            app.state.store,
            app.state.hub,
            max_future_ms=int(settings.max_clock_skew_s * 1000),
            metrics=app.state.metrics,
            alarms=app.state.alarms if settings.alarms_enabled else None,
        )
        relays: list[Any] = []
        if settings.nats_url:  # API processes and NATS ingest workers meet on tbms.live.<tenant>
            from trackingbms.server.live import NatsRelay

            relays.append(NatsRelay(settings.nats_url, app.state.hub))
        if not app.state.store.sqlite:  # other API processes and ingest workers may share this database
            from trackingbms.server.live import PgRelay

            # with NATS, only listen: MQTT (Mosquitto) workers still NOTIFY; this process sends on NATS
            relays.append(PgRelay(engine, app.state.hub, send=not settings.nats_url))
            from trackingbms.server.pg_throttle import PgLoginThrottle
            from trackingbms.server.ratelimit import PgTokenBuckets

            # failed logins and device request budgets counted by any process hold in every process
            app.state.login_throttle = PgLoginThrottle(engine, app.state.login_throttle.policies)
            app.state.limiter = PgTokenBuckets(
                engine, "ingest", settings.ingest_rate_per_s, settings.ingest_burst
            )
            app.state.heartbeat_limiter = PgTokenBuckets(
                engine, "heartbeat", settings.ingest_rate_per_s, settings.ingest_burst
            )
        for relay in relays:
            await relay.start()
        if settings.ingest_via_jetstream and settings.nats_url:
            from trackingbms.server.handoff import JetStreamIngest

            app.state.handoff = JetStreamIngest(settings.nats_url, settings.ingest_jetstream_timeout_s)
            await app.state.handoff.start()
        elif settings.ingest_via_jetstream:
            log.warning(
                "ingest_via_jetstream needs nats_url (TRACKINGBMS_NATS_URL): storing batches directly"
            )
        if settings.region:
            from trackingbms.server.regions import Directory, RegionRouter

            directory = None
            if settings.nats_url:
                peers = [p.strip() for p in settings.region_peers.split(",") if p.strip()]
                directory = Directory(settings.nats_url, settings.region, peers)
            app.state.regions = RegionRouter(
                app.state.store,
                settings.region,
                settings.public_url,
                directory,
                sync_s=settings.directory_sync_s,
            )
            await app.state.regions.start()
        log.info("server ready on %s", describe_url(url))
        retention = None
        if settings.retention_interval_s > 0:
            retention = asyncio.create_task(_retention_loop(app.state.store, settings.retention_interval_s))
        compaction = None
        if settings.compact_interval_s > 0:
            compaction = asyncio.create_task(
                _compact_loop(app.state.store, settings.compact_interval_s, settings.compact_hot_window_s)
            )
        try:
            yield
        finally:
            if compaction is not None:
                compaction.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await compaction
            if retention is not None:
                retention.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retention
            await app.state.alarms.stop()
            if app.state.regions is not None:
                await app.state.regions.stop()
            if app.state.handoff is not None:
                await app.state.handoff.stop()
            for relay in relays:
                await relay.stop()
            # uvicorn has let in-flight requests finish (their commits are done) before we get here
            await engine.dispose()
            log.info("server stopped")

    app = FastAPI(
        title="TrackingBMS server",
        version=__version__,
        description="Collection server for Daly BMS fleets: device ingest, tenancy, fleet reads, export, "
        "live feed. Contract in docs/api.md.",
        lifespan=lifespan,
        docs_url=None,  # served by trackingbms.server.web without a CDN (and under the CSP)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.hub = Hub()
    #: trackingbms.server.regions.RegionRouter when this deployment names its region
    app.state.regions = None
    #: trackingbms.server.handoff.JetStreamIngest in cluster mode (ingest_via_jetstream)
    app.state.handoff = None
    app.state.limiter = TokenBuckets(settings.ingest_rate_per_s, settings.ingest_burst)
    app.state.heartbeat_limiter = TokenBuckets(settings.ingest_rate_per_s, settings.ingest_burst)
    app.state.live_sessions = LiveSessions()
    app.state.login_throttle = MemoryLoginThrottle(
        {
            key: ThrottlePolicy(free, settings.login_base_delay_s, settings.login_max_delay_s)
            for key, free in (
                ("account", settings.login_free_failures_account),
                ("address", settings.login_free_failures_address),
            )
        }
    )
    app.state.password_checker = PasswordChecker(settings.login_hash_concurrency, settings.login_hash_queue)

    def body_limit(_method: str, path: str) -> int | None:
        if path in ("/api/v1/ingest", "/api/v1/relay"):
            return None  # streamed and bounded by the route (before and after gzip)
        if path == "/api/v1/auth/login":
            return settings.max_login_body_bytes
        return settings.max_request_body_bytes

    app.add_middleware(Guard, body_limit=body_limit)
    if settings.relay_origins:
        # outermost, so that refusals (413, 429) carry the CORS headers too and the app can show them
        from starlette.middleware.cors import CORSMiddleware

        from trackingbms.server.settings import origin_pattern

        app.add_middleware(
            CORSMiddleware,
            allow_origin_regex="|".join(f"(?:{origin_pattern(o).pattern})" for o in settings.relay_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Content-Encoding", "Accept-Language"],
            expose_headers=["Retry-After"],
            allow_credentials=False,  # bearer tokens only: no cookie is ever sent cross-origin
            max_age=600,
        )

    from trackingbms.server.api import router

    app.include_router(router)

    from trackingbms.server import metrics

    metrics.install(app)

    @app.exception_handler(NotFound)
    async def _not_found(_req: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Misdirected)
    async def _misdirected(_req: Request, exc: Misdirected) -> JSONResponse:
        # 421 Misdirected Request: this region cannot serve the tenant; the body and Location say where
        headers = {"Location": exc.url} if exc.url else None
        return JSONResponse(exc.body(), status_code=421, headers=headers)

    @app.exception_handler(Conflict)
    async def _conflict(_req: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(req: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # undecodable JSON is a malformed body like any other: 422 with its place, as documented
            return JSONResponse(
                {"detail": [{"loc": ["body"], "msg": "body is not valid JSON", "type": "json_invalid"}]},
                status_code=422,
            )
        return await http_exception_handler(req, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.get("/healthz", tags=["meta"], summary="liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    _install_openapi(app)

    from trackingbms.server import web

    web.mount(app)  # last: the dashboard may add a catch-all route
    return app


def _install_openapi(app: FastAPI) -> None:
    """Add the ingest and relay batch schemas (their routes read the body raw, for speed) to the doc."""
    from fastapi.openapi.utils import get_openapi

    from trackingbms.server.schemas import IngestBatch, RelayBatch

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for model in (IngestBatch, RelayBatch):
            batch = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, d in batch.pop("$defs", {}).items():
                schemas.setdefault(name, d)
            schemas[model.__name__] = batch
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
