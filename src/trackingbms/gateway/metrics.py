"""Prometheus metrics of the gateway, served as ``GET /metrics`` by the local API.

Built at scrape time from what the gateway already tracks (queue figures in one trip to the queue's thread,
per-BMS link state, frame counters and poll timings): no second set of counters to keep in step. A fresh
registry per scrape, so several gateways in one process (tests) never share metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from trackingbms.gateway.state import BatteryStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LINK_STATES = ("ok", "degraded", "asleep", "disconnected")
P = "trackingbms_gateway_"


def _age_s(ts: str | None) -> float:
    if not ts:
        return 0.0
    when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return max(0.0, (datetime.now(UTC) - when).total_seconds())


class _Snapshot:
    def __init__(self, status: dict[str, Any], batteries: Iterable[BatteryStatus], uplinks: Sequence[str]):
        self.status = status
        self.batteries = list(batteries)
        self.uplinks = list(uplinks)

    def collect(self) -> Iterator[Metric]:
        s = self.status
        info = InfoMetricFamily(P[:-1], "the gateway's version")
        info.add_metric([], {"version": str(s.get("version", ""))})
        yield info
        yield GaugeMetricFamily(
            P + "uptime_seconds", "seconds since the gateway started", s.get("uptime_s", 0)
        )
        yield GaugeMetricFamily(P + "queue_samples", "samples waiting to be sent", s.get("queue_depth", 0))
        yield GaugeMetricFamily(
            P + "queue_oldest_age_seconds",
            "age of the oldest sample waiting to be sent (0 when none waits)",
            _age_s(s.get("oldest_queued_ts")),
        )
        yield GaugeMetricFamily(
            P + "queue_parked_samples",
            "samples the server refused for a fixable reason (battery not assigned yet), retried slowly",
            s.get("parked_count", 0),
        )
        yield GaugeMetricFamily(
            P + "dead_letter_samples", "samples the server rejected as invalid", s.get("dead_letter_count", 0)
        )
        yield GaugeMetricFamily(
            P + "disk_budget_used_ratio",
            "queue database size over its disk budget",
            float(s.get("disk_used_pct", 0.0)) / 100,
        )
        yield CounterMetricFamily(
            P + "thinned_samples",
            "samples thinned out at 100 % of the disk budget",
            s.get("thinned_total", 0),
        )
        uplink = GaugeMetricFamily(P + "uplink_active", "1 for the uplink in use", labels=["uplink"])
        current = s.get("uplink")
        for name in self.uplinks or ([current] if current else []):
            uplink.add_metric([name], 1 if name == current else 0)
        yield uplink

        link = GaugeMetricFamily(
            P + "bms_link_state", "1 for the BMS link's current state", labels=["battery_id", "state"]
        )
        frames = CounterMetricFamily(
            P + "bms_frames",
            "frames from the BMS by result (bad = checksum / truncated)",
            labels=["battery_id", "result"],
        )
        polls = HistogramMetricFamily(
            P + "bms_poll_duration_seconds", "time one poll of a BMS took", labels=["battery_id"]
        )
        for b in self.batteries:
            for state in LINK_STATES:
                link.add_metric([b.battery_id, state], 1 if b.link_state == state else 0)
            frames.add_metric([b.battery_id, "good"], b.frames_good)
            frames.add_metric([b.battery_id, "bad"], b.frames_bad)
            t = b.poll_times
            buckets = [(repr(float(bound)), n) for bound, n in zip(t.bounds_s, t.counts, strict=True)]
            polls.add_metric([b.battery_id], [*buckets, ("+Inf", t.count)], t.sum_s)
        yield link
        yield frames
        yield polls


def render(status: dict[str, Any], batteries: Iterable[BatteryStatus], uplinks: Sequence[str] = ()) -> bytes:
    """The Prometheus text exposition of the gateway's state."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(status, batteries, uplinks))  # type: ignore[arg-type]
    return generate_latest(registry)
