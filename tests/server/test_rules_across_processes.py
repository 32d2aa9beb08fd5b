"""A rule edited through one server process reaches another process's evaluators without a restart.

Process A is the test's server (a thread); process B is ``trackingbms server`` in a subprocess on the same
database. B has already met the battery (its evaluators hold the old rules) when A's API adds a rule; the
next sample B ingests raises that rule's alarm. Once per backend (SQLite file, PostgreSQL).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from trackingbms.server import provisioning as p

from .conftest import ServerThread, provision, sample, server_process

RULE = "cross_process_soc"


def _start_b(url: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    return server_process(url, tmp, {"TRACKINGBMS_RULES_CHECK_S": "0.5", "TRACKINGBMS_ALARM_INTERVAL_S": "1"})


async def _alarms(base: str, token: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
        r = await c.get("/api/v1/alarms", params={"active": "true"})
        r.raise_for_status()
        return [a for a in r.json() if a["rule_id"] == RULE]


async def test_a_rule_added_on_one_process_raises_on_another(
    start_server: Callable[..., ServerThread], database_url: str, tmp_path: Path
) -> None:
    a = await asyncio.to_thread(start_server, alarms_enabled=False)  # A only serves the API here
    async with p.open_store(database_url) as store:
        t = await provision(store, a.base_url, "acme")
    proc, b = await asyncio.to_thread(_start_b, database_url, tmp_path / "b")
    try:
        battery = t.batteries[0]
        dev = {"Authorization": f"Bearer {t.device}"}
        async with httpx.AsyncClient(base_url=b, headers=dev, timeout=30) as ingest:
            # B meets the battery under the built-in rules only
            r = await ingest.post("/api/v1/ingest", json={"samples": [sample(battery, 1, soc_pct=50.0)]})
            assert r.json()["accepted"] == 1
            await asyncio.sleep(1.5)
            assert await _alarms(b, t.admin) == []
            # A's API adds a tenant rule every sample with a SOC trips
            async with httpx.AsyncClient(
                base_url=a.base_url, headers={"Authorization": f"Bearer {t.admin}"}, timeout=30
            ) as api:
                r = await api.post(
                    "/api/v1/alarm-rules",
                    json={"rule_id": RULE, "metric": "soc_pct", "op": ">", "set": -1, "clear": -2},
                )
                assert r.status_code == 201, r.text
            # B picks it up by itself (no restart, no call from A): the next sample raises the alarm
            deadline = time.monotonic() + 20
            seq = 2
            while not await _alarms(b, t.admin):
                assert time.monotonic() < deadline, "process B never applied the rule added through A"
                r = await ingest.post(
                    "/api/v1/ingest", json={"samples": [sample(battery, seq, soc_pct=50.0)]}
                )
                assert r.json()["accepted"] == 1
                seq += 1
                await asyncio.sleep(0.5)
        raised = await _alarms(a.base_url, t.admin)  # the same alarm row, seen from A
        assert raised and raised[0]["battery_id"] == battery
    finally:
        proc.terminate()
        proc.wait(30)
