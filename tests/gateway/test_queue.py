"""The durable queue on a real SQLite file: seq rules, ack, dead letters, budget policy, persistence."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from trackingbms.gateway.queue import DurableQueue
from trackingbms.model import Reading, format_ts


def reading(i: int = 0, **extra) -> Reading:
    return Reading(voltage_v=52.0 + i / 1000, current_a=-1.5, soc_pct=80.0, cells_mv=[3300] * 16, **extra)


def test_seq_strictly_increasing_across_restarts(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    seqs = [q.put("pack-1", reading(i)).seq for i in range(5)]
    base = seqs[0]
    assert seqs == list(range(base, base + 5))
    # a new battery starts at Unix ms, so even a lost state dir never reuses a seq sent before
    assert time.time() * 1000 - 60_000 < base <= time.time() * 1000
    assert q.put("pack-2", reading()).seq >= base  # per battery
    q.ack([row.id for row in q.fetch(newest=0, oldest=100)])
    q.close()
    q = DurableQueue(tmp_path)  # acked samples are gone from the queue, their seqs are never reused
    assert q.pending_count() == 0
    assert q.put("pack-1", reading()).seq == base + 5
    q.close()


def test_partial_reading_stays_partial(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    q.put("pack-1", Reading(voltage_v=51.2, errors={"0x95": "timeout after 180 ms"}))
    body = orjson.loads(q.fetch(newest=1, oldest=0)[0].body)
    assert body["voltage_v"] == 51.2 and body["errors"] == {"0x95": "timeout after 180 ms"}
    assert "cells_mv" not in body and "current_a" not in body and "via" not in body
    assert body["battery_id"] == "pack-1" and body["seq"] > 0


def test_fetch_live_lane_and_backlog_lane(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    b = q.put_many("pack-1", [reading(i) for i in range(1000)])[0].seq
    batch = q.fetch(newest=3, oldest=5)
    assert [r.seq - b for r in batch] == [999, 998, 997, 0, 1, 2, 3, 4]
    again = q.fetch(newest=3, oldest=5, exclude={r.id for r in batch})
    assert [r.seq - b for r in again] == [996, 995, 994, 5, 6, 7, 8, 9]
    small = DurableQueue(tmp_path / "small")
    b = small.put_many("p", [reading(i) for i in range(4)])[0].seq
    assert [r.seq - b for r in small.fetch(newest=3, oldest=5)] == [3, 2, 1, 0]  # no sample twice


def test_ack_keeps_history_and_dead_letter_keeps_reason(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    b = q.put_many("pack-1", [reading(i) for i in range(10)])[0].seq
    batch = q.fetch(newest=0, oldest=10)
    q.ack([r.id for r in batch[:9]])
    q.dead_letter([(batch[9], "cells_mv: 17 cells, pack has 16")])
    assert q.pending_count() == 0
    assert q.dead_letters() == [
        {"battery_id": "pack-1", "seq": b + 9, "ts": batch[9].ts, "reason": "cells_mv: 17 cells, pack has 16"}
    ]
    history = q.history(since=None, battery_id="pack-1")
    assert [s["seq"] - b for s in history] == list(range(9))


def test_history_since_and_prune(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, local_history_h=1)
    now = datetime.now(UTC)
    old = [reading(i, ts=now - timedelta(hours=2, seconds=-i)) for i in range(3)]
    new = [reading(i, ts=now - timedelta(seconds=10 - i)) for i in range(3)]
    b = q.put_many("pack-1", old + new)[0].seq
    since = (now - timedelta(minutes=1)).isoformat()
    assert [s["seq"] - b for s in q.history(since=since.replace("+00:00", "Z"))] == [3, 4, 5]
    q.ack([r.id for r in q.fetch(newest=0, oldest=10)])
    assert q.prune_history() == 3
    assert [s["seq"] - b for s in q.history(since=None)] == [3, 4, 5]


def test_disk_budget_thins_oldest_unsent_never_the_newest(tmp_path: Path, caplog) -> None:
    q = DurableQueue(tmp_path, disk_budget_mb=0.5)
    b = q.put("pack-1", reading()).seq + 1
    for _ in range(40):
        q.put_many("pack-1", [reading(i) for i in range(100)])
    q.enforce_budget()  # also applied on its own while writing
    assert q.disk_used_pct() <= 100
    assert q.thinned_total > 0
    assert len(q.seqs_of("pack-1")) + q.thinned_total == 4001  # every removal is counted
    seqs = q.seqs_of("pack-1")
    assert seqs[-1] - b == 3999  # newest kept
    tail = seqs[-500:]
    assert tail == list(range(b + 3500, b + 4000))  # the newest stretch is untouched
    assert "disk budget reached" in caplog.text
    # the policy survives restarts (reported count is persisted) and seqs still grow
    q.close()
    q = DurableQueue(tmp_path, disk_budget_mb=0.5)
    assert q.thinned_total > 0
    assert q.put("pack-1", reading()).seq == b + 4000


def _filled(tmp_path: Path, acked: int, pending: int) -> tuple[int, int]:
    """A queue of ``acked`` acknowledged then ``pending`` unsent samples, under no budget; returns the first
    seq and the bytes used once checkpointed (what a budget is compared with)."""
    q = DurableQueue(tmp_path, disk_budget_mb=1000)
    b = q.put_many("pack-1", [reading(i) for i in range(acked)])[0].seq
    q.ack([r.id for r in q.fetch(newest=0, oldest=acked)])
    q.put_many("pack-1", [reading(i) for i in range(pending)])
    q.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    used = q.disk_used_bytes()
    q.close()
    return b, used


def _rows(q: DurableQueue) -> dict[int, int]:
    """seq → acked state of every row still in the queue."""
    return dict(q.db.execute("SELECT seq, acked FROM samples ORDER BY seq").fetchall())


def test_acked_samples_go_first_and_alone_when_that_is_enough(tmp_path: Path) -> None:
    b, used = _filled(tmp_path, acked=600, pending=300)
    q = DurableQueue(tmp_path, disk_budget_mb=used * 0.8 / 1048576)  # 600 of 900 rows would free ~2/3
    removed = q.enforce_budget()
    assert q.disk_used_bytes() <= q.budget_bytes
    assert removed["thinned"] == 0 and q.thinned_total == 0, (
        "unsent samples thinned while acked ones remained"
    )
    rows = _rows(q)
    assert [s - b for s, st in rows.items() if st == 0] == list(range(600, 900))  # every unsent one kept
    deleted = sorted(set(range(b, b + 600)) - set(rows))
    assert removed["acked"] == len(deleted) > 0
    # oldest acknowledged first: whatever acked rows remain are newer than every deleted one
    assert all(s > deleted[-1] for s, st in rows.items() if st == 1)


def test_nothing_unsent_is_thinned_while_an_acked_sample_remains(tmp_path: Path) -> None:
    b, used = _filled(tmp_path, acked=300, pending=900)
    q = DurableQueue(tmp_path, disk_budget_mb=used * 0.45 / 1048576)  # the acked quarter is not enough
    removed = q.enforce_budget()
    assert q.disk_used_bytes() <= q.budget_bytes
    rows = _rows(q)
    assert removed["acked"] == 300 and not [s for s, st in rows.items() if st == 1]  # every acked one went
    assert q.thinned_total == removed["thinned"] > 0
    # reconcile what is left with the documented policy, pass by pass: each pass drops every other one of
    # the oldest quarter of the unsent samples (the oldest one stays); the count is thinned_total
    expected = list(range(b + 300, b + 1200))
    dropped = 0
    while dropped < q.thinned_total:
        oldest = expected[: max(2, len(expected) // 4)]
        gone = set(oldest[1::2])
        expected = [s for s in expected if s not in gone]
        dropped += len(gone)
    assert dropped == q.thinned_total
    assert [s for s, st in rows.items() if st == 0] == expected
    assert expected[-300:] == list(range(b + 900, b + 1200))  # the newest third untouched


def test_one_gateway_per_state_dir(tmp_path: Path) -> None:
    import pytest

    from trackingbms.gateway.queue import StateDirBusy

    q = DurableQueue(tmp_path)
    with pytest.raises(StateDirBusy, match="another gateway is running"):
        DurableQueue(tmp_path)
    q.close()
    DurableQueue(tmp_path).close()  # free again once the first one is gone


def test_parked_samples_wait_out_of_the_queue_and_come_back(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    b = q.put_many("pack-x", [reading(i) for i in range(5)])[0].seq
    q.put("pack-1", reading())
    batch = q.fetch(newest=0, oldest=10)
    q.settle(acked=[batch[5].id], parked=batch[:5])
    assert q.pending_count() == 0 and q.parked_count() == 5 and q.parked_batteries() == {"pack-x"}
    assert q.unpark(probe=True) == 1  # one probe per battery: the oldest
    assert [r.seq - b for r in q.fetch(newest=0, oldest=10)] == [0]
    assert q.unpark("pack-x") == 4
    assert [r.seq - b for r in q.fetch(newest=0, oldest=10)] == [0, 1, 2, 3, 4]
    assert q.parked_count() == 0


def test_replay_dead_letters_moves_them_back_once(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    b = q.put_many("pack-1", [reading(i) for i in range(3)])[0].seq
    q.dead_letter(
        [(r, "battery_id: 'pack-1' is not assigned to this device") for r in q.fetch(newest=0, oldest=3)]
    )
    assert q.pending_count() == 0 and q.dead_letter_count() == 3
    assert q.replay_dead_letters() == 3
    assert q.dead_letter_count() == 0
    assert [r.seq - b for r in q.fetch(newest=0, oldest=10)] == [0, 1, 2]  # same seqs, same order
    assert q.replay_dead_letters() == 0


def test_async_wrappers_commit_on_the_queue_thread(tmp_path: Path) -> None:
    import asyncio
    import sqlite3
    import threading

    async def main() -> None:
        q = DurableQueue(tmp_path)
        sample = await q.aput("pack-1", reading())
        # taken = committed: another connection sees it as soon as aput returns
        other = sqlite3.connect(tmp_path / "queue.sqlite3")
        assert other.execute("SELECT seq FROM samples").fetchall() == [(sample.seq,)]
        other.close()
        worker = await q.run(lambda: threading.current_thread().name)
        assert worker.startswith("tbms-queue") and worker != threading.current_thread().name
        batch = await q.afetch(newest=1, oldest=0)
        await q.asettle(acked=[batch[0].id])
        assert (await q.astatus())["queue_depth"] == 0
        assert [s["seq"] for s in await q.ahistory(since=None)] == [sample.seq]
        await q.aclose()

    asyncio.run(main())
    DurableQueue(tmp_path).close()  # the lock was released


def test_every_async_wrapper_passes_its_arguments_through(tmp_path: Path) -> None:
    """The gateway only ever uses the a* coroutines: each must reach the same work with the same arguments."""
    import asyncio

    async def main() -> None:
        q = DurableQueue(tmp_path, local_history_h=1)
        now = datetime.now(UTC)
        b = (await q.aput("pack-1", reading(0, ts=now - timedelta(seconds=30)))).seq
        for i in range(1, 4):
            await q.aput("pack-1", reading(i, ts=now - timedelta(seconds=30 - i)))
        await q.aput("pack-2", reading(9, ts=now - timedelta(seconds=20)))
        assert q.next_seq("pack-1") == b + 4 and q.next_seq("nobody") is None
        assert await q.apending_count() == 5
        assert q.oldest_pending_ts() == format_ts(now - timedelta(seconds=30))
        first = await q.afetch(newest=0, oldest=1)
        assert [r.seq for r in await q.afetch(newest=1, oldest=1, exclude={first[0].id})] == [
            q.next_seq("pack-2") - 1,
            b + 1,
        ]
        # the server's verdict: one acked, two parked (pack-1), one dead
        batch = await q.afetch(newest=0, oldest=5)
        await q.asettle(acked=[batch[0].id], parked=batch[1:3], dead=[(batch[3], "cells_mv: too many")])
        status = await q.astatus()
        assert status == {
            "queue_depth": 1,
            "oldest_queued_ts": batch[4].ts,
            "disk_used_pct": q.disk_used_pct(),
            "dead_letter_count": 1,
            "parked_count": 2,
        }
        assert 0 < status["disk_used_pct"] == round(100 * q.disk_used_bytes() / q.budget_bytes, 2)
        assert await q.aunpark("pack-2") == 0 and await q.aunpark("pack-1", probe=True) == 1
        assert await q.aunpark("pack-1") == 1
        since = format_ts(now - timedelta(seconds=29))
        assert [s["seq"] - b for s in await q.ahistory(since=since, battery_id="pack-1", limit=1)] == [1]
        assert [s["seq"] - b for s in await q.ahistory(since=since, battery_id="pack-1")] == [1, 2]
        assert len(await q.ahistory(since=since)) == 3  # and pack-2's
        assert len(await q.ahistory(since=None)) == 4  # the dead one left the samples table
        await q.aset_kv("config_version", "7")
        assert q.get_kv("config_version") == "7"
        await q.ahousekeeping()
        assert q.seqs_of("pack-1") == [b, b + 1, b + 2]
        await q.aclose()

    asyncio.run(main())
