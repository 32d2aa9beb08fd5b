"""The alarm service: runs the analytics engine and the alarm rules (both pure, :mod:`trackingbms.analytics`)
over every stored sample, and the no-data rules on a timer.

Samples come from the alarm feed (server/alarm_feed.py): the one process holding the database's
``alarm-feed`` lease reads every newly stored hot segment back, whichever process (API server, ingest
worker) stored it; ingest only says "stored" (:meth:`AlarmService.stored`, no I/O) so that the holder reads
at once, and evaluation never slows an ingest reply. Every process with the service on competes for the
lease; the others stand by and take over when the holder stops (at once) or dies (within the lease's
time). Each battery's estimator and evaluators are fed in ts order (older or repeated samples are
skipped: re-sends and backfill never raise twice). Per battery two evaluators run: one on the samples'
clock (sample rules, BMS fault bits, analytics findings) and one on the server's clock for the no-data
rules (``offline_s`` / ``link_down_s`` / ``asleep_s``, kept apart by connectivity).

State lives in memory and is saved to ``battery_analytics`` on every tick (and loaded on first use), with
the feed's cursor in the lease, so a restart or a takeover resumes without re-reading history. Samples can
also be handed over directly (:meth:`AlarmService.submit`: tests, benchmarks).

Rule edits: the API process that makes one rebuilds its evaluators at once; every other process running
the service (another API server, the MQTT / JetStream ingest workers) polls a fingerprint of the rule
rows every ``rules_check_s`` (one small grouped query, portable to SQLite and PostgreSQL, no schema change)
and rebuilds the evaluators of a tenant whose fingerprint moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Any, Protocol

import orjson

from trackingbms.analytics.alarms import (
    AlarmEvaluator,
    AlarmEvent,
    Rule,
    fault_rule,
    health_metrics,
    sample_metrics,
)
from trackingbms.analytics.cells import SERIES
from trackingbms.analytics.connectivity import connectivity
from trackingbms.server.alarm_feed import LEASE_NAME, FeedCursor, holder_name
from trackingbms.server.notify import Notifier
from trackingbms.server.store import FeedSegment, Store, packing, segments
from trackingbms.server.store.alarms import disabled_faults, resolve_rules

log = logging.getLogger(__name__)


class Accepted(Protocol):
    """A sample as the ingest path hands it over once validated and packed (its time already parsed).
    When it also has ``series`` (the :data:`~trackingbms.analytics.cells.SERIES` values the packing
    computed), its cells' min and max are taken from there."""

    @property
    def battery_id(self) -> str: ...
    @property
    def ts_ms(self) -> int: ...
    @property
    def wire(self) -> dict[str, Any]: ...


#: (ts_ms, wire sample, the packing's SERIES values or None) as _feed takes them
_Row = tuple[int, dict[str, Any], Any]
#: the row of a packed sample, fetched at C level (the grouping runs once per ingested sample)
_PACKED_ROW = attrgetter("ts_ms", "wire", "series")
_CELL_MIN, _CELL_MAX = SERIES.index("cell_min_mv"), SERIES.index("cell_max_mv")


def _cells_range(series: Any) -> tuple[int, int] | None:
    """(min, max) cell mV from the packing's series values, None when it has none to give."""
    if type(series) is not tuple or len(series) != len(SERIES):
        return None
    lo, hi = series[_CELL_MIN], series[_CELL_MAX]
    return None if lo is None or hi is None else (lo, hi)


def _inside(bounds: dict[str, tuple[float, float]], metric: str, lo: Any, hi: Any) -> bool:
    b = bounds.get(metric)
    return b is None or (b[0] <= lo and hi <= b[1])  # NaN is never inside


def _run_metrics(
    rows: list[_Row], wires: list[dict[str, Any]], bounds: dict[str, tuple[float, float]]
) -> tuple[dict[str, tuple[Any, Any]], dict[str, Any]] | None:
    """Over a run of samples (none with a fault bit): per sample metric its (lowest, highest) value, the
    ones :func:`sample_metrics` would give sample by sample (the temperatures' from every sensor of the
    run, a range that holds both extremes' values), and each metric's value in the last sample that had
    it; None as soon as a range is outside the idle rules' ``bounds`` (the run goes sample by sample).
    Column by column (C-level min / max), not a dict per sample; the cheap columns first."""
    ranges: dict[str, tuple[Any, Any]] = {}
    socs = [x for s in wires if (x := s.get("soc_pct")) is not None]
    if socs:
        ranges["soc_pct"] = r = (min(socs), max(socs))
        if not _inside(bounds, "soc_pct", *r):
            return None
    temps = list(itertools.chain.from_iterable(t for s in wires if (t := s.get("temps_c"))))
    if temps:
        ranges["max_temp_c"] = ranges["min_temp_c"] = r = (min(temps), max(temps))
        if not (_inside(bounds, "max_temp_c", *r) and _inside(bounds, "min_temp_c", *r)):
            return None
    cells_col = [s.get("cells_mv") for s in wires]
    if any(cells_col):
        series = [r[2] for r in rows]
        los = his = None
        if all(cells_col) and all(type(x) is tuple and len(x) == len(SERIES) for x in series):
            los, his = [x[_CELL_MIN] for x in series], [x[_CELL_MAX] for x in series]
        if los is None or his is None or None in los or None in his:  # found here
            given = [_cells_range(x) or (min(c), max(c)) for x, c in zip(series, cells_col, strict=True) if c]
            los, his = [lo for lo, _ in given], [hi for _, hi in given]
        spreads = list(map(operator.sub, his, los))
        ranges["max_cell_mv"] = (min(his), max(his))
        ranges["min_cell_mv"] = (min(los), max(los))
        ranges["cell_spread_mv"] = (min(spreads), max(spreads))
    latest: dict[str, Any] = {}
    for k in range(len(rows) - 1, -1, -1):  # the last sample, unless it was partial
        for metric, value in sample_metrics(wires[k], _cells_range(rows[k][2]))[0].items():
            latest.setdefault(metric, value)
        if len(latest) == len(ranges):
            break
    return ranges, latest


def _unreadable(g: FeedSegment, e: Exception) -> None:
    log.error("alarm feed: segment %d of battery %s unreadable, skipped: %r", g.id, g.battery_id, e)


#: metric of each no-data rule → the connectivity state it counts
NO_DATA_METRICS = {"offline_s": "offline", "link_down_s": "link-down", "asleep_s": "asleep"}


@dataclass
class _Battery:
    pk: int
    tenant_id: int
    site_id: int
    battery_id: str
    name: str
    estimator: Any
    samples_ev: AlarmEvaluator
    presence_ev: AlarmEvaluator
    disabled_faults: set[str]
    t_last_ms: int | None = None
    r_baseline_mohm: float | None = None
    chemistry: str | None = None  # as its admin set it (the battery profile): picks the built-in thresholds
    dirty: bool = False
    health: dict[str, Any] | None = field(default=None)


def _split(rules: list[Rule]) -> tuple[list[Rule], list[Rule]]:
    presence = [r for r in rules if r.metric in NO_DATA_METRICS]
    return [r for r in rules if r.metric not in NO_DATA_METRICS], presence


class AlarmService:
    def __init__(
        self,
        store: Store,
        *,
        interval_s: float = 30.0,
        notifier: Notifier | None = None,
        max_backlog: int = 500_000,
        rules_check_s: float = 5.0,
        lease_ttl_s: float = 10.0,
        feed_poll_s: float = 0.25,
        feed_page: int = 200,
        gap_wait_s: float = 30.0,
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        self.rules_check_s = rules_check_s
        #: the alarm feed: the lease (renewed every third of ``lease_ttl_s``; a dead holder's is taken over
        #: after it), how often the holder looks for segments other processes stored, segments per read
        self.lease_ttl_s = lease_ttl_s
        self.feed_poll_s = feed_poll_s
        self.feed_page = feed_page
        self.gap_wait_s = gap_wait_s
        self.holder = holder_name()
        self.held = False  # this process holds the lease: it evaluates
        self._standing_by = False  # said so in the log already
        self._epoch: int | None = None
        self._cursor: FeedCursor | None = None
        self._wake = asyncio.Event()
        self.evaluated = 0  # samples run through the rules (metrics; the bench waits on it)
        self._marks: dict[int, tuple[int, ...]] | None = None
        self.notifier = notifier
        self.queue: asyncio.Queue[tuple[int, Sequence[dict[str, Any] | Accepted]]] = asyncio.Queue()
        #: samples waiting for evaluation, bounded: past it a burst (a gateway draining days of backlog
        #: faster than the engine runs) is stored but not analysed, and counted in ``skipped``
        self.backlog = 0
        self.max_backlog = max_backlog
        self.skipped = 0
        self._skipping = 0  # skipped since evaluation last fell behind (said in the log once caught up)
        self.batteries: dict[tuple[int, str], _Battery] = {}
        self._rules: dict[int, list[Any]] = {}
        #: per tenant, battery pk → (chemistry, rated capacity Ah) as set by its admin
        self._profiles: dict[int, dict[int, tuple[str | None, float | None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()  # one of worker / tick / rule change at a time on the evaluators

    # ---- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._feeder()),
            asyncio.create_task(self._worker()),
            asyncio.create_task(self._ticker()),
            asyncio.create_task(self._rules_watcher()),
        ]
        if self.notifier is not None:
            self._tasks.append(asyncio.create_task(self.notifier.run()))

    async def stop(self) -> None:
        # cancelled only between evaluations (each runs under the lock): a cut between evaluating a battery's
        # samples and recording its alarms would leave an alarm raised in memory but not in the table
        async with self._lock:
            for t in self._tasks:
                t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        started, self._tasks = bool(self._tasks), []
        try:
            if started and not self.held:  # stopped before its first look: evaluate what it can
                await self._hold()
            if self.held:
                for _ in range(100):  # what was stored up to now, then the lease goes to the next process
                    if await self._feed_once() < self.feed_page:
                        break
            await self._drain()
            await self._save()
            if self.held:
                await self.store.release_lease(LEASE_NAME, self.holder)
                self.held = False
                log.info("alarm service: alarm-feed lease released (another process may take it over)")
        except Exception as e:  # the database going away at shutdown: the state of the last tick stands
            log.warning("alarm service: could not save its state at stop: %s", e)
        if self.notifier is not None:
            await self.notifier.flush()

    # ---- the feed ---------------------------------------------------------------------------------
    def stored(self) -> None:
        """Ingest stored samples: the holder reads them now rather than at its next look (no I/O here)."""
        self._wake.set()

    async def _feeder(self) -> None:
        renew_at = 0.0
        while True:
            try:
                if time.monotonic() >= renew_at:
                    await self._hold()
                    renew_at = time.monotonic() + self.lease_ttl_s / 3
                if not self.held:
                    await asyncio.sleep(max(0.0, renew_at - time.monotonic()))
                    continue
                self._wake.clear()
                if await self._feed_once() >= self.feed_page:
                    continue  # more waiting: read on
                wait_s = min(self.feed_poll_s, max(0.0, renew_at - time.monotonic()))
                with contextlib.suppress(TimeoutError):  # not wait_for: 3.11's can swallow a cancel
                    async with asyncio.timeout(max(0.01, wait_s)):
                        await self._wake.wait()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database away for a moment: try again shortly, keep the state
                log.exception("alarm feed failed")
                await asyncio.sleep(1.0)

    async def _hold(self) -> None:
        """Take or renew the lease; on taking it, start from the cursor the last holder saved."""
        lease = await self.store.take_lease(
            LEASE_NAME, self.holder, int(time.time() * 1000), int(self.lease_ttl_s * 1000)
        )
        if lease is None:
            if self.held:
                log.warning("alarm service: another process holds the alarm feed now; this one stands by")
                self._forget()
            elif not self._standing_by:
                log.info("alarm service: another process evaluates the stored samples; this one stands by")
            self._standing_by = True
            self.held = False
            return
        self._standing_by = False
        if not self.held or lease.epoch != self._epoch:
            self._forget()  # someone else may have evaluated meanwhile: state comes from the database
            self._epoch = lease.epoch
            self._cursor = FeedCursor(lease.cursor or 0, self.gap_wait_s)
            log.info(
                "alarm service: this process now evaluates every stored sample (alarm-feed lease taken; %s)",
                "from the oldest hot samples"
                if not lease.cursor
                else f"resuming after segment id {lease.cursor}",
            )
        self.held = True

    def _forget(self) -> None:
        self.batteries.clear()
        self._rules.clear()
        self._profiles.clear()
        self._marks = None
        self._cursor = None

    async def _feed_once(self) -> int:
        """Evaluate the segments stored since the last look (and late ones that filled a gap); → how many
        new ones were read (a full page: more are waiting)."""
        feed = self._cursor
        if feed is None:
            return 0
        new = await self.store.segments_after(feed.top, self.feed_page)
        now_s = time.monotonic()
        waiting = feed.waiting(now_s)
        late = await self.store.segments_in(waiting[:1000]) if waiting else []
        if late or new:
            try:
                await self._evaluate_segments(late + new)
            except Exception:  # not read again and again: one bad segment must not stop every alarm
                log.exception(
                    "alarm evaluation failed on segments %d to %d", (late + new)[0].id, (late + new)[-1].id
                )
        # marked read once evaluated: a stop cutting in before reads them again (older ts are skipped)
        feed.saw([g.id for g in late], now_s)
        feed.saw([g.id for g in new], now_s)
        return len(new)

    async def _evaluate_segments(self, segs: list[FeedSegment]) -> None:
        """A page of segments decoded at once (:func:`~packing.unpack_many` groups rows by layout across
        segments: a gateway posting every second stores segments of a few samples each) and evaluated."""
        parts: list[tuple[FeedSegment, list[int], list[bytes]]] = []
        for g in segs:
            try:
                parts.append((g, segments.keys(g.payload)[1].tolist(), segments.datas(g.payload)))
            except Exception as e:
                _unreadable(g, e)
        try:
            wires = packing.unpack_many([d for *_, datas in parts for d in datas])
        except Exception:  # a damaged row somewhere: segment by segment, to skip only its own
            wires = []
            for g, tss, datas in list(parts):
                try:
                    wires += packing.unpack_many(datas)
                except Exception as e:
                    _unreadable(g, e)
                    parts.remove((g, tss, datas))
        by_battery: dict[tuple[int, str], list[_Row]] = {}
        found: dict[tuple[int, str], tuple[int, int, str]] = {}
        k = 0
        for g, tss, datas in parts:
            key = (g.tenant_id, g.battery_id)
            found[key] = (g.battery_pk, g.site_id, g.name)
            rows = by_battery.get(key)
            if rows is None:
                by_battery[key] = rows = []
            rows.extend(zip(tss, wires[k : k + len(datas)], itertools.repeat(None)))
            k += len(datas)
        await self._evaluate(by_battery, found)

    # ---- input ------------------------------------------------------------------------------------
    def submit(self, tenant_id: int, samples: Sequence[dict[str, Any] | Accepted]) -> None:
        """Samples the ingest service stored, evaluated soon after, off the request: each either in wire
        form (its ``ts`` is parsed here) or as the ingest path packed it (anything with ``battery_id``,
        ``ts_ms`` and ``wire``, e.g. :class:`~trackingbms.server.store.PackedSample`: nothing parsed
        twice)."""
        if not samples:
            return
        if self.backlog + len(samples) > self.max_backlog:
            if not self._skipping:
                log.warning(
                    "alarm evaluation behind by %d samples: newer ones are stored but not analysed "
                    "until it catches up",
                    self.backlog,
                )
            self._skipping += len(samples)
            self.skipped += len(samples)
            return
        if self._skipping:
            log.warning(
                "alarm evaluation caught up: %d samples were stored but not analysed (%d since start)",
                self._skipping,
                self.skipped,
            )
            self._skipping = 0
        self.backlog += len(samples)
        self.queue.put_nowait((tenant_id, samples))

    async def _worker(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                await self._process([item])
            except Exception:  # evaluation must never stop; the next batch is tried afresh
                log.exception("alarm evaluation failed")
            finally:
                self.backlog -= len(item[1])

    async def _drain(self) -> None:
        while not self.queue.empty():
            item = self.queue.get_nowait()
            try:
                await self._process([item])
            finally:
                self.backlog -= len(item[1])

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if not self.held:
                continue  # the holder ticks
            try:
                await self.tick()
            except Exception:
                log.exception("alarm tick failed")

    async def _rules_watcher(self) -> None:
        while True:
            try:
                if self.held:
                    await self.check_rules()
            except Exception:
                log.exception("rule check failed")
            await asyncio.sleep(self.rules_check_s)

    async def check_rules(self) -> list[int]:
        """Rebuild the evaluators of every tenant whose rules another process changed; → those tenants."""
        marks = await self.store.rule_marks()
        seen, self._marks = self._marks, marks
        if seen is None:
            return []  # the first look: the rules are read as batteries are met
        changed = [t for t in marks.keys() | seen.keys() if marks.get(t) != seen.get(t)]
        for tenant_id in changed:
            await self.rules_changed(tenant_id, mark=False)
        return changed

    # ---- batteries ---------------------------------------------------------------------------------
    async def _rule_rows(self, tenant_id: int) -> list[Any]:
        if tenant_id not in self._rules:
            self._rules[tenant_id] = await self.store.rule_rows(tenant_id)
        return self._rules[tenant_id]

    async def _profile(self, tenant_id: int, pk: int) -> tuple[str | None, float | None]:
        if tenant_id not in self._profiles:
            self._profiles[tenant_id] = await self.store.battery_profiles(tenant_id)
        return self._profiles[tenant_id].get(pk, (None, None))

    async def _battery(self, tenant_id: int, battery_id: str, pk: int, site_id: int, name: str) -> _Battery:
        key = (tenant_id, battery_id)
        b = self.batteries.get(key)
        if b is not None:
            return b
        from trackingbms.analytics.estimator import BatteryEstimator

        rows = await self._rule_rows(tenant_id)
        chemistry, rated_ah = await self._profile(tenant_id, pk)
        sample_rules, presence_rules = _split(resolve_rules(rows, site_id, pk, chemistry))
        t_last_ms, state = await self.store.load_analytics(pk)
        est = samples_ev = presence_ev = None
        baseline = None
        if state is not None:
            try:
                est = BatteryEstimator.from_state(state["estimator"])
                samples_ev = AlarmEvaluator.from_state(state["samples"], sample_rules)
                presence_ev = AlarmEvaluator.from_state(state["presence"], presence_rules)
                baseline = state.get("r_baseline_mohm")
            except (KeyError, TypeError, ValueError) as e:  # an older state format: start afresh
                log.warning(
                    "battery %s: saved analytics state not usable (%s), starting afresh", battery_id, e
                )
                est = samples_ev = presence_ev = None
        b = _Battery(
            pk,
            tenant_id,
            site_id,
            battery_id,
            name,
            est or BatteryEstimator(battery_id=battery_id),
            samples_ev or AlarmEvaluator(sample_rules),
            presence_ev or AlarmEvaluator(presence_rules),
            disabled_faults(rows, site_id, pk),
            t_last_ms if est is not None else None,
            baseline,
            chemistry=chemistry,
        )
        b.estimator.set_profile(chemistry, rated_ah)
        self.batteries[key] = b
        return b

    async def rules_changed(self, tenant_id: int, *, mark: bool = True) -> None:
        """A rule of the tenant changed: rebuild its evaluators keeping their state; alarms of rules that
        no longer apply are cleared. ``mark``: this process made the change, so its own rule check need
        not rebuild again."""
        if mark and self._marks is not None:
            self._marks[tenant_id] = (await self.store.rule_marks()).get(tenant_id)  # type: ignore[assignment]
        async with self._lock:
            self._rules.pop(tenant_id, None)
            self._profiles.pop(tenant_id, None)  # a battery's profile may be what changed
            rows = await self._rule_rows(tenant_id)
            now = time.time()
            for b in [b for b in self.batteries.values() if b.tenant_id == tenant_id]:
                b.chemistry, rated_ah = await self._profile(tenant_id, b.pk)
                b.estimator.set_profile(b.chemistry, rated_ah)
                sample_rules, presence_rules = _split(resolve_rules(rows, b.site_id, b.pk, b.chemistry))
                b.disabled_faults = disabled_faults(rows, b.site_id, b.pk)
                gone: list[AlarmEvent] = []
                for old, new_rules, attr in (
                    (b.samples_ev, sample_rules, "samples_ev"),
                    (b.presence_ev, presence_rules, "presence_ev"),
                ):
                    keep = [r for r in new_rules]
                    # fault rules met on the way stay unless switched off
                    ids = {r.id for r in keep}
                    keep += [
                        r for rid, r in old.rules.items()
                        if rid.startswith("fault:") and rid not in ids and rid not in b.disabled_faults
                    ]  # fmt: skip
                    new = AlarmEvaluator.from_state(old.to_state(), keep)
                    for a in old.active():
                        if a["rule_id"] not in new.rules:
                            gone.append(
                                AlarmEvent("cleared", a["rule_id"], a["severity"], now, None,
                                           "cleared: the rule was removed or disabled", False)
                            )  # fmt: skip
                    setattr(b, attr, new)
                b.dirty = True
                if gone:
                    await self._record(b, gone)

    # ---- evaluation --------------------------------------------------------------------------------
    async def _process(self, items: list[tuple[int, Sequence[dict[str, Any] | Accepted]]]) -> None:
        by_battery: dict[tuple[int, str], list[_Row]] = {}
        for tenant_id, samples in items:
            per: dict[str, list[_Row]] = {}  # by battery_id within the tenant: no key tuple per sample
            for s in samples:
                if type(s) is dict:  # wire form: its time not parsed yet
                    try:
                        bid, row = s["battery_id"], (packing.parse_ts_ms(s["ts"]), s, None)
                    except (KeyError, packing.SampleError):
                        continue
                else:
                    bid = s.battery_id  # type: ignore[union-attr]
                    try:
                        row = _PACKED_ROW(s)
                    except AttributeError:  # no series given
                        row = (s.ts_ms, s.wire, None)  # type: ignore[union-attr]
                rows = per.get(bid)
                if rows is None:
                    per[bid] = [row]
                else:
                    rows.append(row)
            for bid, rows in per.items():
                by_battery.setdefault((tenant_id, bid), []).extend(rows)
        keys = {k for k in by_battery if k not in self.batteries}
        await self._evaluate(by_battery, await self.store.battery_keys(keys))

    async def _evaluate(
        self,
        by_battery: dict[tuple[int, str], list[_Row]],
        found: dict[tuple[int, str], tuple[int, int, str]],
    ) -> None:
        """Each battery's rows through its estimator and rules (``found``: (pk, site id, name) of those not
        met yet)."""
        async with self._lock:
            for key, rows in by_battery.items():
                if key not in self.batteries:
                    if key not in found:
                        continue  # not a battery of that tenant (the store refused these)
                    pk, site_id, name = found[key]
                    await self._battery(key[0], key[1], pk, site_id, name)
                b = self.batteries[key]
                self.evaluated += len(rows)
                events = self._feed(b, rows)
                if events:
                    await self._record(b, events)
                await asyncio.sleep(0)  # CPU work in the server's loop: let requests in between

    def _feed(self, b: _Battery, rows: list[_Row]) -> list[AlarmEvent]:
        """``(ts_ms, wire sample, the packing's series values or None)`` rows of one battery through its
        estimator and sample rules, in ts order (older or repeated ts skipped). The hot path of ingest, so
        the run is taken at once where it can be: the estimator's :meth:`update_run`, and the rules'
        :meth:`~AlarmEvaluator.absorb_quiet` when no fault bit is set in the run and its per-metric
        ranges stay inside every idle rule's bounds; else sample by sample (``evaluate``, itself with a
        fast path for quiet samples). Same events and saved state either way (tests/server/
        test_alarm_batches.py)."""
        rows.sort(key=itemgetter(0))
        kept: list[_Row] = []
        t_last_ms = b.t_last_ms
        for row in rows:
            if t_last_ms is None or row[0] > t_last_ms:
                kept.append(row)
                t_last_ms = row[0]
        if not kept:
            return []
        b.t_last_ms = t_last_ms
        b.dirty = True
        # the estimator does not read the rules, nor they it: each takes the whole run in turn
        b.estimator.update_run([(ts_ms / 1000, s) for ts_ms, s, _ in kept])
        ev = b.samples_ev
        wires = [s for _, s, _ in kept]
        faults_col = [s.get("faults") for s in wires]
        if not any(faults_col):
            known = faults_col.count(None) != len(faults_col)
            bounds = ev.quiet_bounds(faults_known=known)
            if bounds is not None:
                found = _run_metrics(kept, wires, bounds)
                if found is not None and ev.absorb_quiet(*found, faults_known=known):
                    return []
        events: list[AlarmEvent] = []
        for (ts_ms, s, series), faults in zip(kept, faults_col, strict=True):
            metrics, where = sample_metrics(s, _cells_range(series))
            if faults:  # a fault bit met for the first time gets its rule
                for name in faults:
                    m = f"fault:{name}"
                    if m not in ev.rules and m not in b.disabled_faults:
                        ev.add_rule(fault_rule(name))
            events += ev.evaluate(ts_ms / 1000, metrics, where, faults_known=faults is not None)
        return events

    async def _record(self, b: _Battery, events: list[AlarmEvent]) -> None:
        items = await self.store.record_events(b.tenant_id, b.pk, events)
        for i in items:  # acknowledged through another process: no more reminders from here either
            if i["event"] == "repeat" and i["status"] == "acknowledged":
                b.samples_ev.acknowledge(i["rule_id"], i["acknowledged_by"] or "", time.time())
                b.presence_ev.acknowledge(i["rule_id"], i["acknowledged_by"] or "", time.time())
                b.dirty = True
        if self.notifier is not None:
            self.notifier.submit(b.tenant_id, [i for i in items if i["notify"]])

    async def tick(self) -> None:
        """The no-data rules over every battery, the analytics findings of batteries with new samples,
        and saving state."""
        await self._drain()
        now_ms = int(time.time() * 1000)
        rows = await self.store.presence_rows()
        async with self._lock:
            for r in rows:
                if r.last_received_ms is None:
                    continue  # never reported: nothing to miss yet
                b = await self._battery(r.tenant_id, r.battery_id, r.id, r.site_id, r.name)
                link_state = None
                if r.heartbeat:
                    for hb in orjson.loads(r.heartbeat).get("batteries") or ():
                        if hb.get("battery_id") == r.battery_id:
                            link_state = hb.get("link_state")
                state = connectivity(
                    now_ms,
                    poll_interval_s=r.poll_interval_s,
                    last_received_ms=r.last_received_ms,
                    received_ts_ms=r.received_ts_ms,
                    heartbeat_ms=r.heartbeat_ms,
                    link_state=link_state,
                    offline_timeout_s=self.store.offline_timeout_s,
                    grace_s=self.store.online_grace_s,
                )
                silent_s = (now_ms - r.last_received_ms) / 1000
                metrics = {m: (silent_s if state == st else 0.0) for m, st in NO_DATA_METRICS.items()}
                events = b.presence_ev.evaluate(now_ms / 1000, metrics)
                if events:
                    b.dirty = True
                    await self._record(b, events)
            for b in self.batteries.values():
                if not b.dirty or b.estimator.t_last is None:
                    continue
                b.health = b.estimator.health()
                r_now = b.health.get("resistance_mohm")
                if b.r_baseline_mohm is None and r_now:
                    b.r_baseline_mohm = r_now
                metrics, where = health_metrics(b.health, b.r_baseline_mohm)
                events = b.samples_ev.evaluate(b.estimator.t_last, metrics, where)
                if events:
                    await self._record(b, events)
            await self._save()

    async def _save(self) -> None:
        rows = []
        for b in self.batteries.values():
            if not b.dirty:
                continue
            rows.append(
                {
                    "battery_pk": b.pk,
                    "t_last_ms": b.t_last_ms,
                    "state": {
                        "estimator": b.estimator.to_state(),
                        "samples": b.samples_ev.to_state(),
                        "presence": b.presence_ev.to_state(),
                        "r_baseline_mohm": b.r_baseline_mohm,
                    },
                    "health": b.health,
                }
            )
            b.dirty = False
        await self.store.save_analytics(rows)
        # the state saved covers every segment up to the cursor: ids are marked read only once evaluated
        if self.held and self._cursor is not None:
            if not await self.store.save_lease_cursor(LEASE_NAME, self.holder, self._cursor.cursor):
                log.warning("alarm service: the alarm feed's lease was lost; this one stands by")
                self.held = False
                self._forget()

    async def acknowledge(self, tenant_id: int, battery_id: str, rule_id: str, by: str) -> None:
        """An alarm was acknowledged through the API: no more reminders for it."""
        async with self._lock:
            b = self.batteries.get((tenant_id, battery_id))
            if b is None:
                return
            for ev in (b.samples_ev, b.presence_ev):
                ev.acknowledge(rule_id, by, time.time())
            b.dirty = True
