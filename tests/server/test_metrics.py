"""The server's ``/metrics``, scraped over real HTTP and parsed with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from trackingbms.server.alarms import AlarmService
from trackingbms.server.metrics import _Snapshot

from .conftest import ServerThread, World, client, sample


async def scrape(base_url: str, token: str | None = None) -> dict[str, dict[tuple, float]]:
    async with client(base_url, token) as c:
        r = await c.get("/metrics")
    assert r.status_code == 200, r.text
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


async def test_metrics_show_ingest_requests_fleet_alarms_and_live_sockets(world: World) -> None:
    a = world.a
    # SOC under 10 % for 80 s (the soc_low rule: 60 s) and a level-1 fault bit: two warning alarms, of
    # which the latest sample's fault bits show only one
    batch = [
        sample(a.batteries[0], 1, seconds_ago=90, soc_pct=5.0),
        sample(a.batteries[0], 2, seconds_ago=10, soc_pct=5.0, faults=["cell_voltage_high_l1"]),
    ]
    batch.append(sample("not-ours", 1))  # rejected: not assigned to this device
    async with client(world.base_url, a.device) as c:
        r = await c.post("/api/v1/ingest", json={"samples": batch})
        assert r.status_code == 200 and r.json()["accepted"] == 2
        await c.post("/api/v1/ingest", json={"samples": batch[:1]})  # a duplicate
    async with client(world.base_url, a.viewer) as c:
        for _ in range(600):  # alarms are evaluated off the ingest request; the limit only stops a hang
            raised = (await c.get("/api/v1/alarms", params={"active": "true"})).json()
            if len(raised) == 2:
                break
            await asyncio.sleep(0.05)
        assert sorted(x["rule_id"] for x in raised) == ["fault:cell_voltage_high_l1", "soc_low"]
    async with client(world.base_url, a.viewer) as c:
        assert (await c.get(f"/api/v1/batteries/{a.batteries[0]}")).status_code == 200
        assert (await c.get("/api/v1/batteries/nope")).status_code == 404

    ws_url = world.base_url.replace("http://", "ws://") + f"/api/v1/live?token={a.viewer}"
    async with websockets.connect(ws_url):
        for _ in range(100):  # the socket registers just after the handshake
            m = await scrape(world.base_url)
            if m["trackingbms_live_connections"][()] == 1:
                break
            await asyncio.sleep(0.05)
    assert m["trackingbms_live_connections"][()] == 1

    # per tenant: batteries by connectivity (acme: one online, two never seen), active alarms by severity
    acme = {
        dict(k)["connectivity"]: v for k, v in m["trackingbms_batteries"].items() if ("tenant", "acme") in k
    }
    assert acme["online"] == 1 and sum(acme.values()) == 3
    assert m["trackingbms_alarm_samples_skipped_total"] == {(): 0}  # the alarm service kept up
    assert m["trackingbms_alarm_backlog_samples"][()] >= 0
    alarms = {(dict(k)["tenant"], dict(k)["severity"]): v for k, v in m["trackingbms_active_alarms"].items()}
    assert alarms == {
        ("acme", "info"): 0,
        ("acme", "warning"): 2,
        ("acme", "critical"): 0,
        ("globex", "info"): 0,
        ("globex", "warning"): 0,
        ("globex", "critical"): 0,
    }

    # ingest: samples by outcome, rejections by the field at fault, batch latency
    outcome = {dict(k)["outcome"]: v for k, v in m["trackingbms_ingest_samples_total"].items()}
    assert outcome == {"accepted": 2, "duplicate": 1, "rejected": 1}
    assert m["trackingbms_ingest_rejected_samples_total"] == {(("reason", "battery_id"),): 1}
    assert m["trackingbms_ingest_batch_duration_seconds_count"][(("transport", "http"),)] == 2

    # request latencies by route template, not raw path
    req = m["trackingbms_http_request_duration_seconds_count"]
    assert req[(("code", "200"), ("method", "GET"), ("route", "/api/v1/batteries/{battery_id}"))] == 1
    assert req[(("code", "404"), ("method", "GET"), ("route", "/api/v1/batteries/{battery_id}"))] == 1
    assert req[(("code", "200"), ("method", "POST"), ("route", "/api/v1/ingest"))] == 2


async def test_metrics_need_the_token_when_one_is_set(start_server: Callable[..., ServerThread]) -> None:
    srv: Any = await asyncio.to_thread(start_server, metrics_token="m-secret-123")
    async with client(srv.base_url) as c:
        r = await c.get("/metrics")
    assert r.status_code == 403 and "TRACKINGBMS_METRICS_TOKEN" in r.json()["detail"]
    async with client(srv.base_url, "wrong") as c:
        assert (await c.get("/metrics")).status_code == 403
    m = await scrape(srv.base_url, "m-secret-123")
    assert "trackingbms_http_request_duration_seconds_count" in m


def test_alarm_samples_skipped_are_counted_logged_and_exported(caplog: pytest.LogCaptureFixture) -> None:
    """Past max_backlog a batch is stored but not analysed: how many, in the log when evaluation falls
    behind and when it catches up, and in the metrics."""
    service = AlarmService(None, max_backlog=1000)  # type: ignore[arg-type]  # submit needs no store
    batch = [sample("p1", k) for k in range(400)]
    with caplog.at_level(logging.WARNING, logger="trackingbms.server.alarms"):
        service.submit(1, batch)
        service.submit(1, batch)
        service.submit(1, batch)  # 1,200 > 1,000: skipped
        service.submit(1, batch[:300])  # skipped too
        assert (service.backlog, service.skipped) == (800, 700)
        service.backlog = 0  # as if the worker had caught up
        service.submit(1, batch)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and "behind by 800 samples" in said[0]
    assert "caught up: 700 samples were stored but not analysed" in said[1]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot([], 0, service))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert "trackingbms_alarm_samples_skipped_total 700.0" in text
    assert "trackingbms_alarm_backlog_samples 400.0" in text
