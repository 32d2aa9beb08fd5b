"""The ingest worker's handling of one message (the same for MQTT and JetStream) on a real SQLite store, and
its command line's errors."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from gateway.harness import CLI


def _sample(seq: int, **extra) -> dict:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=60 - seq)  # one ts per seq
    ts = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return {"battery_id": "pack-1", "seq": seq, "ts": ts, "voltage_v": 52.0, **extra}


def test_handler_acks_after_storing_and_refuses_what_it_must(tmp_path: Path) -> None:
    from trackingbms.server import provisioning as p
    from trackingbms.server.db import default_sqlite_url, make_engine, migrate
    from trackingbms.server.store import Store
    from trackingbms.server.worker import IngestHandler

    url = default_sqlite_url(tmp_path)

    async def go() -> dict:
        await p.create_tenant(url, "acme")
        await p.create_site(url, "acme", "depot")
        await p.provision_device(url, "acme", "gw-1")
        await p.create_battery(url, "acme", "depot", "pack-1", device="gw-1")
        await p.set_device_config(url, "acme", "gw-1", {"heartbeat_interval_s": 10})
        engine = make_engine(url)
        await migrate(engine)
        h = IngestHandler(Store(engine), max_batch_samples=3)
        batch = orjson.dumps({"batch_id": "a", "config_version": 0, "samples": [_sample(1), _sample(2)]})
        out = {
            "first": await h.handle("t1-gw-1", "samples", batch),
            "again": await h.handle("t1-gw-1", "samples", batch),  # a redelivery: duplicates, acked again
            "bad_sample": await h.handle(
                "t1-gw-1", "samples", orjson.dumps({"batch_id": "b", "samples": [_sample(3, ts="yesterday")]})
            ),
            "unknown": await h.handle("t1-nobody", "samples", batch),
            "not_a_key": await h.handle("gw-1", "samples", batch),
            "too_many": await h.handle(
                "t1-gw-1",
                "samples",
                orjson.dumps({"batch_id": "c", "samples": [_sample(i) for i in range(4)]}),
            ),
            "not_a_batch": await h.handle("t1-gw-1", "samples", b'{"batch_id": "d", "rows": []}'),
            "not_json": await h.handle("t1-gw-1", "samples", b"\x00garbage"),
            "heartbeat": await h.handle(
                "t1-gw-1", "heartbeat", orjson.dumps({"version": "x", "uptime_s": 5})
            ),
        }
        dev = await Store(engine).tenant(1).device("gw-1")
        out["device"] = dev
        await engine.dispose()
        return out

    r = asyncio.run(go())
    assert r["first"]["batch_id"] == "a" and r["first"]["accepted"] == 2 and r["first"]["duplicates"] == 0
    assert (
        r["first"]["config"]["heartbeat_interval_s"] == 10
    )  # the gateway runs config 0: it gets the new one
    assert r["again"]["accepted"] == 0 and r["again"]["duplicates"] == 2
    assert r["bad_sample"]["rejected"][0]["index"] == 0 and r["bad_sample"]["rejected"][0][
        "error"
    ].startswith("ts")
    assert r["unknown"]["status"] == 401 and r["not_a_key"]["status"] == 401
    assert r["too_many"] == {"batch_id": "c", "status": 413, "error": "at most 3 samples per batch, got 4"}
    assert r["not_a_batch"]["status"] == 422
    assert r["not_json"] is None  # nothing to answer: the gateway's timeout sends it again
    # the gateway reported config 0 with its batch: the heartbeat's answer carries the newer config
    assert r["heartbeat"] == {"batch_id": None, "config": {"config_version": 1, "heartbeat_interval_s": 10}}
    assert r["device"]["heartbeat"]["uptime_s"] == 5


def test_handler_feeds_the_alarm_service_like_http_ingest(tmp_path: Path) -> None:
    """A fault sample that arrives over MQTT / JetStream raises its alarm (naming the cell), as over HTTP;
    one stored by a handler without an alarm service (``alarms_enabled = false``: storage only) is evaluated
    all the same by the process that runs one (the alarm feed reads every stored segment)."""
    from trackingbms.server import provisioning as p
    from trackingbms.server.alarms import AlarmService
    from trackingbms.server.db import default_sqlite_url, make_engine, migrate
    from trackingbms.server.store import Store
    from trackingbms.server.worker import IngestHandler

    url = default_sqlite_url(tmp_path)
    cells_mv = [3300] * 16
    cells_mv[4] = 3700
    fault = _sample(1, cells_mv=cells_mv, faults=["cell_voltage_high_l2"], fault_code=1)

    async def go() -> tuple[list[dict], list[dict]]:
        await p.create_tenant(url, "acme")
        await p.create_site(url, "acme", "depot")
        await p.provision_device(url, "acme", "gw-1")
        await p.create_battery(url, "acme", "depot", "pack-1", device="gw-1")
        await p.create_battery(url, "acme", "depot", "pack-2", device="gw-1")
        engine = make_engine(url)
        await migrate(engine)
        store = Store(engine)
        # alarms off here: only stored (before any alarm service ran)
        quiet = IngestHandler(store)
        r = await quiet.handle(
            "t1-gw-1", "samples", orjson.dumps({"samples": [{**fault, "battery_id": "pack-2"}]})
        )
        assert r is not None and r["accepted"] == 1
        service = AlarmService(store, interval_s=3600)
        service.start()
        h = IngestHandler(store, alarms=service)
        r = await h.handle("t1-gw-1", "samples", orjson.dumps({"batch_id": "a", "samples": [fault]}))
        assert r is not None and r["accepted"] == 1
        await service.stop()  # evaluates what was stored up to now, then saves
        out = await store.tenant(1).alarms(active=True, battery_id="pack-1")
        stored_elsewhere = await store.tenant(1).alarms(active=True, battery_id="pack-2")
        await engine.dispose()
        return out, stored_elsewhere

    raised, stored_elsewhere = asyncio.run(go())
    for alarms in (raised, stored_elsewhere):
        assert [(a["rule_id"], a["severity"], a["cell"]) for a in alarms] == [
            ("fault:cell_voltage_high_l2", "critical", 5)
        ]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def test_worker_cli_errors_are_one_line(tmp_path: Path) -> None:
    out = _cli("ingest-worker", "--data-dir", str(tmp_path))
    assert out.returncode == 2 and "exactly one of --mqtt URL or --nats URL" in out.stderr
    out = _cli("ingest-worker", "--mqtt", "http://broker", "--data-dir", str(tmp_path))
    assert out.returncode == 2 and "expected mqtt://" in out.stderr
    assert "Traceback" not in out.stderr
    out = _cli(
        "admin",
        "mqtt-worker",
        "t1-gw-1",
        "--passwd",
        str(tmp_path / "p"),
        "--acl",
        str(tmp_path / "a"),
        "--password",
        "long-enough-pass",
    )
    assert out.returncode == 2 and "t<N>-" in out.stderr  # a worker may not take a device's name
    assert not (tmp_path / "p").exists()
