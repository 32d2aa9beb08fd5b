"""Compressed history blocks in a running server, over HTTP, on both backends: compacted samples read back
exactly (export, history), re-sends of compacted samples stay duplicates, late samples merge into their
block, retention drops whole blocks, and migration 0009 converts (and restores) a database without loss."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sys
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import command
from sqlalchemy import func, select
from tests.server.conftest import World, client, sample

from trackingbms.server import provisioning as p
from trackingbms.server.db import _alembic_config, make_engine, sample_blocks, sample_segments, streams
from trackingbms.server.store import blocks, cold, packing

HOUR_MS = 3_600_000


async def _ingest(w: World, token: str, batch: list[dict[str, Any]]) -> dict[str, Any]:
    async with client(w.base_url, token) as c:
        r = await c.post("/api/v1/ingest", json={"samples": batch})
        assert r.status_code == 200, r.text
        return r.json()


async def _csv(w: World, battery_id: str) -> str:
    async with client(w.base_url, w.a.admin) as c:
        r = await c.get(
            f"/api/v1/batteries/{battery_id}/export.csv",
            params={"from": "2020-01-01T00:00:00Z", "to": packing.ms_to_ts(packing.MIN_TS_MS * 2)},
        )
        assert r.status_code == 200, r.text
        return r.text


async def _history(w: World, battery_id: str, frm: str, to: str) -> dict[str, Any]:
    async with client(w.base_url, w.a.admin) as c:
        r = await c.get(
            f"/api/v1/batteries/{battery_id}/history", params={"from": frm, "to": to, "points": 1000}
        )
        assert r.status_code == 200, r.text
        return r.json()


async def _counts(url: str) -> tuple[int, int]:
    """(hot samples, samples in blocks)"""
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            hot = (await conn.execute(select(func.coalesce(func.sum(sample_segments.c.n), 0)))).scalar_one()
            cold_n = (await conn.execute(select(func.coalesce(func.sum(sample_blocks.c.n), 0)))).scalar_one()
        return int(hot), int(cold_n)
    finally:
        await engine.dispose()


def _mixed(battery_id: str, n: int, start_s: float, seq0: int = 0) -> list[dict[str, Any]]:
    """``n`` samples one second apart from ``start_s`` seconds ago; most partial, as gateways poll."""
    out = []
    for i in range(n):
        s = sample(battery_id, seq0 + i, seconds_ago=start_s - i, current_a=round(-4.5 + (i % 9) * 0.013, 3))
        if i % 3:
            for k in ("cells_mv", "temps_c", "balancing", "faults", "fault_code"):
                s.pop(k)
        if i % 7 == 0:
            s["cells_mv"] = [3300 + (i + c) % 11 for c in range(16)]
            s["errors"] = {"0x95": "timeout"}
        out.append(s)
    return out


async def test_compacted_samples_read_back_exactly(world: World) -> None:
    a = world.a
    bid = a.batteries[0]
    batch = _mixed(bid, 3000, start_s=4 * 3600)  # 4 h ago: older than the hot window
    fresh = _mixed(bid, 20, start_s=60, seq0=10_000)  # inside it
    r = await _ingest(world, a.device, batch[:1500])
    r2 = await _ingest(world, a.device, batch[1500:] + fresh)
    assert r["accepted"] + r2["accepted"] == 3020
    frm, to = batch[100]["ts"], batch[400]["ts"]  # 300 s: raw 1-second buckets
    csv_before = await _csv(world, bid)
    hist_before = await _history(world, bid, frm, to)

    res = await p.compact(world.database_url, HOUR_MS)
    assert res == {"samples": 3000, "blocks": 2, "duplicates": 0}  # 2048 + 952
    assert await _counts(world.database_url) == (20, 3000)  # the hot hour stays rows
    assert await _csv(world, bid) == csv_before  # every field of every sample, partial ones as partial
    assert await _history(world, bid, frm, to) == hist_before
    assert len(csv_before.splitlines()) == 1 + 3020

    # pages (as export and Parquet read them) cover every sample once, in order, across blocks and hot rows
    async with p.open_store(world.database_url) as store:
        ts = store.tenant(await store.tenant_by_name("acme"))
        paged = [row async for page in ts.export_rows(bid, 0, 2**62, page=500) for row in page]
        whole = [row async for page in ts.export_rows(bid, 0, 2**62) for row in page]
    assert paged == whole and len(whole) == 3020
    assert [r[0] for r in whole] == sorted(r[0] for r in whole)

    # a second pass has nothing to do
    assert await p.compact(world.database_url, HOUR_MS) == {"samples": 0, "blocks": 0, "duplicates": 0}


async def test_resent_compacted_samples_are_duplicates_and_late_ones_merge(world: World) -> None:
    a = world.a
    bid = a.batteries[0]
    batch = _mixed(bid, 600, start_s=3 * 3600)
    assert (await _ingest(world, a.device, batch))["accepted"] == 600
    await p.compact(world.database_url, HOUR_MS)
    assert await _counts(world.database_url) == (0, 600)
    csv_before = await _csv(world, bid)

    # a gateway re-sends what it had not seen acknowledged: all duplicates, nothing stored twice
    again = await _ingest(world, a.device, batch[100:300])
    assert (again["accepted"], again["duplicates"], again["rejected"]) == (0, 200, [])
    assert await _counts(world.database_url) == (0, 600)
    assert await _csv(world, bid) == csv_before

    # another sample with a compacted sample's ts is refused by name, as in the hot table
    clash = dict(batch[50], seq=99_999)
    r = await _ingest(world, a.device, [clash])
    assert r["accepted"] == 0
    assert r["rejected"] == [
        {"index": 0, "error": "ts: another sample of this battery (seq 50) has the same ts"}
    ]

    # a backfill after an outage: new samples inside the block's time range are accepted, then merged
    late = [
        dict(s, seq=5000 + i, ts=packing.ms_to_ts(packing.parse_ts_ms(s["ts"]) + 500))
        for i, s in enumerate(batch[:10])
    ]
    r = await _ingest(world, a.device, late)
    assert (r["accepted"], r["duplicates"]) == (10, 0)
    assert await _counts(world.database_url) == (10, 600)
    res = await p.compact(world.database_url, HOUR_MS)
    assert (res["samples"], res["duplicates"]) == (10, 0)
    assert await _counts(world.database_url) == (0, 610)
    rows = (await _csv(world, bid)).splitlines()
    assert len(rows) == 1 + 610
    # and once merged, a re-send of the late ones is a duplicate too
    r = await _ingest(world, a.device, late)
    assert (r["accepted"], r["duplicates"]) == (0, 10)
    assert await _counts(world.database_url) == (0, 610)
    assert len(set(rows)) == len(rows)  # no sample twice


async def test_retention_deletes_whole_blocks(world: World) -> None:
    a = world.a
    bid = a.batteries[0]
    old = _mixed(bid, 100, start_s=3 * 86400)
    new = _mixed(bid, 100, start_s=2 * 3600, seq0=1000)
    await _ingest(world, a.device, old)
    await _ingest(world, a.device, new)
    await p.compact(world.database_url, HOUR_MS)
    assert await _counts(world.database_url) == (0, 200)
    await p.set_retention(world.database_url, "acme", 1)
    assert await p.apply_retention(world.database_url) == 100
    assert await _counts(world.database_url) == (0, 100)
    assert len((await _csv(world, bid)).splitlines()) == 1 + 100


async def _checksum(url: str) -> tuple[int, str]:
    """(samples, sha256 over every field of every sample in stream / ts order), hot and cold together."""
    engine = make_engine(url)
    h = hashlib.sha256()
    n = 0
    try:
        async with engine.connect() as conn:
            sids = (await conn.execute(select(streams.c.id).order_by(streams.c.id))).scalars().all()
            for sid in sids:
                for r in await cold.read_raw(conn, [sid], 0, 2**62):
                    h.update(orjson.dumps(packing.to_sample(str(sid), r.seq, r.ts_ms, r.data)))
                    n += 1
    finally:
        await engine.dispose()
    return n, h.hexdigest()


async def test_migration_converts_samples_to_blocks_without_loss(world: World) -> None:
    a, b = world.a, world.b
    await _ingest(world, a.device, _mixed(a.batteries[0], 2500, start_s=5 * 3600))
    await _ingest(world, a.device, _mixed(a.batteries[1], 300, start_s=3 * 3600))
    await _ingest(world, b.device, _mixed(b.batteries[0], 50, start_s=600))  # in the hot window: stays rows
    await p.compact(world.database_url, HOUR_MS)
    assert await _counts(world.database_url) == (50, 2800)
    after_compaction = await _checksum(world.database_url)
    world.server.stop()

    engine = make_engine(world.database_url)

    async def alembic(fn: Any, rev: str) -> None:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: fn(_alembic_config(c), rev))

    # the per-sample table of revisions 0001-0010
    samples = sa.table(
        "samples",
        sa.column("stream_id"),
        sa.column("seq"),
        sa.column("ts_ms"),
        sa.column("data", sa.LargeBinary),
    )
    try:
        # back to the previous layout: every sample a row again, the same samples
        await alembic(command.downgrade, "0008")
        async with engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(samples))).scalar_one() == 2850
            rows = (
                await conn.execute(
                    select(samples.c.stream_id, samples.c.seq, samples.c.ts_ms, samples.c.data).order_by(
                        samples.c.stream_id, samples.c.ts_ms
                    )
                )
            ).all()
        h = hashlib.sha256()
        for sid, seq, ts_ms, data in rows:
            h.update(orjson.dumps(packing.to_sample(str(sid), seq, ts_ms, data)))
        assert (len(rows), h.hexdigest()) == after_compaction
        # and forward: the migration converts the old samples, keeps the hot hour as rows
        await alembic(command.upgrade, "head")
    finally:
        await engine.dispose()
    assert await _counts(world.database_url) == (50, 2800)
    assert await _checksum(world.database_url) == after_compaction


def test_blocks_of_a_real_day_stay_small() -> None:
    rows = [
        blocks.Row(i, 1_790_000_000_000 + i * 1000, packing.validate_and_pack(s, 1_800_000_000_000)[3])
        for i, s in enumerate(_mixed("p", 10, 100))
    ]
    assert blocks.decode(blocks.encode(rows)) == rows


CLI = [sys.executable, "-c", "from trackingbms.cli import main; main()"]


async def test_a_killed_compaction_loses_and_duplicates_nothing(world: World, tmp_path: Path) -> None:
    a = world.a
    for k, bid in enumerate(a.batteries[:2]):
        batch = _mixed(bid, 6000, start_s=8 * 3600)
        for i in range(0, len(batch), 1000):
            assert (await _ingest(world, a.device, batch[i : i + 1000]))["accepted"] == 1000, k
    before = await _checksum(world.database_url)
    assert before[0] == 12_000
    args = ["server", "compact", "--json", "--database-url", world.database_url, "--data-dir", str(tmp_path)]
    # SIGKILL the command as soon as its first block is committed: mid-run, with rows and blocks both there
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    for _ in range(1200):
        hot, cold_n = await _counts(world.database_url)
        if cold_n:
            break
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    hot, cold_n = await _counts(world.database_url)
    assert 0 < cold_n < 12_000  # the kill landed between two of its transactions (or inside one)
    assert hot + cold_n == 12_000
    assert await _checksum(world.database_url) == before
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out)["duplicates"] == 0
    assert await _counts(world.database_url) == (0, 12_000)
    assert await _checksum(world.database_url) == before
