"""Prometheus metrics of the server: ``GET /metrics``.

- request latencies per route template and status (an ASGI middleware: every route, nothing to remember);
- ingest: samples by outcome, rejected samples by reason (the field the error names), batch latency
  (:meth:`ServerMetrics.observe_ingest`, called by the ingest service for HTTP and broker batches alike);
- live WebSocket connections (the hub's subscriber count, read at scrape time);
- the alarm service's backlog and the samples it skipped for being too far behind (stored, not analysed),
  whether this process holds the alarm feed, and the samples it evaluated;
- per tenant: batteries by connectivity, and active alarms by severity (the alarms table: what the Alarms
  page lists), read from the store at scrape time and cached for :data:`FLEET_CACHE_S` so frequent scrapes
  of a large fleet cost one query pass.

Access: with ``TRACKINGBMS_METRICS_TOKEN`` set, a scrape needs ``Authorization: Bearer <token>``; without it,
only loopback clients are answered (the per-tenant series are not for the internet).

Each app has its own registry (several apps in one test process never share counters).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from trackingbms.server.store.alarms import SEVERITIES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FLEET_CACHE_S = 15.0
CONNECTIVITY = ("online", "asleep", "link-down", "offline", "backfilling")
LOOPBACK = ("127.0.0.1", "::1", "localhost")
#: ingest batches: 1 to 5,000 samples, a few ms to seconds
BATCH_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: rejection reasons are the field a sample's error names (``ts: …`` → ``ts``); anything else is "other"
MAX_REASON_CHARS = 32


#: (tenant name, batteries by connectivity, active alarms by severity)
FleetRow = tuple[str, dict[str, int], dict[str, int]]


def reason_of(error: str) -> str:
    head = error.split(":", 1)[0].strip()
    if not head or len(head) > MAX_REASON_CHARS or not head.replace("_", "").replace(".", "").isalnum():
        return "other"
    return head.split(".", 1)[0]


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Histogram(
            "trackingbms_http_request_duration_seconds",
            "HTTP request latency by route template and status code",
            ["method", "route", "code"],
            registry=r,
        )
        self.samples = Counter(
            "trackingbms_ingest_samples",
            "ingested samples by outcome (accepted, duplicate, rejected)",
            ["outcome"],
            registry=r,
        )
        self.rejected = Counter(
            "trackingbms_ingest_rejected_samples",
            "rejected samples by reason (the field the error names)",
            ["reason"],
            registry=r,
        )
        self.batches = Histogram(
            "trackingbms_ingest_batch_duration_seconds",
            "time to validate and store one batch",
            ["transport"],
            buckets=BATCH_BUCKETS_S,
            registry=r,
        )
        for outcome in ("accepted", "duplicate", "rejected"):
            self.samples.labels(outcome)  # present from zero: rate() works from the first scrape
        self._fleet_cache: tuple[float, list[FleetRow]] | None = None

    def observe_ingest(
        self, accepted: int, duplicates: int, rejected: list[str], seconds: float, transport: str = "http"
    ) -> None:
        """One stored batch: counts by outcome, the rejections' reasons, how long it took."""
        self.samples.labels("accepted").inc(accepted)
        self.samples.labels("duplicate").inc(duplicates)
        self.samples.labels("rejected").inc(len(rejected))
        for error in rejected:
            self.rejected.labels(reason_of(error)).inc()
        self.batches.labels(transport).observe(seconds)

    async def fleet(self, store: Any) -> list[FleetRow]:
        """Per tenant: (name, batteries by connectivity, active alarms by severity), cached briefly."""
        now = time.monotonic()
        if self._fleet_cache is not None and now - self._fleet_cache[0] < FLEET_CACHE_S:
            return self._fleet_cache[1]
        out = []
        active = await store.active_alarm_counts()
        for tenant_id, name in await store.tenants():
            counts = dict.fromkeys(CONNECTIVITY, 0)
            for b in await store.tenant(tenant_id).fleet():
                conn = b.get("connectivity")
                counts[conn] = counts.get(conn, 0) + 1
            out.append((name, counts, {**dict.fromkeys(SEVERITIES, 0), **active.get(tenant_id, {})}))
        self._fleet_cache = (now, out)
        return out

    async def render(self, store: Any, live_sockets: int, alarms: Any = None) -> bytes:
        fleet = await self.fleet(store)
        extra = CollectorRegistry(auto_describe=False)
        extra.register(_Snapshot(fleet, live_sockets, alarms))  # type: ignore[arg-type]
        return generate_latest(self.registry) + generate_latest(extra)


class _Snapshot:
    def __init__(self, fleet: list[FleetRow], live_sockets: int, alarms: Any = None):
        self.fleet = fleet
        self.live_sockets = live_sockets
        self.alarms = alarms  # the AlarmService, when this process runs one

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "trackingbms_live_connections", "open live WebSocket connections", self.live_sockets
        )
        batteries = GaugeMetricFamily(
            "trackingbms_batteries", "batteries by tenant and connectivity", labels=["tenant", "connectivity"]
        )
        alarms = GaugeMetricFamily(
            "trackingbms_active_alarms",
            "active (raised or acknowledged, not cleared) alarms by tenant and severity",
            labels=["tenant", "severity"],
        )
        for name, counts, by_severity in self.fleet:
            for conn, n in counts.items():
                batteries.add_metric([name, conn], n)
            for severity, n in by_severity.items():
                alarms.add_metric([name, severity], n)
        yield batteries
        yield alarms
        if self.alarms is not None:
            yield GaugeMetricFamily(
                "trackingbms_alarm_backlog_samples",
                "stored samples waiting for alarm evaluation",
                self.alarms.backlog,
            )
            yield CounterMetricFamily(
                "trackingbms_alarm_samples_skipped",
                "samples stored but not analysed: alarm evaluation was max_backlog behind",
                self.alarms.skipped,
            )
            yield GaugeMetricFamily(
                "trackingbms_alarm_feed_holder",
                "1 when this process holds the alarm feed (evaluates every stored sample), else 0",
                int(self.alarms.held),
            )
            yield CounterMetricFamily(
                "trackingbms_alarm_samples_evaluated",
                "stored samples this process ran through the alarm rules and the analytics engine",
                self.alarms.evaluated,
            )


def route_template(scope: dict[str, Any]) -> str:
    """The matched route's template with the prefixes of the routers it sits in
    (``/api/v1/batteries/{battery_id}``); nested routers leave only the innermost part in the scope."""
    route = scope.get("route")
    inner = getattr(route, "path", None)
    if not inner:
        return "unmatched"
    path = scope.get("path", "")
    try:
        rendered = getattr(route, "path_format", inner).format(**scope.get("path_params", {}))
    except (KeyError, IndexError, ValueError):
        return inner
    return path[: -len(rendered)] + inner if rendered and path.endswith(rendered) else inner


class MetricsMiddleware:
    """Times every HTTP request by its route template (``/api/v1/batteries/{battery_id}``), not the raw
    path, so the label set stays bounded."""

    def __init__(self, app: Callable[..., Awaitable[None]], metrics: ServerMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(
                scope.get("method", ""), route_template(scope), str(status["code"])
            ).observe(time.perf_counter() - started)


def authorized(settings: Any, client_host: str | None, authorization: str | None) -> tuple[bool, str]:
    token = getattr(settings, "metrics_token", None)
    if token:
        given = (authorization or "").removeprefix("Bearer ").removeprefix("bearer ").strip()
        ok = hmac.compare_digest(given.encode(), token.encode())
        return ok, "metrics need Authorization: Bearer <TRACKINGBMS_METRICS_TOKEN>"
    ok = client_host in LOOPBACK
    return ok, "metrics are served to loopback clients only; set TRACKINGBMS_METRICS_TOKEN to scrape remotely"


def install(app: Any) -> ServerMetrics:
    """Add the middleware and ``GET /metrics`` to ``app``."""
    metrics = ServerMetrics()
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.get("/metrics", tags=["meta"], summary="Prometheus metrics", include_in_schema=True)
    async def prometheus_metrics(request: Request) -> Response:
        ok, why = authorized(
            request.app.state.settings,
            request.client.host if request.client else None,
            request.headers.get("authorization"),
        )
        if not ok:
            return JSONResponse({"detail": why}, status_code=403)
        hub = request.app.state.hub
        alarms = getattr(request.app.state, "alarms", None)
        body = await metrics.render(request.app.state.store, hub.subscriber_count(), alarms)
        return Response(body, media_type=CONTENT_TYPE)

    return metrics
