"""Cluster mode: ``POST /api/v1/ingest`` hands the batch to JetStream and answers with the ingest worker's
reply (after its commit). With no worker, the API answers 503 and the batch waits in the stream; a worker
started later stores it, and the gateway's resend is counted as duplicates: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from gateway.harness import wait_for

from .conftest import _need_binary
from .harness import NATS_SERVER, NatsCluster

pytestmark = pytest.mark.postgres


BASE = datetime.now(UTC)


def _sample(seq: int) -> dict:
    at = BASE - timedelta(seconds=60 - seq)  # the same sample each time it is built (a resend)
    ts = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
    return {"battery_id": "pack-1", "seq": seq, "ts": ts, "voltage_v": 52.1, "cells_mv": [3300] * 4}


def test_http_ingest_through_jetstream_survives_a_missing_worker(cluster, tmp_path: Path) -> None:
    from trackingbms.server import provisioning as p

    _need_binary(NATS_SERVER, "nats-server")
    nats = NatsCluster(tmp_path / "nats", size=1)
    nats.start()
    try:
        token = asyncio.run(p.new_device_token(cluster.db_url, "acme", "gw-1"))["token"]
        worker = cluster.worker("--nats", nats.nats_urls, "--replicas", "1")
        wait_for("the worker to create the stream", nats.stream_info, 60)
        _, api = cluster.api(
            TRACKINGBMS_NATS_URL=nats.nats_urls,
            TRACKINGBMS_INGEST_VIA_JETSTREAM="true",
            TRACKINGBMS_INGEST_JETSTREAM_TIMEOUT_S="3",
        )
        headers = {"Authorization": f"Bearer {token}"}

        def post(*seqs: int) -> httpx.Response:
            body = {"samples": [_sample(s) for s in seqs]}
            return httpx.post(api + "/api/v1/ingest", json=body, headers=headers, timeout=30)

        r = wait_for("the API to reach JetStream", lambda: (x := post(1, 2, 3)).status_code == 200 and x, 60)
        assert r.json() == {"accepted": 3, "duplicates": 0, "rejected": []}

        worker.kill()  # no worker: the batch is queued, but no commit is confirmed
        r = post(4)
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert "send the batch again" in r.json()["detail"]
        assert nats.stream_info().state.messages == 1  # waiting in the stream
        assert cluster.seqs(api, "pack-1") == [1, 2, 3]

        cluster.worker("--nats", nats.nats_urls, "--replicas", "1")  # a worker again: it stores the batch
        wait_for("the queued batch to be stored", lambda: cluster.seqs(api, "pack-1") == [1, 2, 3, 4], 90)
        r = post(4)  # the gateway's resend
        assert r.status_code == 200 and r.json()["accepted"] == 0 and r.json()["duplicates"] == 1
        assert cluster.seqs(api, "pack-1") == [1, 2, 3, 4]
    finally:
        nats.stop()
