"""The durable queue at its exact edges: when the budget pass runs on its own, how many rows it leaves (worked
out pass by pass from the documented policy), the SQLite settings that make a put durable, acked rows
deleted when no local history is kept, and the chunking of large settlements.

Small queues, no sleeps: bench/mutation.py runs this file with tests/gateway/test_queue.py against every
mutant of queue.py.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from trackingbms.gateway.queue import ACKED, PARKED, PENDING, DurableQueue, encode_sample
from trackingbms.model import Reading, Sample

TINY_MB = 0.001  # 1048 bytes: smaller than an empty database, so every budget pass has work to do


def reading(i: int = 0) -> Reading:
    return Reading(voltage_v=52.0 + i / 1000, soc_pct=80.0)


def thinned(seqs: list[int]) -> list[int]:
    """What the documented policy leaves of ``seqs`` (all unsent) under a budget no row count can meet: pass
    after pass, every other one of the oldest quarter (at least 2) is dropped, until fewer than 8 remain."""
    while len(seqs) >= 8:
        oldest = seqs[: max(2, len(seqs) // 4)]
        gone = set(oldest[1::2])
        seqs = [s for s in seqs if s not in gone]
    return seqs


def test_state_codes_and_settings(tmp_path: Path) -> None:
    assert (PENDING, ACKED, PARKED) == (0, 1, 2)
    q = DurableQueue(tmp_path, disk_budget_mb=1.5, local_history_h=2.5)
    assert (q.budget_bytes, q.local_history_h) == (1_572_864, 2.5)
    assert q.path == tmp_path / "queue.sqlite3"
    assert q.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert q.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: each commit fsyncs the WAL
    assert q.db.execute("PRAGMA journal_size_limit").fetchone()[0] == 8_388_608
    assert (q.thinned_total, q.acked_pruned_for_budget) == (0, 0)
    assert q.status() == {
        "queue_depth": 0,
        "oldest_queued_ts": None,
        "disk_used_pct": q.disk_used_pct(),
        "dead_letter_count": 0,
        "parked_count": 0,
    }
    q.put("p", reading())
    q.close()
    assert (
        not (tmp_path / "queue.sqlite3-wal").exists() or (tmp_path / "queue.sqlite3-wal").stat().st_size == 0
    )


def test_the_wire_body_leads_with_identity_and_leaves_out_via(tmp_path: Path) -> None:
    sample = Sample.from_reading(reading(), battery_id="pack-1", seq=42, via="lan")
    body = encode_sample(sample)
    assert body.startswith(b'{"battery_id":"pack-1","seq":42,')
    assert orjson.loads(body) == {k: v for k, v in sample.to_wire().items() if k != "via"}


def test_the_budget_pass_runs_on_its_own_every_50_samples(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, disk_budget_mb=TINY_MB)
    first = q.put("p", reading()).seq
    for i in range(1, 49):
        q.put("p", reading(i))
    assert len(q.seqs_of("p")) == 49 and q.thinned_total == 0  # not yet
    q.put("p", reading(49))  # the 50th put
    left = thinned(list(range(first, first + 50)))
    assert q.seqs_of("p") == left and q.thinned_total == 50 - len(left)
    assert q.get_kv("thinned_total") == str(50 - len(left))
    q.put_many("p", [reading(i) for i in range(49)])  # the count starts again from zero
    assert len(q.seqs_of("p")) == len(left) + 49
    q.close()
    again = DurableQueue(tmp_path, disk_budget_mb=TINY_MB)
    assert again.thinned_total == 50 - len(left)  # the count survives a restart
    again.close()


def test_a_pass_leaves_exactly_what_the_policy_says(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, disk_budget_mb=TINY_MB)
    seqs = [s.seq for s in q.put_many("p", [reading(i) for i in range(40)])]  # 40 < 50: no pass yet
    acked = q.fetch(newest=0, oldest=3)
    q.ack([r.id for r in acked])
    removed = q.enforce_budget()
    left = thinned(seqs[3:])
    assert removed == {"acked": 3, "thinned": 37 - len(left)}
    assert q.seqs_of("p") == left and q.acked_pruned_for_budget == 3
    assert q.enforce_budget() == {"acked": 0, "thinned": 0}  # fewer than 8 left: nothing sensible to thin
    # 7 unsent are never thinned, 8 are
    small = DurableQueue(tmp_path / "seven", disk_budget_mb=TINY_MB)
    small.put_many("p", [reading(i) for i in range(7)])
    assert small.enforce_budget() == {"acked": 0, "thinned": 0}
    eight = DurableQueue(tmp_path / "eight", disk_budget_mb=TINY_MB)
    s8 = [s.seq for s in eight.put_many("p", [reading(i) for i in range(8)])]
    assert eight.enforce_budget() == {"acked": 0, "thinned": 1}
    assert eight.seqs_of("p") == [s8[0], *s8[2:]]  # of the oldest 2, the second went


def test_parked_samples_are_thinned_like_pending_ones(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, disk_budget_mb=TINY_MB)
    seqs = [s.seq for s in q.put_many("p", [reading(i) for i in range(12)])]
    q.settle(parked=q.fetch(newest=0, oldest=6))
    assert q.enforce_budget()["thinned"] == 12 - len(thinned(seqs))
    assert q.seqs_of("p") == thinned(seqs)


def test_a_queue_under_budget_is_left_alone(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, disk_budget_mb=10)
    q.put_many("p", [reading(i) for i in range(60)])  # a pass ran after the 60 puts, with nothing to do
    q.ack([r.id for r in q.fetch(newest=0, oldest=10)])
    assert q.enforce_budget() == {"acked": 0, "thinned": 0}
    assert len(q.seqs_of("p")) == 60 and 0 < q.disk_used_pct() < 80


def test_the_budget_warning_is_logged_once_a_minute(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    q = DurableQueue(tmp_path, disk_budget_mb=TINY_MB)
    with caplog.at_level(logging.WARNING, logger="trackingbms.gateway.queue"):
        q.enforce_budget()
        q.enforce_budget()
    uses = [r for r in caplog.records if "of its disk budget" in r.getMessage()]
    assert len(uses) == 1 and "(0.0 MB)" in uses[0].getMessage()
    assert q.disk_used_pct() == round(100 * q.disk_used_bytes() / 1048, 2) > 100


def test_without_local_history_acked_samples_leave_at_once(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, local_history_h=0)
    first = q.put_many("p", [reading(i) for i in range(1000)])[0].seq
    batch = q.fetch(newest=0, oldest=1000)
    q.ack([r.id for r in batch[:950]])  # more than one chunk of 900
    assert q.seqs_of("p") == list(range(first + 950, first + 1000))
    assert q.history(since=None) == [orjson.loads(r.body) for r in batch[950:]]


def test_acked_samples_stay_for_the_local_history(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, local_history_h=1)
    q.put_many("p", [reading(i) for i in range(100)])
    batch = q.fetch(newest=0, oldest=100)
    q.settle(acked=[r.id for r in batch[:50]], parked=batch[50:60], dead=[(batch[60], "bad")])
    states = dict(q.db.execute("SELECT acked, count(*) FROM samples GROUP BY acked").fetchall())
    assert states == {ACKED: 50, PARKED: 10, PENDING: 39}
    assert q.pending_count() == 39 and q.parked_count() == 10 and q.dead_letter_count() == 1
    assert q.dead_letters()[0]["seq"] == batch[60].seq
    q.settle()  # nothing to settle: nothing changes
    assert q.pending_count() == 39


def test_parked_alone_is_settled_and_unparked_in_full_by_default(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    q.put_many("p", [reading(i) for i in range(3)])
    q.settle(parked=q.fetch(newest=0, oldest=2))
    assert (q.parked_count(), q.pending_count()) == (2, 1)

    async def unpark() -> int:
        n = await q.aunpark()  # not a probe: every parked sample of every battery
        await q.aclose()
        return n

    assert asyncio.run(unpark()) == 2


def test_history_returns_at_most_1000_by_default(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    q.put_many("p", [reading(i) for i in range(1001)])
    assert len(q.history(since=None)) == 1000

    async def history() -> int:
        n = len(await q.ahistory(since=None))
        await q.aclose()
        return n

    assert asyncio.run(history()) == 1000


def _fail_on(q: DurableQueue, event: str) -> None:
    """Make the next ``event`` (INSERT / UPDATE / DELETE) on samples fail inside the transaction, as a full
    disk would."""
    q.db.execute(
        f"CREATE TEMP TRIGGER fail_{event.lower()} BEFORE {event} ON samples "
        "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )


def _heal(q: DurableQueue, event: str) -> None:
    q.db.execute(f"DROP TRIGGER fail_{event.lower()}")


def test_a_failed_write_rolls_back_whole_and_leaves_the_queue_usable(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, local_history_h=1)
    first = q.put_many("p", [reading(i) for i in range(10)])[0].seq
    # put: nothing of the batch, no seq used up
    _fail_on(q, "INSERT")
    with pytest.raises(sqlite3.IntegrityError, match="disk on fire"):
        q.put_many("p", [reading(i) for i in range(3)])
    _heal(q, "INSERT")
    assert q.next_seq("p") == first + 10 and q.put("p", reading()).seq == first + 10
    # settle: neither the acks nor the dead letters of the batch
    batch = q.fetch(newest=0, oldest=4)
    _fail_on(q, "UPDATE")
    with pytest.raises(sqlite3.IntegrityError, match="disk on fire"):
        q.settle(acked=[batch[0].id], dead=[(batch[1], "bad")])
    _heal(q, "UPDATE")
    assert (q.pending_count(), q.dead_letter_count()) == (11, 0)
    q.settle(dead=[(batch[1], "bad"), (batch[2], "bad")])
    # replay: the dead letters stay dead letters
    _fail_on(q, "INSERT")
    with pytest.raises(sqlite3.IntegrityError, match="disk on fire"):
        q.replay_dead_letters()
    _heal(q, "INSERT")
    assert q.dead_letter_count() == 2 and q.replay_dead_letters() == 2
    # the budget pass: nothing thinned, nothing counted
    tiny = DurableQueue(tmp_path / "tiny", disk_budget_mb=TINY_MB)
    tiny.put_many("p", [reading(i) for i in range(10)])
    _fail_on(tiny, "DELETE")
    with pytest.raises(sqlite3.IntegrityError, match="disk on fire"):
        tiny.enforce_budget()
    _heal(tiny, "DELETE")
    assert (len(tiny.seqs_of("p")), tiny.thinned_total, tiny.get_kv("thinned_total")) == (10, 0, None)
    assert tiny.enforce_budget()["thinned"] == 10 - len(thinned(list(range(10))))


def test_the_relay_pages_unsent_samples_and_settles_receipt_runs(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, local_history_h=1)
    a = [s.seq for s in q.put_many("a", [reading(i) for i in range(6)])]
    b = [s.seq for s in q.put_many("b", [reading(i) for i in range(3)])]
    rows = q.fetch(newest=0, oldest=9)
    q.settle(acked=[rows[0].id], parked=[rows[1]])  # a[0] acked, a[1] parked: neither is offered
    page = q.unsent(limit=3)
    assert [(r.battery_id, r.seq) for r in page] == [("a", a[2]), ("a", a[3]), ("a", a[4])]
    assert [r.seq for r in q.unsent(after_id=page[-1].id)] == [a[5], *b]
    assert len(q.unsent()) == 7 and q.unsent(after_id=rows[-1].id) == []
    # a receipt: a[0..3] (a[0] already acked: not counted again; a[1] parked: settled), and b[2] alone
    assert q.settle_relayed({"a": [[a[0], a[3]]], "b": [[b[2], b[2]]]}) == 4
    assert [r.seq for r in q.unsent()] == [a[4], a[5], b[0], b[1]]
    assert q.parked_count() == 0 and len(q.history(since=None)) == 9  # kept for the local history

    async def relay() -> tuple[int, int]:
        n = len(await q.aunsent(after_id=0, limit=2))
        m = await q.asettle_relayed({"b": [[b[0], b[1]]]})
        await q.aclose()
        return n, m

    assert asyncio.run(relay()) == (2, 2)


def test_relayed_samples_leave_at_once_without_local_history(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, local_history_h=0)
    a = [s.seq for s in q.put_many("a", [reading(i) for i in range(4)])]
    assert q.settle_relayed({"a": [[a[1], a[2]]]}) == 2
    assert q.seqs_of("a") == [a[0], a[3]]
    _fail_on(q, "DELETE")
    with pytest.raises(sqlite3.IntegrityError, match="disk on fire"):
        q.settle_relayed({"a": [[a[0], a[0]]]})
    _heal(q, "DELETE")
    assert q.seqs_of("a") == [a[0], a[3]] and q.settle_relayed({"a": [[a[0], a[3]]]}) == 2


def test_history_newest_takes_the_last_ones_in_time_order(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    seqs = [s.seq for s in q.put_many("p", [reading(i) for i in range(5)])]
    assert [h["seq"] for h in q.history(since=None, limit=2, newest=True)] == seqs[3:]
    assert [h["seq"] for h in q.history(since=None, limit=2)] == seqs[:2]

    async def newest() -> list[int]:
        got = [h["seq"] for h in await q.ahistory(since=None, limit=3, newest=True)]
        await q.aclose()
        return got

    assert asyncio.run(newest()) == seqs[2:]


def test_the_relay_page_defaults(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    q.put_many("p", [reading(i) for i in range(501)])
    page = q.unsent()
    assert (len(page), page[0].id) == (500, 1)  # from the very first row, 500 at a time

    async def pages() -> tuple[int, int, int]:
        first = await q.aunsent()
        rest = await q.aunsent(after_id=first[-1].id)
        await q.aclose()
        return len(first), first[0].id, len(rest)

    assert asyncio.run(pages()) == (500, 1, 1)


def test_a_lane_of_zero_takes_nothing(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    seqs = [s.seq for s in q.put_many("p", [reading(i) for i in range(5)])]
    first = q.fetch(newest=0, oldest=1)
    assert [r.seq for r in q.fetch(newest=0, oldest=1, exclude={first[0].id})] == [seqs[1]]
    assert [r.seq for r in q.fetch(newest=1, oldest=0)] == [seqs[4]]
    assert [r.seq for r in q.fetch(newest=1, oldest=0, exclude={first[0].id})] == [seqs[4]]


def test_disk_use_counts_live_pages_and_the_wal(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    q.put_many("p", [reading(i) for i in range(50)])
    pages = (
        q.db.execute("PRAGMA page_count").fetchone()[0] - q.db.execute("PRAGMA freelist_count").fetchone()[0]
    )
    wal = (tmp_path / "queue.sqlite3-wal").stat().st_size
    assert wal > 0 and q.disk_used_bytes() == pages * q.db.execute("PRAGMA page_size").fetchone()[0] + wal


def test_close_waits_for_queued_work_and_leaves_an_empty_wal(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    q.put("p", reading())
    reader = sqlite3.connect(
        tmp_path / "queue.sqlite3"
    )  # another connection: the WAL is not deleted on close
    reader.execute("SELECT count(*) FROM samples").fetchone()
    slow = q._worker.submit(time.sleep, 0.3)  # work queued on the queue's thread, as the a* methods do
    q.close()
    assert slow.done()  # close let it finish before the connection went
    assert (tmp_path / "queue.sqlite3-wal").stat().st_size == 0  # checkpointed and truncated
    reader.close()


def test_budget_pruning_counts_add_up_over_passes(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, disk_budget_mb=TINY_MB)
    q.put_many("p", [reading(i) for i in range(4)])
    q.ack([r.id for r in q.fetch(newest=0, oldest=4)])
    assert q.enforce_budget() == {"acked": 4, "thinned": 0}
    q.put_many("p", [reading(i) for i in range(2)])
    q.ack([r.id for r in q.fetch(newest=0, oldest=2)])
    assert q.enforce_budget() == {"acked": 2, "thinned": 0}
    assert q.acked_pruned_for_budget == 6


def test_the_warning_starts_at_80_percent_and_repeats_after_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    q = DurableQueue(tmp_path)
    q.put("p", reading())
    q.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    q.budget_bytes = q.disk_used_bytes() * 5 // 4  # page-sized use: exactly 80.00 %
    with caplog.at_level(logging.WARNING, logger="trackingbms.gateway.queue"):
        assert q.enforce_budget() == {"acked": 0, "thinned": 0}
        assert q.disk_used_pct() == 80.0
        q._last_budget_warning = time.monotonic() - 60.5  # the last one was a minute ago
        q.enforce_budget()
    assert sum("of its disk budget" in r.getMessage() for r in caplog.records) == 2


def test_defaults_state_dir_and_one_worker(tmp_path: Path) -> None:
    import threading

    q = DurableQueue(tmp_path / "new" / "state")  # parents made as needed
    assert (q.budget_bytes, q.local_history_h) == (200 * 1024 * 1024, 24.0)
    assert (tmp_path / "new" / "state" / "gateway.lock").exists()

    def job() -> str:
        time.sleep(0.05)
        return threading.current_thread().name

    async def together() -> set[str]:
        names = await asyncio.gather(*(q.run(job) for _ in range(3)))
        await q.aclose()
        return set(names)

    assert len(asyncio.run(together())) == 1  # one thread: no two transactions ever interleave


def test_pages_by_seq_and_the_seq_range(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path)
    assert q.seq_range("p") == (None, None)
    seqs = [s.seq for s in q.put_many("p", [reading(i) for i in range(5)])]
    q.put("other", reading())
    page, more = q.page_by_seq("p", seqs[1], 2)
    assert ([h["seq"] for h in page], more) == (seqs[1:3], True)
    page, more = q.page_by_seq("p", seqs[3], 2)
    assert ([h["seq"] for h in page], more) == (seqs[3:], False)  # exactly the last two: nothing follows
    assert q.page_by_seq("p", seqs[4] + 1, 2) == ([], False)
    assert q.seq_range("p") == (seqs[0], seqs[4] + 1)
