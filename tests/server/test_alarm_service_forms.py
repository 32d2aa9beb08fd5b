"""The alarm service given samples as the ingest path hands them over (packed: ts_ms parsed, the cells'
min / max from the packing) and given wire dicts (parsed in the service): the same alarms, naming the
same cells, on real SQLite stores; the estimator ends as one fed the wire samples directly."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from trackingbms.analytics.estimator import BatteryEstimator
from trackingbms.model import format_ts
from trackingbms.server import provisioning as p
from trackingbms.server.alarms import AlarmService
from trackingbms.server.store import PackedSample, packing


def walk(n: int, seed: int) -> list[dict[str, Any]]:
    """16S samples whose highest and lowest cells wander across the cell rules' thresholds, at
    changing positions (so a wrong cell or a swapped min / max shows), some sent twice or late."""
    rng = random.Random(seed)
    t0 = datetime.now(UTC) - timedelta(seconds=3 * n)
    hi, lo, out = 3500.0, 3000.0, []
    for k in range(n):
        hi = min(3700, max(3400, hi + rng.gauss(0, 30)))
        lo = min(3150, max(2650, lo + rng.gauss(0, 30)))
        cells = [3300] * 16
        i, j = rng.sample(range(16), 2)
        cells[i], cells[j] = round(hi), round(lo)
        out.append(
            {
                "battery_id": "p1",
                "seq": k,
                "ts": format_ts(t0 + timedelta(seconds=3 * k)),
                "current_a": rng.choice((-5.0, 0.0, 3.0)),
                "soc_pct": 50.0,
                "cells_mv": cells,
                "temps_c": [20.0, 21.0],
                "faults": [],
            }
        )
    out += rng.sample(out, 20)  # re-sent: never evaluated twice
    return out


def reference_state(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The estimator fed the wire samples itself (its own time parsing), once each, in time order."""
    est = BatteryEstimator(battery_id="p1")
    for s in sorted({s["seq"]: s for s in samples}.values(), key=lambda s: s["ts"]):
        est.update(s)
    return est.to_state()


async def run(url: str, batches: list[list[Any]]) -> tuple[list[Any], dict[str, Any]]:
    await p.create_tenant(url, "acme")
    await p.create_site(url, "acme", "depot")
    await p.provision_device(url, "acme", "gw")
    await p.create_battery(url, "acme", "depot", "p1", device="gw")
    async with p.open_store(url) as store:
        service = AlarmService(store)
        tenant_id = next(iter(await store.battery_keys({(1, "p1")})))[0]
        for b in batches:
            service.submit(tenant_id, b)
        await service._drain()
        (battery,) = service.batteries.values()
        items = await store.tenant(tenant_id).alarms(limit=1000)
    keep = ("rule_id", "status", "cell", "value", "message", "raised_at", "cleared_at", "clear_message")
    events = [{k: a.get(k) for k in keep} for a in items]
    return events, battery.estimator.to_state()


async def test_packed_and_wire_forms_raise_the_same_alarms(tmp_path: Path) -> None:
    samples = walk(1500, seed=3)
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    batches = [samples[i : i + 250] for i in range(0, len(samples), 250)]
    for b in batches:
        random.Random(len(b)).shuffle(b)  # a batch need not be in time order (a backfill, a relay)
    packed = []
    for b in batches:
        packed.append([])
        for i, d in enumerate(b):
            bid, seq, ts_ms, data, series = packing.validate_and_pack(d, now_ms)
            packed[-1].append(PackedSample(i, bid, seq, ts_ms, data, d, series))
    wire_events, wire_state = await run(f"sqlite+aiosqlite:///{tmp_path / 'wire.db'}", batches)
    packed_events, packed_state = await run(f"sqlite+aiosqlite:///{tmp_path / 'packed.db'}", packed)
    rules = {e["rule_id"] for e in wire_events}
    assert {"cell_voltage_high", "cell_voltage_low"} <= rules, rules  # the walk crossed both
    assert len(wire_events) >= 4
    assert all(e["cell"] for e in wire_events if e["rule_id"].startswith("cell_voltage"))
    assert any(e["cleared_at"] for e in wire_events)
    assert packed_events == wire_events
    assert packed_state == wire_state == reference_state(samples)
