"""Fixtures for the scale-out tests: private brokers on free ports, a provisioned PostgreSQL tenant."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# the gateway's process fixtures (simulated packs, `trackingbms gateway` processes)
from gateway.conftest import gateway, loop_thread, packs  # noqa: F401

from .harness import MOSQUITTO, NATS_SERVER, Cluster, Mosquitto, NatsCluster

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need_binary(path: str, package: str) -> None:
    if os.access(path, os.X_OK):
        return
    reason = f"{path} not found (Debian package {package})"
    if IN_CI:
        pytest.fail(f"{reason}; CI must install it: see .ci/run")
    pytest.skip(reason)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    _need_binary(MOSQUITTO, "mosquitto")
    m = Mosquitto(tmp_path / "mosquitto")
    yield m
    m.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    _need_binary(NATS_SERVER, "nats-server")
    c = NatsCluster(tmp_path / "nats")
    c.start()
    yield c
    c.stop()


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "cluster", postgres_url, ["pack-1", "pack-2"])
    yield c
    c.close()
