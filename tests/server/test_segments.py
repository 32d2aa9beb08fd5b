"""Hot segments (store/segments.py, store/ingest.py): the verdicts of random batches against a reference
model, on a real store of either backend; two concurrent requests with the same samples on PostgreSQL; and
migration 0012 converting the per-sample table without loss, and back.

The model is the promise the per-sample table kept, per stream: a sample whose (seq, ts) is stored is a
duplicate (also repeated inside one batch, also once compacted into a block); a ts held by another seq is a
clash, and so is a seq stored hot with another ts; anything else is stored. Compacted samples are found by
ts only (blocks have no seq index: a seq re-used with a new ts after compaction is stored, as documented).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.server.conftest import migrate
from tests.server.test_ingest_store import Rig, format_ts_ms, make_rig

from trackingbms.server import provisioning as p
from trackingbms.server.db import make_engine, sample_segments
from trackingbms.server.store import cold, packing, segments

#: a minute boundary two hours ago: compaction cutoffs fall inside the examples' range
BASE_MS = (int(time.time() * 1000) // 60_000 - 120) * 60_000
RECEIVED = BASE_MS + 3 * 3_600_000


def wire(battery_id: str, seq: int, ts_ms: int) -> dict[str, Any]:
    """A sample whose fields follow from its key: a stored copy shows which (seq, ts) it came from."""
    return {
        "battery_id": battery_id,
        "seq": seq,
        "ts": format_ts_ms(ts_ms),
        "source": "sim",
        "voltage_v": 40.0 + seq / 10,
        "soc_pct": float(ts_ms // 1000 % 100),
    }


class Model:
    """One stream's stored samples as the rules say: hot and compacted, keyed by seq and by ts."""

    def __init__(self) -> None:
        self.hot: dict[int, int] = {}  # seq → ts
        self.hot_ts: dict[int, int] = {}  # ts → seq
        self.cold_ts: dict[int, int] = {}  # ts → seq

    def ingest(self, batch: list[tuple[int, int]]) -> tuple[int, int, list[dict[str, Any]]]:
        accepted = duplicates = 0
        rejected = []
        for i, (seq, ts) in enumerate(batch):
            other = self.hot_ts.get(ts, self.cold_ts.get(ts))
            if other is not None:
                if other == seq:
                    duplicates += 1
                else:
                    rejected.append(
                        {
                            "index": i,
                            "error": f"ts: another sample of this battery (seq {other}) has the same ts",
                        }
                    )
            elif seq in self.hot:
                rejected.append({"index": i, "error": f"seq: {seq} was already stored with another ts"})
            else:
                accepted += 1
                self.hot[seq], self.hot_ts[ts] = ts, seq
        return accepted, duplicates, rejected

    def compact(self, cutoff_ms: int) -> None:
        for seq, ts in list(self.hot.items()):
            if ts < cutoff_ms:
                del self.hot[seq], self.hot_ts[ts]
                self.cold_ts[ts] = seq

    def stored(self) -> list[tuple[int, int]]:
        """(ts, seq) of every stored sample, in ts order."""
        return sorted([*self.hot_ts.items(), *self.cold_ts.items()])


# a step: a batch of (seq, ts second) keys from small ranges (re-sends, repeats, clashes, overlapping and
# out-of-order ranges all come up), or a compaction with its cutoff second
_key = st.tuples(st.integers(0, 40), st.integers(0, 40))
_step = st.one_of(
    st.lists(_key, min_size=1, max_size=12).map(lambda b: ("batch", b)),
    # a run of consecutive samples, as a gateway sends them
    st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(1, 10)).map(
        lambda t: ("batch", [(t[0] + k, t[1] + k) for k in range(t[2])])
    ),
    st.integers(0, 45).map(lambda c: ("compact", c)),
)


@contextlib.contextmanager
def running_rig(url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, Rig]]:
    """A rig on its own event loop, for hypothesis's synchronous examples."""
    loop = asyncio.new_event_loop()
    cm = make_rig(url)
    rig = loop.run_until_complete(cm.__aenter__())
    try:
        yield loop, rig
    finally:
        loop.run_until_complete(cm.__aexit__(None, None, None))
        loop.close()


def _property(url: str, max_examples: int) -> None:
    counter = itertools.count()
    with running_rig(url) as (loop, rig):

        @settings(
            max_examples=max_examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.lists(_step, min_size=1, max_size=8))
        def check(steps: list[tuple[str, Any]]) -> None:
            loop.run_until_complete(_example(rig, f"prop-{next(counter)}", steps))

        check()


async def _example(rig: Rig, bid: str, steps: list[tuple[str, Any]]) -> None:
    await p.create_battery(rig.store, "acme", "depot", bid, device="gw-1")
    model = Model()
    for kind, arg in steps:
        if kind == "compact":
            cutoff = BASE_MS + arg * 1000
            await rig.store.compact(before_ms=cutoff)
            model.compact(cutoff)
            continue
        batch = [(seq, BASE_MS + t * 1000) for seq, t in arg]
        res = await rig.service.ingest(
            rig.device, [wire(bid, seq, ts) for seq, ts in batch], received_ms=RECEIVED
        )
        assert (res.accepted, res.duplicates, res.rejected) == model.ingest(batch), (batch, steps)
    scope = rig.store.tenant(await rig.store.tenant_by_name("acme"))
    rows = [r async for page in scope.export_rows(bid, 0, 2**62) for r in page]
    assert [(ts, seq) for ts, seq, _ in rows] == model.stored(), steps
    for ts, seq, data in rows:  # each stored copy is the first accepted sample with that key
        assert data == packing.validate_and_pack(wire(bid, seq, ts), RECEIVED)[3]


def test_random_batches_give_the_verdicts_and_samples_of_the_model(tmp_path: Path) -> None:
    _property(f"sqlite+aiosqlite:///{tmp_path / 'prop.db'}", max_examples=150)


@pytest.mark.postgres
def test_random_batches_give_the_verdicts_and_samples_of_the_model_postgresql(postgres_url: str) -> None:
    _property(postgres_url, max_examples=60)


@pytest.mark.postgres
async def test_concurrent_requests_with_the_same_samples_store_each_once(postgres_url: str) -> None:
    """A gateway re-sending while its first attempt is still in flight (or two server processes): the
    requests take turns per stream, so exactly one stores each sample, the other counts it a duplicate."""
    async with make_rig(postgres_url) as rig:
        bid = "acme-p1"
        for round_ in range(8):
            batch = [wire(bid, round_ * 1000 + k, BASE_MS + round_ * 600_000 + k * 1000) for k in range(300)]
            a, b = await asyncio.gather(
                rig.service.ingest(rig.device, batch, received_ms=RECEIVED),
                rig.service.ingest(rig.device, batch, received_ms=RECEIVED),
            )
            assert (a.accepted + b.accepted, a.duplicates + b.duplicates) == (300, 300), round_
            assert a.rejected == b.rejected == []
        stored = await rig.samples()
        assert len(stored) == 8 * 300
        assert len({(r["stream_id"], r["seq"]) for r in stored}) == 8 * 300


@pytest.mark.postgres
async def test_a_batch_waits_while_compaction_holds_its_stream(postgres_url: str) -> None:
    """Compaction moves a stream's samples into blocks under the stream row's lock (store/cold.py); ingest
    takes the same lock before it reads the watermark and the segments, else a re-send checked between
    compaction's commit and its own reads would find its samples in neither and store them again."""
    import asyncpg

    async with make_rig(postgres_url) as rig:
        bid = "acme-p1"
        batch = [wire(bid, k, BASE_MS + k * 1000) for k in range(10)]
        assert (await rig.service.ingest(rig.device, batch, received_ms=RECEIVED)).accepted == 10
        sid = await rig.stream(bid)
        conn = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
        try:
            tx = conn.transaction()
            await tx.start()
            await conn.fetch("SELECT cold_ts_ms FROM streams WHERE id = $1 FOR UPDATE", sid)  # as compaction
            resend = asyncio.create_task(rig.service.ingest(rig.device, batch, received_ms=RECEIVED))
            await asyncio.sleep(0.5)
            assert not resend.done()  # waiting for the stream
            await tx.commit()
            res = await asyncio.wait_for(resend, 10)
        finally:
            await conn.close()
        assert (res.accepted, res.duplicates) == (0, 10)


# --- migration 0012 ---------------------------------------------------------------------------------------

_OLD_SAMPLES = sa.table(
    "samples", sa.column("stream_id"), sa.column("seq"), sa.column("ts_ms"), sa.column("data", sa.LargeBinary)
)


def _per_stream(rows: list[tuple[int, int, int, bytes]]) -> dict[int, tuple[int, str]]:
    """stream → (samples, sha256 over seq, ts and data in ts order)."""
    out: dict[int, tuple[int, str]] = {}
    for sid, group in itertools.groupby(sorted(rows), key=lambda r: r[0]):
        h = hashlib.sha256()
        n = 0
        for _, seq, ts, data in sorted(group, key=lambda r: r[2]):
            h.update(seq.to_bytes(8, "little", signed=True) + ts.to_bytes(8, "little", signed=True) + data)
            n += 1
        out[sid] = (n, h.hexdigest())
    return out


async def test_migration_0012_converts_the_per_sample_table_without_loss(database_url: str) -> None:
    url = database_url
    backend = "postgres" if url.startswith("postgresql") else "sqlite"
    async with make_rig(url) as rig:  # tenant, devices, batteries and their streams, at head
        sids = [await rig.stream("acme-p1"), await rig.stream("acme-p2")]
    await asyncio.to_thread(migrate, url, "0011", True)
    # a database as revision 0011 left it: samples in the per-sample table (PostgreSQL: monthly partitions,
    # two months here), written with raw SQL as the old ingest did, 1,234 on one stream, 37 on another
    rng = np.random.default_rng(7)
    rows: list[tuple[int, int, int, bytes]] = []
    for sid, n, t0 in ((sids[0], 1234, BASE_MS - 40 * 86_400_000), (sids[1], 37, BASE_MS)):
        for k in range(n):
            ts = t0 + k * 61_000 + int(rng.integers(0, 1000))
            rows.append((sid, 10 + k, ts, packing.validate_and_pack(wire("b", 10 + k, ts), RECEIVED)[3]))
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            if backend == "postgres":
                for lo, hi, name in _months(rows):
                    await conn.exec_driver_sql(
                        f"CREATE TABLE {name} PARTITION OF samples FOR VALUES FROM ({lo}) TO ({hi})"
                    )
            await conn.execute(
                sa.insert(_OLD_SAMPLES),
                [{"stream_id": a, "seq": b, "ts_ms": c, "data": d} for a, b, c, d in rows],
            )
    finally:
        await engine.dispose()
    before = _per_stream(rows)
    assert before[sids[0]][0] == 1234 and before[sids[1]][0] == 37

    await asyncio.to_thread(migrate, url, "head")
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            assert "samples" not in await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            segs = (await conn.execute(sa.select(sample_segments))).mappings().all()
            got = []
            for g in segs:
                decoded = segments.decode(g["data"])
                assert len(decoded) == g["n"] <= 500
                assert (g["ts_min"], g["ts_max"]) == (decoded[0].ts_ms, decoded[-1].ts_ms)
                assert (g["seq_min"], g["seq_max"]) == (
                    min(r.seq for r in decoded),
                    max(r.seq for r in decoded),
                )
                got += [(g["stream_id"], r.seq, r.ts_ms, r.data) for r in decoded]
            assert _per_stream(got) == before
            # and read back as every reader reads them
            read = [
                (sid, r.seq, r.ts_ms, r.data)
                for sid in sids
                for r in await cold.read_raw(conn, [sid], 0, 2**62)
            ]
            assert _per_stream(read) == before
    finally:
        await engine.dispose()

    # and back: the per-sample table again (PostgreSQL: with its partitions), the same samples
    await asyncio.to_thread(migrate, url, "0011", True)
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            back = (await conn.execute(sa.select(_OLD_SAMPLES))).all()
            assert "sample_segments" not in await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
    finally:
        await engine.dispose()
    assert _per_stream([tuple(r) for r in back]) == before


def _months(rows: list[tuple[int, int, int, bytes]]) -> set[tuple[int, int, str]]:
    from datetime import UTC, datetime

    out = set()
    for _, _, ts, _ in rows:
        d = datetime.fromtimestamp(ts / 1000, UTC)
        start = datetime(d.year, d.month, 1, tzinfo=UTC)
        end = datetime(d.year + (d.month == 12), d.month % 12 + 1, 1, tzinfo=UTC)
        out.add(
            (
                int(start.timestamp() * 1000),
                int(end.timestamp() * 1000),
                f"samples_{d.year:04d}_{d.month:02d}",
            )
        )
    return out


async def test_retention_trims_a_hot_segment_straddling_its_cutoff(database_url: str) -> None:
    """Retention keeps a tenant's raw samples N days: a hot segment (not compacted yet, e.g. a backfill)
    holding samples on both sides of the cutoff loses the older ones only."""
    async with make_rig(database_url) as rig:
        now = int(time.time() * 1000)
        # one batch, one segment: every 10 min from 36 h ago to about 12 h ago
        batch = [wire("acme-p1", k, now - 36 * 3_600_000 + 300_000 + k * 600_000) for k in range(144)]
        res = await rig.service.ingest(rig.device, batch, received_ms=now)
        assert (res.accepted, res.rejected) == (144, [])
        await p.set_retention(rig.store, "acme", 1)
        assert await p.apply_retention(rig.store) == 72  # older than a day: the first 12 h
        stored = await rig.samples()
        assert sorted(r["seq"] for r in stored) == list(range(72, 144))
        assert all(
            r["data"] == packing.validate_and_pack(wire("acme-p1", r["seq"], r["ts_ms"]), now)[3]
            for r in stored
        )
        # the kept half is still known: re-sent, it is a duplicate
        res = await rig.service.ingest(rig.device, batch[72:], received_ms=now)
        assert (res.accepted, res.duplicates) == (0, 72)


@pytest.mark.postgres
async def test_hot_payloads_are_lz4_compressed_on_postgresql(postgres_url: str) -> None:
    """pglz compressing every segment as it was written was a tenth of the machine's CPU at full ingest
    (migration 0014); the payload still comes back byte for byte."""
    await asyncio.to_thread(migrate, postgres_url, "head")
    payload = segments.encode(
        np.arange(500, dtype=np.int64), np.arange(500, dtype=np.int64) * 1000, [bytes(range(74))] * 500
    )
    engine = make_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sample_segments.insert().values(
                    stream_id=1, seq_min=0, seq_max=499, ts_min=0, ts_max=499_000, n=500, data=payload
                )
            )
            method, back = (
                await conn.execute(sa.text("SELECT pg_column_compression(data), data FROM sample_segments"))
            ).one()
        assert method == "lz4" and bytes(back) == payload
    finally:
        await engine.dispose()
