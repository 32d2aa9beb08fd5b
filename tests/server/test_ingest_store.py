"""The ingest service on a real store (SQLite, and PostgreSQL: its statements are its own), checked row by
row: what a batch leaves in the hot segments, the 1-minute rollups, the battery's newest sample and
field-by-field last known state, the device's contact time, what live clients, the alarm service and the
metrics receive; duplicates, clashes and backfills exactly.

No HTTP here (tests/server/test_ingest.py covers the route on SQLite and PostgreSQL): one store, no users, no
server, so bench/mutation.py can run this file against every mutant of the ingest modules in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from trackingbms.model import format_ts
from trackingbms.server import db
from trackingbms.server import provisioning as p
from trackingbms.server.alarms import AlarmService
from trackingbms.server.db import batteries, battery_state, devices, rollup_1m, sample_segments, streams
from trackingbms.server.hub import Hub
from trackingbms.server.ingest import IngestService
from trackingbms.server.metrics import ServerMetrics
from trackingbms.server.store import Store, packing, segments
from trackingbms.server.store import ingest as store_ingest
from trackingbms.server.store.packing import validate_and_pack

#: a minute boundary ten minutes ago: the rollup buckets below are known exactly
T0 = (int(time.time() * 1000) // 60_000 - 10) * 60_000
RECEIVED = T0 + 120_000
B1, B2, B3 = "acme-p1", "acme-p2", "acme-p3"  # p1, p2 reported by gw-1; p3 by gw-2


def s(battery_id: str, seq: int, at_ms: int, **fields: Any) -> dict[str, Any]:
    return {"battery_id": battery_id, "seq": seq, "ts": format_ts_ms(at_ms), "source": "sim", **fields}


def format_ts_ms(ms: int) -> str:
    return format_ts(datetime.fromtimestamp(ms / 1000, UTC))


def packed(d: dict[str, Any]) -> bytes:
    return validate_and_pack(d, RECEIVED)[3]


class Rig:
    def __init__(self, store: Store, metrics: ServerMetrics) -> None:
        self.store = store
        self.hub = Hub()
        self.alarms = AlarmService(store)  # not started: the alarm feed's reads are checked (fed)
        self.metrics = metrics
        self.service = IngestService(store, self.hub, alarms=self.alarms, metrics=metrics)

    async def rows(self, table: Any, *where: Any) -> list[Any]:
        async with self.store.engine.connect() as conn:
            return list((await conn.execute(select(table).where(*where))).mappings().all())

    async def fed(self) -> list[tuple[str, int, dict[str, Any]]]:
        """What the alarm feed reads (every stored segment, the process that stored it no matter), as
        (battery, ts_ms, measured fields) in segment order, each segment's samples in ts order."""
        return [
            (g.battery_id, ts_ms, packing.unpack(data))
            for g in await self.store.segments_after(0, 1000)
            for ts_ms, data in zip(
                segments.keys(g.payload)[1].tolist(), segments.datas(g.payload), strict=True
            )
        ]

    async def samples(self, stream_id: int | None = None) -> list[dict[str, Any]]:
        """The stored hot samples (decoded from their segments), as rows of the old per-sample table."""
        where = [] if stream_id is None else [sample_segments.c.stream_id == stream_id]
        return [
            {"stream_id": g["stream_id"], "seq": r.seq, "ts_ms": r.ts_ms, "data": r.data}
            for g in await self.rows(sample_segments, *where)
            for r in segments.decode(g["data"])
        ]

    async def stream(self, battery_id: str) -> int:
        pk = (await self.battery(battery_id))["id"]
        (row,) = await self.rows(streams, streams.c.battery_id == pk)
        return row["id"]

    async def battery(self, battery_id: str) -> dict[str, Any]:
        (row,) = await self.rows(batteries, batteries.c.battery_id == battery_id)
        return dict(row)

    async def state(self, battery_id: str) -> dict[str, Any]:
        pk = (await self.battery(battery_id))["id"]
        (row,) = await self.rows(battery_state, battery_state.c.battery_id == pk)
        return dict(row)

    def counter(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


@contextlib.asynccontextmanager
async def make_rig(url: str) -> AsyncIterator[Rig]:
    async with p.open_store(url) as store:
        await p.create_tenant(store, "acme")
        await p.create_site(store, "acme", "depot")
        token = (await p.provision_device(store, "acme", "gw-1"))["token"]
        token2 = (await p.provision_device(store, "acme", "gw-2"))["token"]
        for bid, dev in ((B1, "gw-1"), (B2, "gw-1"), (B3, "gw-2")):
            await p.create_battery(store, "acme", "depot", bid, name=bid, device=dev, poll_interval_s=1.0)
        r = Rig(store, ServerMetrics())
        r.device = await store.device_for_token(token)  # type: ignore[attr-defined]
        r.device2 = await store.device_for_token(token2)  # type: ignore[attr-defined]
        yield r


def cold_statements(monkeypatch: pytest.MonkeyPatch) -> None:
    """Statements built once at import or cached on first use: build them again, so the code building them
    runs under this test (bench/mutation.py forks every mutant from a process that used them before)."""
    if hasattr(store_ingest, "_sqlite_statements"):
        monkeypatch.setattr(store_ingest, "_SQLITE_SQL", store_ingest._sqlite_statements())
    if hasattr(store_ingest, "_pg_write_sql"):
        monkeypatch.setattr(store_ingest, "_PG_WRITE_SQL", store_ingest._pg_write_sql())
    for cached in ("_sqlite_rollup_sql", "_sqlite_segment_sql"):
        clear = getattr(getattr(store_ingest, cached, None), "cache_clear", None)
        if clear is not None:
            clear()


@pytest.fixture
async def sqlite_rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    # the batteries UPDATE is built once, at import: build it again here, so that the code building it runs
    # under this test (bench/mutation.py forks every mutant from a process that imported the module before)
    cold_statements(monkeypatch)
    async with make_rig(f"sqlite+aiosqlite:///{tmp_path / 'server.db'}") as r:
        yield r


@pytest.fixture
async def rig(database_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    """A rig on each backend (conftest's database_url): PostgreSQL stores a batch with statements of its
    own (one over unnest arrays for all its writes), which must leave the same rows."""
    cold_statements(monkeypatch)
    async with make_rig(database_url) as r:
        yield r


def measured(*samples: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """Wire samples as the alarm feed reads them back: (battery, ts_ms, the measured fields)."""
    return [
        (x["battery_id"], packing.parse_ts_ms(x["ts"]), {k: v for k, v in x.items() if k not in _KEYS})
        for x in samples
    ]


_KEYS = ("battery_id", "seq", "ts")


async def test_a_batch_is_stored_rolled_up_merged_and_fed_to_alarms(rig: Rig) -> None:
    newest = s(B1, 3, T0 + 61_000, voltage_v=51.0, soc_pct=78.0)  # partial: no current, no cells
    mid = s(
        B1, 2, T0 + 2_000, voltage_v=52.0, current_a=-4.0, soc_pct=79.0, cells_mv=[3290, 3320], temps_c=[21.0]
    )
    old = s(
        B1,
        1,
        T0 + 1_000,
        voltage_v=50.0,
        current_a=-2.0,
        soc_pct=80.0,
        cells_mv=[3300, 3310],
        temps_c=[20.0, 22.5],
    )
    other = s(B2, 1, T0 + 5_000, voltage_v=48.0, cycles=7)
    batch = [newest, mid, old, other]  # newest first: arrival order is not time order
    with rig.hub.subscribe(rig.device.tenant_id) as live:
        res = await rig.service.ingest(rig.device, batch, received_ms=RECEIVED, transport="mqtt")
        published = [live.get_nowait() for _ in range(live.qsize())]
    assert (res.accepted, res.duplicates, res.rejected) == (4, 0, [])
    assert res.latest == {B1: newest, B2: other}

    st1, st2 = await rig.stream(B1), await rig.stream(B2)
    stored = sorted((r["stream_id"], r["seq"], r["ts_ms"], r["data"]) for r in await rig.samples())
    assert stored == sorted(
        [
            (st1, 1, T0 + 1_000, packed(old)),
            (st1, 2, T0 + 2_000, packed(mid)),
            (st1, 3, T0 + 61_000, packed(newest)),
            (st2, 1, T0 + 5_000, packed(other)),
        ]
    )

    b1 = await rig.battery(B1)
    assert (b1["last_seq"], b1["last_ts_ms"], b1["last_data"]) == (3, T0 + 61_000, packed(newest))
    assert (b1["last_received_ms"], b1["received_ts_ms"]) == (RECEIVED, T0 + 61_000)
    assert (b1["cell_count"], b1["temp_count"]) == (2, 2)  # the most any sample of the batch carried
    b2 = await rig.battery(B2)
    assert (b2["last_seq"], b2["cell_count"], b2["temp_count"]) == (1, 0, 0)
    (dev,) = await rig.rows(devices, devices.c.id == rig.device.id)
    assert dev["last_contact_ms"] == RECEIVED

    # last known state: per field the newest sample that carried it
    state = await rig.state(B1)
    assert (state["voltage_v"], state["voltage_v_ts"]) == (51.0, T0 + 61_000)
    assert (state["soc_pct"], state["soc_pct_ts"]) == (78.0, T0 + 61_000)
    assert (state["current_a"], state["current_a_ts"]) == (-4.0, T0 + 2_000)
    assert (orjson.loads(state["cells_mv"]), state["cells_mv_ts"]) == ([3290, 3320], T0 + 2_000)
    assert (orjson.loads(state["temps_c"]), state["temps_c_ts"]) == ([21.0], T0 + 2_000)
    assert (state["cycles"], state["cycles_ts"], state["faults"], state["faults_ts"]) == (
        None,
        None,
        None,
        None,
    )
    assert (await rig.state(B2))["cycles"] == 7

    # 1-minute rollups of the series, per stream and bucket
    roll = {(r["stream_id"], r["bucket_ms"]): r for r in await rig.rows(rollup_1m)}
    assert sorted(roll) == [(st1, T0), (st1, T0 + 60_000), (st2, T0)]
    r0 = roll[(st1, T0)]
    assert [r0[f"voltage_v_{k}"] for k in ("n", "min", "max", "sum")] == [2, 50.0, 52.0, 102.0]
    assert [r0[f"current_a_{k}"] for k in ("n", "min", "max", "sum")] == [2, -4.0, -2.0, -6.0]
    assert [r0[f"cell_min_mv_{k}"] for k in ("n", "min", "max")] == [2, 3290, 3300]
    assert [r0[f"cell_delta_mv_{k}"] for k in ("n", "min", "max", "sum")] == [2, 10, 30, 40]
    assert [r0[f"temp_max_c_{k}"] for k in ("n", "min", "max")] == [2, 21.0, 22.5]
    r1 = roll[(st1, T0 + 60_000)]
    assert [r1[f"voltage_v_{k}"] for k in ("n", "min", "max", "sum")] == [1, 51.0, 51.0, 51.0]
    assert (r1["current_a_n"], r1["current_a_min"]) == (0, None)

    # live clients get the newest sample per battery with its connectivity; alarms and metrics the batch
    assert [(m["type"], m["battery_id"], m["sample"]) for m in published] == [
        ("sample", B1, newest),
        ("sample", B2, other),
    ]
    for m in published:
        assert m["connectivity"] == rig.store.live_connectivity(m["sample"], RECEIVED)
    assert await rig.fed() == measured(old, mid, newest, other)  # what the alarm service evaluates
    assert rig.counter("trackingbms_ingest_samples_total", outcome="accepted") == 4
    assert rig.counter("trackingbms_ingest_samples_total", outcome="rejected") == 0
    assert rig.counter("trackingbms_ingest_batch_duration_seconds_count", transport="mqtt") == 1


async def test_duplicates_clashes_and_refusals_are_told_apart(rig: Rig) -> None:
    one, two = s(B1, 1, T0 + 1_000, voltage_v=50.0), s(B1, 2, T0 + 2_000, voltage_v=52.0)
    assert (await rig.service.ingest(rig.device, [one, two], received_ms=RECEIVED)).accepted == 2
    new = s(B1, 4, T0 + 3_000, voltage_v=54.0)
    batch = [
        one,  # a re-send: duplicate
        s(B1, 3, T0 + 1_000, voltage_v=40.0),  # another seq on a ts already taken
        s(B1, 2, T0 + 9_000, voltage_v=41.0),  # a seq already stored with another ts
        ["not", "a", "sample"],
        s(B3, 1, T0 + 1_000),  # gw-2's battery
        new,
        new,  # an exact re-send inside the batch
    ]
    with rig.hub.subscribe(rig.device.tenant_id) as live:
        res = await rig.service.ingest(rig.device, batch, received_ms=RECEIVED + 1)
        published = [live.get_nowait() for _ in range(live.qsize())]
    assert (res.accepted, res.duplicates) == (1, 2)
    assert res.rejected == [
        {"index": 1, "error": "ts: another sample of this battery (seq 1) has the same ts"},
        {"index": 2, "error": "seq: 2 was already stored with another ts"},
        {"index": 3, "error": "sample: must be an object"},
        {"index": 4, "error": f"battery_id: {B3!r} is not assigned to this device"},
    ]
    assert res.latest == {B1: new} and [m["sample"] for m in published] == [new]
    stored = sorted((r["seq"], r["ts_ms"]) for r in await rig.samples())
    assert stored == [(1, T0 + 1_000), (2, T0 + 2_000), (4, T0 + 3_000)]
    (roll,) = await rig.rows(rollup_1m)
    assert [roll[f"voltage_v_{k}"] for k in ("n", "min", "max", "sum")] == [3, 50.0, 54.0, 156.0]  # once each
    assert (await rig.battery(B1))["last_seq"] == 4
    # the alarm service reads what was stored, once, never what was refused
    assert await rig.fed() == measured(one, two, new)
    assert rig.counter("trackingbms_ingest_samples_total", outcome="accepted") == 3
    assert rig.counter("trackingbms_ingest_samples_total", outcome="duplicate") == 2
    assert rig.counter("trackingbms_ingest_samples_total", outcome="rejected") == 4
    for reason in ("ts", "seq", "sample", "battery_id"):
        assert rig.counter("trackingbms_ingest_rejected_samples_total", reason=reason) == 1
    assert rig.counter("trackingbms_ingest_batch_duration_seconds_count", transport="http") == 2


async def test_a_backfill_fills_gaps_but_never_moves_the_present(rig: Rig) -> None:
    present = s(B1, 10, T0 + 300_000, voltage_v=53.0, current_a=-1.0)
    await rig.service.ingest(rig.device, [present], received_ms=RECEIVED)
    old_a = s(B1, 5, T0 + 1_000, voltage_v=49.0, cells_mv=[3300, 3301, 3302], cycles=2)
    old_b = s(B1, 6, T0 + 2_000, voltage_v=49.5, cells_mv=[3305, 3306, 3307])
    with rig.hub.subscribe(rig.device.tenant_id) as live:
        res = await rig.service.ingest(rig.device, [old_b, old_a], received_ms=RECEIVED + 5)
        assert live.qsize() == 0  # live clients would take a backfill for the pack's present state
    assert (res.accepted, res.latest) == (2, {})
    b1 = await rig.battery(B1)
    assert (b1["last_seq"], b1["last_ts_ms"], b1["last_data"]) == (10, T0 + 300_000, packed(present))
    assert (b1["last_received_ms"], b1["received_ts_ms"], b1["cell_count"]) == (RECEIVED + 5, T0 + 2_000, 3)
    state = await rig.state(B1)
    assert (state["voltage_v"], state["voltage_v_ts"]) == (53.0, T0 + 300_000)  # the present stays
    assert (state["current_a"], state["current_a_ts"]) == (-1.0, T0 + 300_000)
    assert (orjson.loads(state["cells_mv"]), state["cells_mv_ts"]) == ([3305, 3306, 3307], T0 + 2_000)
    assert (state["cycles"], state["cycles_ts"]) == (2, T0 + 1_000)  # a gap filled


async def test_an_empty_or_wholly_refused_batch_stores_nothing(rig: Rig) -> None:
    res = await rig.service.ingest(rig.device, [], received_ms=RECEIVED)
    assert (res.accepted, res.duplicates, res.rejected, res.latest) == (0, 0, [], {})
    res = await rig.service.ingest(rig.device, [s(B1, 1, 0)], received_ms=RECEIVED)
    assert res.rejected == [
        {"index": 0, "error": f"ts: {format_ts_ms(0)} is before 2000: the device's clock is not set"}
    ]
    assert res.accepted == 0 and await rig.samples() == [] and await rig.fed() == []
    (dev,) = await rig.rows(devices, devices.c.id == rig.device.id)
    assert dev["last_contact_ms"] is None  # nothing stored: no write at all
    # the server's clock when none is given; the service's own skew
    strict = IngestService(rig.store, max_future_ms=0)
    ahead = s(B1, 2, int(time.time() * 1000) + 120_000)
    assert (await strict.ingest(rig.device, [ahead])).rejected[0]["error"].startswith("ts: ")
    assert (await rig.service.ingest(rig.device, [ahead])).accepted == 1


async def test_a_re_send_is_judged_within_its_own_battery(rig: Rig) -> None:
    # another battery's sample with the same ts, then the same seq: neither makes a re-send a clash
    one = s(B1, 1, T0 + 1_000, voltage_v=50.0)
    await rig.service.ingest(rig.device, [one, s(B2, 2, T0 + 1_000)], received_ms=RECEIVED)
    res = await rig.service.ingest(rig.device, [one], received_ms=RECEIVED)
    assert (res.accepted, res.duplicates, res.rejected) == (0, 1, [])
    two = s(B1, 3, T0 + 2_000)
    await rig.service.ingest(rig.device, [two, s(B2, 3, T0 + 4_000)], received_ms=RECEIVED)
    res = await rig.service.ingest(rig.device, [two], received_ms=RECEIVED)
    assert (res.accepted, res.duplicates, res.rejected) == (0, 1, [])


@pytest.mark.postgres
async def test_postgresql_stores_samples_across_months_and_merges_the_same(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cold_statements(monkeypatch)
    nov, dec, jan = 1_764_460_800_000, 1_764_547_200_000, 1_767_225_600_000  # Nov 30, Dec 1, Jan 1 (UTC)
    received = jan + 86_400_000
    async with make_rig(postgres_url) as rig:
        batch = [
            s(B1, 1, nov + 1_000, voltage_v=50.0, cells_mv=[3300, 3310]),
            s(B1, 2, jan, voltage_v=52.0),  # the first ms of January: its month needs a partition too
            s(B2, 1, dec + 5_000, soc_pct=40.0),
        ]
        res = await rig.service.ingest(rig.device, batch, received_ms=received)
        assert (res.accepted, res.duplicates, res.rejected) == (3, 0, [])
        stored = sorted((r["stream_id"], r["seq"], r["ts_ms"]) for r in await rig.samples())
        assert stored == sorted(
            [
                (await rig.stream(B1), 1, nov + 1_000),
                (await rig.stream(B1), 2, jan),
                (await rig.stream(B2), 1, dec + 5_000),
            ]
        )
        # the same verdicts as on SQLite: a re-send, a clash on ts, the newest sample and the merged state
        clash = s(B1, 9, nov + 1_000, voltage_v=1.0)
        res = await rig.service.ingest(rig.device, [batch[0], clash], received_ms=received)
        assert (res.accepted, res.duplicates) == (0, 1)
        assert res.rejected == [
            {"index": 1, "error": "ts: another sample of this battery (seq 1) has the same ts"}
        ]
        b1 = await rig.battery(B1)
        assert (b1["last_seq"], b1["last_ts_ms"], b1["cell_count"]) == (2, jan, 2)
        state = await rig.state(B1)
        assert (state["voltage_v"], orjson.loads(state["cells_mv"])) == (52.0, [3300, 3310])
        for table in [rollup_1m, *([db.rollup_1h] if hasattr(db, "rollup_1h") else [])]:
            cols = ("bucket_ms", "voltage_v_n", "voltage_v_min", "voltage_v_sum", "soc_pct_n", "soc_pct_max")
            roll = sorted(tuple(r[c] for c in cols) for r in await rig.rows(table))
            assert roll == [
                (nov, 1, 50.0, 50.0, 0, None),
                (dec, 0, None, 0.0, 1, 40.0),
                (jan, 1, 52.0, 52.0, 0, None),
            ]
        # a second batch into the same buckets merges there (PostgreSQL's least / greatest skip NULLs)
        await rig.service.ingest(
            rig.device, [s(B1, 3, nov + 2_000, voltage_v=49.0, soc_pct=30.0)], received_ms=received
        )
        for table in [rollup_1m, *([db.rollup_1h] if hasattr(db, "rollup_1h") else [])]:
            (row,) = [r for r in await rig.rows(table) if r["bucket_ms"] == nov]
            assert [row[c] for c in ("voltage_v_n", "voltage_v_min", "voltage_v_max", "voltage_v_sum")] == [
                2,
                49.0,
                50.0,
                99.0,
            ]
            assert [row[c] for c in ("soc_pct_n", "soc_pct_min", "soc_pct_max", "soc_pct_sum")] == [
                1,
                30.0,
                30.0,
                30.0,
            ]


async def test_a_moved_battery_writes_to_its_new_device_s_stream_only(rig: Rig) -> None:
    await rig.service.ingest(rig.device, [s(B1, 1, T0 + 1_000, voltage_v=50.0)], received_ms=RECEIVED)
    await p.assign_battery(rig.store, "acme", B1, "gw-2")
    res = await rig.service.ingest(rig.device, [s(B1, 2, T0 + 2_000)], received_ms=RECEIVED)
    assert res.rejected == [{"index": 0, "error": f"battery_id: {B1!r} is not assigned to this device"}]
    res = await rig.service.ingest(rig.device2, [s(B1, 3, T0 + 3_000, voltage_v=53.0)], received_ms=RECEIVED)
    assert (res.accepted, res.rejected) == (1, [])
    pk = (await rig.battery(B1))["id"]
    by_device = {r["device_id"]: r["id"] for r in await rig.rows(streams, streams.c.battery_id == pk)}
    assert sorted(by_device) == sorted([rig.device.id, rig.device2.id])
    stored = sorted((r["seq"], r["stream_id"]) for r in await rig.samples())
    assert stored == [(1, by_device[rig.device.id]), (3, by_device[rig.device2.id])]
    assert by_device[rig.device2.id] != pk  # a stream is not its battery
    assert (await rig.battery(B1))["last_seq"] == 3


async def test_the_batch_clock_settings_and_optional_parts(rig: Rig) -> None:
    # validated against the batch's arrival time, not the server's clock when it is given
    later = int(time.time() * 1000) + 86_400_000
    ahead = s(B1, 1, later - 1_000)  # a day ahead of now, a second before the batch arrived
    res = await rig.service.ingest(rig.device, [ahead], received_ms=later, transport="mqtt")
    assert (res.accepted, res.rejected) == (1, [])
    assert rig.counter("trackingbms_ingest_batch_duration_seconds_sum", transport="mqtt") < 10  # seconds
    # no hub, no alarms, no metrics: stored all the same
    bare = IngestService(rig.store)
    assert (await bare.ingest(rig.device, [s(B1, 2, T0)], received_ms=RECEIVED)).accepted == 1
    # the store's settings reach it
    tuned = Store(rig.store.engine, online_grace_s=7.0, offline_timeout_s=70.0)
    assert (tuned.online_grace_s, tuned.offline_timeout_s) == (7.0, 70.0)


async def test_a_battery_moved_back_uses_its_first_stream_again(rig: Rig) -> None:
    await p.assign_battery(rig.store, "acme", B1, "gw-2")
    await rig.service.ingest(rig.device2, [s(B1, 1, T0 + 1_000)], received_ms=RECEIVED)
    await p.assign_battery(rig.store, "acme", B1, "gw-1")
    res = await rig.service.ingest(rig.device, [s(B1, 2, T0 + 2_000)], received_ms=RECEIVED)
    assert res.accepted == 1
    pk = (await rig.battery(B1))["id"]
    by_device = {r["device_id"]: r["id"] for r in await rig.rows(streams, streams.c.battery_id == pk)}
    stored = sorted((r["seq"], r["stream_id"]) for r in await rig.samples())
    assert stored == [(1, by_device[rig.device2.id]), (2, by_device[rig.device.id])]


async def test_rollups_merge_a_series_a_bucket_did_not_have_yet(rig: Rig) -> None:
    for seq, fields in ((1, {"soc_pct": 50.0}), (2, {"voltage_v": 51.0}), (3, {"soc_pct": 60.0})):
        await rig.service.ingest(rig.device, [s(B1, seq, T0 + seq * 1_000, **fields)], received_ms=RECEIVED)
    tables = [rollup_1m]
    if hasattr(db, "rollup_1h"):
        tables.append(db.rollup_1h)  # the hour rows fold the same samples
    for table in tables:
        (roll,) = await rig.rows(table)
        assert [roll[f"voltage_v_{k}"] for k in ("n", "min", "max", "sum")] == [1, 51.0, 51.0, 51.0]
        assert [roll[f"soc_pct_{k}"] for k in ("n", "min", "max", "sum")] == [2, 50.0, 60.0, 110.0]


async def test_batches_waiting_for_the_writer_share_one_commit(
    sqlite_rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's group commit: batches of two devices sent at once are stored in fewer transactions than
    batches, each reply as if alone (a re-send in a later batch of the same group is a duplicate, the rollup
    counts each sample once); a batch whose statements fail fails alone, the others of its group commit."""
    rig = sqlite_rig
    transactions = 0
    write = rig.store.write

    @contextlib.asynccontextmanager
    async def counted() -> AsyncIterator[Any]:
        nonlocal transactions
        transactions += 1
        async with write() as conn:
            yield conn

    monkeypatch.setattr(rig.store, "write", counted)
    first = [s(B1, i, T0 + i * 1000, voltage_v=50.0 + i) for i in range(5)]
    again = [s(B1, i, T0 + i * 1000, voltage_v=50.0 + i) for i in range(3, 7)]  # 3, 4 re-sent
    other = [s(B3, i, T0 + i * 1000, voltage_v=40.0) for i in range(4)]
    replies = await asyncio.gather(
        rig.service.ingest(rig.device, first, RECEIVED),
        rig.service.ingest(rig.device, again, RECEIVED),
        rig.service.ingest(rig.device2, other, RECEIVED),
    )
    assert [(r.accepted, r.duplicates, r.rejected) for r in replies] == [(5, 0, []), (2, 2, []), (4, 0, [])]
    assert transactions == 1  # all three queued before the writer took the first: one transaction
    (minute,) = await rig.rows(rollup_1m, rollup_1m.c.stream_id == await rig.stream(B1))
    assert (minute["voltage_v_n"], minute["voltage_v_sum"]) == (7, sum(50.0 + i for i in range(7)))

    # the second batch of a group fails in SQL: the group is rolled back, then each goes alone
    store_batch = rig.store._store_batch
    failing = rig.device2

    async def flaky(conn: Any, device: Any, parsed: Any, t_now: int) -> Any:
        if device is failing:
            raise RuntimeError("disk on fire")
        return await store_batch(conn, device, parsed, t_now)

    monkeypatch.setattr(rig.store, "_store_batch", flaky)
    transactions = 0
    late = [s(B1, i, T0 + i * 1000, voltage_v=1.0) for i in range(7, 9)]
    more = [s(B1, i, T0 + i * 1000, voltage_v=1.0) for i in range(9, 11)]
    results = await asyncio.gather(
        rig.service.ingest(rig.device, late, RECEIVED),
        rig.service.ingest(rig.device2, [s(B3, 9, T0 + 9000)], RECEIVED),
        rig.service.ingest(rig.device, more, RECEIVED),
        return_exceptions=True,
    )
    assert [getattr(r, "accepted", repr(r)) for r in results] == [2, "RuntimeError('disk on fire')", 2]
    assert transactions == 1 + 3  # the group, rolled back; then each of the three alone
    seqs = [r["seq"] for r in await rig.samples(await rig.stream(B1))]
    assert sorted(seqs) == list(range(11))
    assert len(await rig.samples(await rig.stream(B3))) == 4
