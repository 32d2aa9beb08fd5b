"""The repository layer. Every read and write of tenant data goes through a :class:`TenantStore`, which
puts the tenant into every query itself; routes never filter by tenant on their own.

Devices write through :meth:`Store.ingest` / :meth:`Store.heartbeat` with the device identity that
their token resolved to (which carries its tenant).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Integer,
    LargeBinary,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trackingbms.analytics.cells import cell_stats, power_w
from trackingbms.analytics.connectivity import connectivity
from trackingbms.server import codec, security
from trackingbms.server.db import (
    STATE_FIELDS,
    STATE_JSON_FIELDS,
    batteries,
    battery_state,
    device_tokens,
    devices,
    is_sqlite,
    rollup_1m,
    samples,
    sites,
    streams,
    tenants,
    user_tokens,
    users,
)

ROLES = ("admin", "operator", "viewer")


def now_ms() -> int:
    return int(time.time() * 1000)


class NotFound(LookupError):
    """The thing does not exist in this tenant (which, to the caller, is the same as not existing)."""


class Conflict(ValueError):
    """The name is already taken."""


@dataclass(frozen=True)
class DeviceRef:
    id: int
    tenant_id: int
    name: str
    config_version: int
    reported_config_version: int | None
    config: str | None


@dataclass(frozen=True)
class UserRef:
    id: int
    tenant_id: int
    tenant: str
    email: str
    role: str

    @property
    def can_write(self) -> bool:
        return self.role in ("admin", "operator")


@dataclass
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    #: newest sample per battery in this batch, for the live feed: battery_id → wire sample (left out
    #: when the battery already had a newer sample stored)
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)


def _month_bounds(ts_ms: int) -> tuple[int, int, str]:
    d = datetime.fromtimestamp(ts_ms / 1000, UTC)
    start = datetime(d.year, d.month, 1, tzinfo=UTC)
    end = datetime(d.year + (d.month == 12), d.month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000), f"samples_{d.year:04d}_{d.month:02d}"


class Store:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        default_poll_interval_s: float = 5.0,
        offline_timeout_s: float = 300.0,
        online_grace_s: float = 15.0,
        session_ttl_s: float = 7 * 24 * 3600,
    ) -> None:
        self.engine = engine
        self.sqlite = is_sqlite(engine)
        # SQLite has one writer: queue writers here instead of spinning on SQLITE_BUSY
        self._write_lock = asyncio.Lock()
        self._partitions: set[str] = set()
        self._rollup_stmt: Any = None
        self._state_stmt: Any = None
        self.default_poll_interval_s = default_poll_interval_s
        self.offline_timeout_s = offline_timeout_s
        self.online_grace_s = online_grace_s
        self.session_ttl_s = session_ttl_s

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction, committed (durable) when the block ends."""
        if self.sqlite:
            async with self._write_lock, self.engine.begin() as conn:
                yield conn
        else:
            async with self.engine.begin() as conn:
                yield conn

    def tenant(self, tenant_id: int) -> TenantStore:
        return TenantStore(self, tenant_id)

    # ---------------------------------------------------------------- tenants (no scope: admin CLI only)

    async def create_tenant(self, name: str) -> dict[str, Any]:
        async with self.write() as conn:
            try:
                tid = (
                    await conn.execute(
                        insert(tenants).values(name=name, created_ms=now_ms()).returning(tenants.c.id)
                    )
                ).scalar_one()
            except IntegrityError:
                raise Conflict(f"tenant {name!r} already exists") from None
        return {"tenant_id": tid, "name": name}

    async def tenant_by_name(self, name: str) -> int:
        async with self.engine.connect() as conn:
            tid = (await conn.execute(select(tenants.c.id).where(tenants.c.name == name))).scalar()
        if tid is None:
            raise NotFound(f"no tenant {name!r}")
        return tid

    # ---------------------------------------------------------------- tokens

    async def device_for_token(self, token: str) -> DeviceRef | None:
        q = (
            select(
                devices.c.id,
                devices.c.tenant_id,
                devices.c.name,
                devices.c.config_version,
                devices.c.reported_config_version,
                devices.c.config,
            )
            .join(device_tokens, device_tokens.c.device_id == devices.c.id)
            .where(
                device_tokens.c.token_hash == security.token_hash(token), device_tokens.c.revoked.is_(False)
            )
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return DeviceRef(*row) if row else None

    async def user_for_token(self, token: str) -> UserRef | None:
        q = (
            select(users.c.id, users.c.tenant_id, tenants.c.name, users.c.email, users.c.role)
            .join(user_tokens, user_tokens.c.user_id == users.c.id)
            .join(tenants, tenants.c.id == users.c.tenant_id)
            .where(
                user_tokens.c.token_hash == security.token_hash(token),
                user_tokens.c.revoked.is_(False),
                user_tokens.c.expires_ms > now_ms(),
            )
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return UserRef(*row) if row else None

    async def login(self, email: str, password: str) -> tuple[str, UserRef] | None:
        q = select(
            users.c.id, users.c.tenant_id, tenants.c.name, users.c.email, users.c.role, users.c.password_hash
        ).join(tenants, tenants.c.id == users.c.tenant_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(q.where(users.c.email == email.strip().lower()))).first()
        if row is None:
            # same work either way, so timing does not tell which emails exist
            await asyncio.to_thread(security.verify_password, password, security.hash_password("x"))
            return None
        if not await asyncio.to_thread(security.verify_password, password, row.password_hash):
            return None
        token = security.new_token(security.USER_TOKEN_PREFIX)
        t = now_ms()
        async with self.write() as conn:
            await conn.execute(
                insert(user_tokens).values(
                    user_id=row.id,
                    tenant_id=row.tenant_id,
                    token_hash=security.token_hash(token),
                    created_ms=t,
                    expires_ms=t + int(self.session_ttl_s * 1000),
                    revoked=False,
                )
            )
        return token, UserRef(row.id, row.tenant_id, row.name, row.email, row.role)

    async def revoke_token(self, token: str) -> bool:
        """Revoke a device or user token given in full. True if one was revoked."""
        h = security.token_hash(token)
        async with self.write() as conn:
            n = (
                await conn.execute(
                    update(device_tokens).where(device_tokens.c.token_hash == h).values(revoked=True)
                )
            ).rowcount
            n += (
                await conn.execute(
                    update(user_tokens).where(user_tokens.c.token_hash == h).values(revoked=True)
                )
            ).rowcount
        return n > 0

    # ---------------------------------------------------------------- ingest (device scope)

    async def _ensure_partitions(self, min_ts: int, max_ts: int) -> None:
        needed = {}
        ts = min_ts
        while True:
            lo, hi, name = _month_bounds(ts)
            if name not in self._partitions:
                needed[name] = (lo, hi)
            if hi > max_ts:
                break
            ts = hi
        for name, (lo, hi) in needed.items():
            try:
                async with self.engine.begin() as conn:
                    await conn.exec_driver_sql(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF samples "
                        f"FOR VALUES FROM ({lo}) TO ({hi})"
                    )
            except Exception:
                # another server may have created it at the same moment; anything else is a real error
                async with self.engine.connect() as conn:
                    exists = (await conn.exec_driver_sql(f"SELECT to_regclass('{name}')")).scalar()
                if exists is None:
                    raise
            self._partitions.add(name)

    async def ingest(
        self, device: DeviceRef, batch: list[Any], received_ms: int | None = None
    ) -> IngestResult:
        """Validate, store (idempotent) and commit a batch; returns only after the commit."""
        t_now = received_ms or now_ms()
        res = IngestResult()
        parsed: list[tuple[int, str, int, int, bytes, Any, codec.Stats]] = []
        for i, d in enumerate(batch):
            try:
                bid, seq, ts, data, stats = codec.validate_and_pack(d, t_now)
            except codec.SampleError as e:
                res.rejected.append({"index": i, "error": str(e)})
                continue
            parsed.append((i, bid, seq, ts, data, d, stats))
        if not parsed:
            return res
        if not self.sqlite:
            await self._ensure_partitions(min(p[3] for p in parsed), max(p[3] for p in parsed))
        assigned_q = (
            select(batteries.c.battery_id, streams.c.id, batteries.c.id, batteries.c.last_ts_ms)
            .join(streams, and_(streams.c.battery_id == batteries.c.id, streams.c.device_id == device.id))
            .where(batteries.c.tenant_id == device.tenant_id, batteries.c.device_id == device.id)
        )
        async with self.write() as conn:
            # battery_id → (stream, battery pk, newest ts stored so far)
            assigned = {r[0]: (r[1], r[2], r[3]) for r in (await conn.execute(assigned_q)).all()}
            rows: list[tuple[int, int, int, bytes]] = []
            # per row: (batch index, battery_id, wire dict, series values)
            kept: list[tuple[int, str, dict[str, Any], codec.Stats]] = []
            for i, bid, seq, ts, data, d, stats in parsed:
                ids = assigned.get(bid)
                if ids is None:
                    res.rejected.append(
                        {"index": i, "error": f"battery_id: {bid!r} is not assigned to this device"}
                    )
                    continue
                rows.append((ids[0], seq, ts, data))
                kept.append((i, bid, d, stats))
            if rows:
                inserted = await self._insert_samples(conn, rows)
                res.accepted = len(inserted)
                clashes: dict[int, str] = {}
                if res.accepted < len(rows):
                    clashes = await self._clashes(conn, rows)
                    for k, err in clashes.items():
                        res.rejected.append({"index": kept[k][0], "error": err})
                res.duplicates = len(rows) - res.accepted - len(clashes)
                # per battery: [newest ts, its seq, its data, max cells, max temps,
                #               {presence mask: (newest ts, data) of the samples with that mask}]
                newest: dict[str, list[Any]] = {}
                rollups: dict[tuple[int, int], list[Any]] = {}
                for k, (stream, seq, ts, data) in enumerate(rows):
                    if k in clashes:
                        continue
                    if (stream, ts, seq) in inserted:
                        inserted.discard((stream, ts, seq))  # an exact re-send inside the batch counts once
                        _accumulate(rollups, stream, ts, kept[k][3])
                    bid, d = kept[k][1], kept[k][2]
                    n_cells = len(d.get("cells_mv") or ())
                    n_temps = len(d.get("temps_c") or ())
                    mask = codec.presence_mask(data)
                    cur = newest.get(bid)
                    if cur is None:
                        newest[bid] = [ts, seq, data, n_cells, n_temps, {mask: (ts, data)}]
                    else:
                        if ts >= cur[0]:
                            cur[0], cur[1], cur[2] = ts, seq, data
                        cur[3] = max(cur[3], n_cells)
                        cur[4] = max(cur[4], n_temps)
                        # a batch holds few distinct masks (one per poll cadence mix): cheap to keep
                        by_mask = cur[5]
                        prev = by_mask.get(mask)
                        if prev is None or ts >= prev[0]:
                            by_mask[mask] = (ts, data)
                if rollups:
                    await self._upsert_rollups(conn, rollups)
                if newest:
                    # in battery order, so that concurrent batches (PostgreSQL) lock rows in one order
                    order = sorted(newest, key=lambda b: assigned[b][1])
                    # one executemany for the batch: arrival figures always, "latest" only if newer
                    await conn.execute(
                        _BATTERY_SEEN,
                        [
                            {
                                "b_id": assigned[bid][1],
                                "t_now": t_now,
                                "b_ts": newest[bid][0],
                                "b_seq": newest[bid][1],
                                "b_data": newest[bid][2],
                                "n_cells": newest[bid][3],
                                "n_temps": newest[bid][4],
                            }
                            for bid in order
                        ],
                    )
                    # the last known state: each field merged in SQL, so concurrent batches cannot race
                    await conn.execute(
                        self._state_upsert(),
                        [_state_row(assigned[bid][1], newest[bid][5]) for bid in order],
                    )
                for bid, (ts, seq, data, _, _, _) in newest.items():
                    stored_ts = assigned[bid][2]
                    if stored_ts is not None and ts < stored_ts:
                        continue  # a backfill: live clients would take it for the pack's present state
                    res.latest[bid] = codec.to_sample(bid, seq, ts, data)
            res.rejected.sort(key=lambda r: r["index"])
            await conn.execute(update(devices).where(devices.c.id == device.id).values(last_contact_ms=t_now))
        return res

    async def _insert_samples(
        self, conn: AsyncConnection, rows: list[tuple[int, int, int, bytes]]
    ) -> set[tuple[int, int, int]]:
        """Insert, skipping rows whose key is already stored; returns the (stream, ts, seq) inserted."""
        if self.sqlite:
            out: set[tuple[int, int, int]] = set()
            # 240 rows x 4 = 960 parameters: under the 999 that SQLite builds before 3.32 allow
            for start in range(0, len(rows), 240):
                chunk = rows[start : start + 240]
                sql = _sqlite_insert_sql(len(chunk))
                params = tuple(x for r in chunk for x in r)
                result = await conn.exec_driver_sql(sql, params)
                out.update((a, b, c) for a, b, c in result.all())  # plain tuples: cheaper to hash than Rows
            return out
        raw = await conn.get_raw_connection()
        apg = raw.driver_connection
        got = await apg.fetch(
            "INSERT INTO samples (stream_id, seq, ts_ms, data) "
            "SELECT * FROM unnest($1::int[], $2::bigint[], $3::bigint[], $4::bytea[]) ON CONFLICT DO NOTHING "
            "RETURNING stream_id, ts_ms, seq",
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3] for r in rows],
        )
        return {tuple(r) for r in got}

    async def _upsert_rollups(self, conn: AsyncConnection, rollups: dict[tuple[int, int], list[Any]]) -> None:
        params = []
        for (stream, bucket), acc in rollups.items():
            row: dict[str, Any] = {"stream_id": stream, "bucket_ms": bucket}
            for j, name in enumerate(codec.SERIES):
                n, lo, hi, total = acc[4 * j : 4 * j + 4]
                row[f"{name}_n"] = n
                row[f"{name}_min"] = lo
                row[f"{name}_max"] = hi
                row[f"{name}_sum"] = total
            params.append(row)
        await conn.execute(self._rollup_upsert(), params)

    def _rollup_upsert(self) -> Any:
        if self._rollup_stmt is not None:
            return self._rollup_stmt
        if self.sqlite:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert

            def least(a: Any, b: Any) -> Any:
                return func.min(func.coalesce(a, b), func.coalesce(b, a))

            def greatest(a: Any, b: Any) -> Any:
                return func.max(func.coalesce(a, b), func.coalesce(b, a))
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert

            least, greatest = func.least, func.greatest  # both skip NULLs on PostgreSQL
        stmt = dialect_insert(rollup_1m)
        r, ex = rollup_1m.c, stmt.excluded
        set_: dict[str, Any] = {}
        for name in codec.SERIES:
            set_[f"{name}_n"] = r[f"{name}_n"] + ex[f"{name}_n"]
            set_[f"{name}_min"] = least(r[f"{name}_min"], ex[f"{name}_min"])
            set_[f"{name}_max"] = greatest(r[f"{name}_max"], ex[f"{name}_max"])
            set_[f"{name}_sum"] = func.coalesce(r[f"{name}_sum"], 0.0) + func.coalesce(ex[f"{name}_sum"], 0.0)
        self._rollup_stmt = stmt.on_conflict_do_update(index_elements=["stream_id", "bucket_ms"], set_=set_)
        return self._rollup_stmt

    def _state_upsert(self) -> Any:
        """Insert a battery's state, or merge it field by field: a field moves only to a value read at
        the same ts or later (a backfill of old samples never overwrites newer values)."""
        if self._state_stmt is not None:
            return self._state_stmt
        if self.sqlite:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        stmt = dialect_insert(battery_state)
        st, ex = battery_state.c, stmt.excluded
        set_: dict[str, Any] = {}
        for name, _ in STATE_FIELDS:
            # NULL when this batch did not carry the field: then the stored value stays
            newer = ex[f"{name}_ts"] >= func.coalesce(st[f"{name}_ts"], ex[f"{name}_ts"])
            set_[name] = case((newer, ex[name]), else_=st[name])
            set_[f"{name}_ts"] = case((newer, ex[f"{name}_ts"]), else_=st[f"{name}_ts"])
        self._state_stmt = stmt.on_conflict_do_update(index_elements=["battery_id"], set_=set_)
        return self._state_stmt

    async def _clashes(
        self, conn: AsyncConnection, rows: list[tuple[int, int, int, bytes]]
    ) -> dict[int, str]:
        """Rows that were skipped but are not re-sends: another sample of the stream holds their ts
        (both backends), or their seq with another ts (SQLite, which can afford the second index)."""
        by_stream: dict[int, list[int]] = {}
        for k, r in enumerate(rows):
            by_stream.setdefault(r[0], []).append(k)
        out: dict[int, str] = {}
        s = samples.c
        for stream_id, ks in by_stream.items():
            tss = [rows[k][2] for k in ks]
            stored_by_ts = dict(
                (
                    await conn.execute(
                        select(s.ts_ms, s.seq).where(s.stream_id == stream_id, s.ts_ms.in_(tss))
                    )
                ).all()
            )
            stored_by_seq: dict[int, int] = {}
            if self.sqlite:
                seqs = [rows[k][1] for k in ks]
                stored_by_seq = dict(
                    (
                        await conn.execute(
                            select(s.seq, s.ts_ms).where(s.stream_id == stream_id, s.seq.in_(seqs))
                        )
                    ).all()
                )
            for k in ks:
                _, seq, ts, _ = rows[k]
                other_seq = stored_by_ts.get(ts)
                if other_seq is not None and other_seq != seq:
                    out[k] = f"ts: another sample of this battery (seq {other_seq}) has the same ts"
                elif self.sqlite and stored_by_seq.get(seq, ts) != ts:
                    out[k] = f"seq: {seq} was already stored with another ts"
        return out

    async def heartbeat(
        self, device: DeviceRef, body: dict[str, Any], received_ms: int | None = None
    ) -> None:
        t = received_ms or now_ms()
        async with self.write() as conn:
            await conn.execute(
                update(devices)
                .where(devices.c.id == device.id, devices.c.tenant_id == device.tenant_id)
                .values(
                    last_contact_ms=t,
                    heartbeat_ms=t,
                    heartbeat=orjson.dumps(body).decode(),
                    reported_config_version=body.get("config_version"),
                )
            )

    async def note_config_version(self, device: DeviceRef, version: int) -> None:
        async with self.write() as conn:
            await conn.execute(
                update(devices).where(devices.c.id == device.id).values(reported_config_version=version)
            )

    def live_connectivity(self, sample: dict[str, Any], received_ms: int) -> str:
        ts = codec.parse_ts_ms(sample["ts"])
        return connectivity(
            received_ms,
            poll_interval_s=self.default_poll_interval_s,
            last_received_ms=received_ms,
            received_ts_ms=ts,
            heartbeat_ms=None,
            link_state=None,
            offline_timeout_s=self.offline_timeout_s,
            grace_s=self.online_grace_s,
        )

    # ---------------------------------------------------------------- retention

    async def set_retention(self, tenant_id: int, days: int | None) -> None:
        """Keep a tenant's raw samples ``days`` long (None: forever). Rollups are kept either way."""
        async with self.write() as conn:
            await conn.execute(
                update(tenants).where(tenants.c.id == tenant_id).values(retention_days=days or None)
            )

    async def apply_retention(self, at_ms: int | None = None) -> int:
        """Delete raw samples older than each tenant's retention; returns how many were deleted."""
        at_ms = at_ms or now_ms()
        async with self.engine.connect() as conn:
            rules = (
                await conn.execute(
                    select(tenants.c.id, tenants.c.retention_days).where(
                        tenants.c.retention_days.is_not(None)
                    )
                )
            ).all()
        deleted = 0
        for tenant_id, days in rules:
            cutoff = at_ms - int(days * 86_400_000)
            tenant_streams = (
                select(streams.c.id)
                .join(batteries, batteries.c.id == streams.c.battery_id)
                .where(batteries.c.tenant_id == tenant_id)
            )
            async with self.write() as conn:
                r = await conn.execute(
                    samples.delete().where(samples.c.stream_id.in_(tenant_streams), samples.c.ts_ms < cutoff)
                )
                deleted += max(0, r.rowcount)
        return deleted

    # ---------------------------------------------------------------- sizes (benchmarks)

    async def samples_bytes(self) -> int:
        """Bytes the samples table and its indexes take (PostgreSQL: all partitions)."""
        async with self.engine.connect() as conn:
            if self.sqlite:
                return int(
                    (
                        await conn.exec_driver_sql(
                            "SELECT sum(pgsize) FROM dbstat WHERE name IN ('samples', 'samples_stream_ts')"
                        )
                    ).scalar()
                    or 0
                )
            return int(
                (
                    await conn.exec_driver_sql(
                        "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
                        "WHERE inhparent = 'samples'::regclass"
                    )
                ).scalar()
            )


def _battery_seen() -> Any:
    b = batteries.c
    ts = bindparam("b_ts", type_=BigInteger)
    n_cells = bindparam("n_cells", type_=Integer)
    n_temps = bindparam("n_temps", type_=Integer)
    newer = or_(b.last_ts_ms.is_(None), b.last_ts_ms <= ts)
    return (
        update(batteries)
        .where(b.id == bindparam("b_id"))
        .values(
            last_received_ms=bindparam("t_now", type_=BigInteger),
            received_ts_ms=ts,
            cell_count=case((b.cell_count < n_cells, n_cells), else_=b.cell_count),
            temp_count=case((b.temp_count < n_temps, n_temps), else_=b.temp_count),
            last_seq=case((newer, bindparam("b_seq", type_=BigInteger)), else_=b.last_seq),
            last_data=case((newer, bindparam("b_data", type_=LargeBinary)), else_=b.last_data),
            last_ts_ms=case((newer, ts), else_=b.last_ts_ms),
        )
    )


_BATTERY_SEEN = _battery_seen()


def _state_row(battery_pk: int, by_mask: dict[int, tuple[int, bytes]]) -> dict[str, Any]:
    """A battery's state row from one batch: per field the value of the newest sample carrying it."""
    best: dict[str, tuple[int, bytes]] = {}
    for mask, (ts, data) in by_mask.items():
        for name, bit in codec.FIELD_BITS:
            if mask & bit:
                b = best.get(name)
                if b is None or ts > b[0]:
                    best[name] = (ts, data)
    row: dict[str, Any] = {"battery_id": battery_pk}
    decoded: dict[bytes, dict[str, Any]] = {}  # few distinct samples: unpack each once
    for name, _ in codec.FIELD_BITS:
        b = best.get(name)
        if b is None:
            row[name] = row[f"{name}_ts"] = None
            continue
        ts, data = b
        fields = decoded.get(data)
        if fields is None:
            fields = decoded[data] = codec.unpack(data)
        v = fields[name]
        row[name] = orjson.dumps(v).decode() if name in STATE_JSON_FIELDS else v
        row[f"{name}_ts"] = ts
    return row


def _sqlite_insert_sql(n: int) -> str:
    return (
        "INSERT OR IGNORE INTO samples (stream_id, seq, ts_ms, data) VALUES "
        + ",".join(["(?, ?, ?, ?)"] * n)
        + " RETURNING stream_id, ts_ms, seq"
    )


def _accumulate(rollups: dict[tuple[int, int], list[Any]], stream: int, ts: int, stats: codec.Stats) -> None:
    """Fold one sample's series values into its (stream, minute) accumulator: n, min, max, sum per series."""
    key = (stream, ts - ts % 60_000)
    acc = rollups.get(key)
    if acc is None:
        acc = rollups[key] = [0, None, None, 0.0] * len(codec.SERIES)
    for j, v in enumerate(stats):
        if v is None:
            continue
        o = 4 * j
        if acc[o] == 0:
            acc[o], acc[o + 1], acc[o + 2], acc[o + 3] = 1, v, v, v
        else:
            acc[o] += 1
            if v < acc[o + 1]:
                acc[o + 1] = v
            if v > acc[o + 2]:
                acc[o + 2] = v
            acc[o + 3] += v


def _fleet_query(tenant_id: int) -> Any:
    b, s, d = batteries.c, sites.c, devices.c
    return (
        select(
            b.id,
            b.battery_id,
            b.name,
            b.site_id,
            s.name.label("site_name"),
            d.name.label("device_name"),
            b.poll_interval_s,
            b.cell_count,
            b.temp_count,
            b.last_seq,
            b.last_ts_ms,
            b.last_data,
            b.last_received_ms,
            b.received_ts_ms,
            d.heartbeat_ms,
            d.heartbeat,
            battery_state.c.battery_id.label("state_battery_id"),
            *(c for c in battery_state.c if c.name != "battery_id"),
        )
        .join(sites, and_(sites.c.id == b.site_id, sites.c.tenant_id == tenant_id))
        .outerjoin(devices, and_(devices.c.id == b.device_id, devices.c.tenant_id == tenant_id))
        .outerjoin(battery_state, battery_state.c.battery_id == b.id)
        .where(b.tenant_id == tenant_id)
        .order_by(s.name, b.battery_id)
    )


def _last_known(r: Any) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """(latest, latest_ts) of a fleet row: ``seq``, ``ts``, ``source``, ``via`` and ``errors`` of the
    newest sample, each measurement field its last known value; ``latest_ts`` the ts of each."""
    if not r.last_data:
        return None, {}
    newest = codec.to_sample(r.battery_id, r.last_seq, r.last_ts_ms, r.last_data)
    if r.state_battery_id is None:
        # no state row (cannot happen after migration 0003 and an ingest): the newest sample alone
        ts = newest["ts"]
        return newest, {name: ts for name, _ in STATE_FIELDS if name in newest}
    latest = {k: newest[k] for k in ("battery_id", "seq", "ts", "source", "via") if k in newest}
    latest_ts: dict[str, str] = {}
    m = r._mapping
    for name, _ in STATE_FIELDS:
        v = m[name]
        if v is None:
            continue
        latest[name] = orjson.loads(v) if name in STATE_JSON_FIELDS else v
        latest_ts[name] = codec.ms_to_ts(m[f"{name}_ts"])
    if "errors" in newest:  # what the newest sample could not read, and why
        latest["errors"] = newest["errors"]
    return latest, latest_ts


def _epoch_s(ms: int) -> int | float:
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


#: the most raw samples a short-bucket history request decodes; a denser range is served from the rollups
RAW_HISTORY_MAX_ROWS = 20_000


def _bucket_grid(from_ms: int, to_ms: int, bucket_ms: int, points: int, step_ms: int) -> tuple[int, int]:
    """(first bucket start, bucket length): buckets on round times (multiples of the bucket) when that
    still fits in ``points``, else from ``from`` (on a whole ``step_ms``), widened by ``step_ms`` until
    it fits (a few steps at most: ``bucket_ms`` starts at span / points)."""
    base_ms = from_ms - from_ms % bucket_ms
    if (to_ms - 1 - base_ms) // bucket_ms + 1 > points:
        base_ms = from_ms - from_ms % step_ms
        while (to_ms - 1 - base_ms) // bucket_ms + 1 > points:
            bucket_ms += step_ms
    return base_ms, bucket_ms


def _raw_buckets(rows: list[Any], base_ms: int, bucket_ms: int) -> dict[int, list[Any]]:
    """Per bucket n, min, max, sum of each series (the rollup layout) from raw (ts_ms, data) rows."""
    buckets: dict[int, list[Any]] = {}
    n_series = len(codec.SERIES)
    for ts, data in rows:
        k = (ts - base_ms) // bucket_ms
        acc = buckets.get(k)
        if acc is None:
            acc = buckets[k] = [0, None, None, 0.0] * n_series
        for j, v in enumerate(codec.series_values(data)):
            if v is None:
                continue
            o = 4 * j
            if acc[o] == 0:
                acc[o : o + 4] = [1, v, v, v]
            else:
                acc[o] += 1
                if v < acc[o + 1]:
                    acc[o + 1] = v
                if v > acc[o + 2]:
                    acc[o + 2] = v
                acc[o + 3] += v
    return buckets


def _history_reply(
    battery_id: str, from_ms: int, to_ms: int, base_ms: int, bucket_ms: int, buckets: dict[int, list[Any]]
) -> dict[str, Any]:
    keys = sorted(buckets)
    series: dict[str, dict[str, list[float | None]]] = {}
    for j, name in enumerate(codec.SERIES):
        o = 4 * j
        mins: list[float | None] = []
        maxs: list[float | None] = []
        means: list[float | None] = []
        for k in keys:
            acc = buckets[k]
            if acc[o]:
                mins.append(acc[o + 1])
                maxs.append(acc[o + 2])
                means.append(round(acc[o + 3] / acc[o], 4))
            else:
                mins.append(None)
                maxs.append(None)
                means.append(None)
        series[name] = {"min": mins, "max": maxs, "mean": means}
    return {
        "battery_id": battery_id,
        "from": codec.ms_to_ts(from_ms),
        "to": codec.ms_to_ts(to_ms),
        "bucket_s": bucket_ms // 1000,
        "t": [_epoch_s(base_ms + k * bucket_ms) for k in keys],
        "series": series,
    }


class TenantStore:
    """Everything one tenant may see or change. Ids from another tenant behave as if they did not exist."""

    def __init__(self, store: Store, tenant_id: int) -> None:
        self.store = store
        self.engine = store.engine
        self.tenant_id = tenant_id

    # ---------------------------------------------------------------- provisioning

    async def create_user(self, email: str, password: str, role: str) -> dict[str, Any]:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        email = email.strip().lower()
        pw = await asyncio.to_thread(security.hash_password, password)
        async with self.store.write() as conn:
            try:
                uid = (
                    await conn.execute(
                        insert(users)
                        .values(
                            tenant_id=self.tenant_id,
                            email=email,
                            password_hash=pw,
                            role=role,
                            created_ms=now_ms(),
                        )
                        .returning(users.c.id)
                    )
                ).scalar_one()
            except IntegrityError:
                raise Conflict(f"user {email!r} already exists") from None
        return {"user_id": uid, "email": email, "role": role}

    async def create_site(self, name: str) -> dict[str, Any]:
        async with self.store.write() as conn:
            try:
                sid = (
                    await conn.execute(
                        insert(sites).values(tenant_id=self.tenant_id, name=name).returning(sites.c.id)
                    )
                ).scalar_one()
            except IntegrityError:
                raise Conflict(f"site {name!r} already exists") from None
        return {"site_id": sid, "name": name}

    async def _site_id(self, conn: AsyncConnection, site: int | str) -> int:
        cond = sites.c.id == site if isinstance(site, int) else sites.c.name == site
        sid = (
            await conn.execute(select(sites.c.id).where(cond, sites.c.tenant_id == self.tenant_id))
        ).scalar()
        if sid is None:
            raise NotFound(f"no site {site!r}")
        return sid

    async def _device_id(self, conn: AsyncConnection, name: str) -> int:
        did = (
            await conn.execute(
                select(devices.c.id).where(devices.c.name == name, devices.c.tenant_id == self.tenant_id)
            )
        ).scalar()
        if did is None:
            raise NotFound(f"no device {name!r}")
        return did

    async def create_device(self, name: str) -> dict[str, Any]:
        """A new device and its token (the token is returned here only: it is stored hashed)."""
        token = security.new_token(security.DEVICE_TOKEN_PREFIX)
        async with self.store.write() as conn:
            try:
                did = (
                    await conn.execute(
                        insert(devices)
                        .values(tenant_id=self.tenant_id, name=name, created_ms=now_ms(), config_version=0)
                        .returning(devices.c.id)
                    )
                ).scalar_one()
            except IntegrityError:
                raise Conflict(f"device {name!r} already exists") from None
            await self._insert_token(conn, did, token)
        return {"device_id": name, "token": token}

    async def _insert_token(self, conn: AsyncConnection, device_id: int, token: str) -> None:
        await conn.execute(
            insert(device_tokens).values(
                device_id=device_id,
                tenant_id=self.tenant_id,
                token_hash=security.token_hash(token),
                created_ms=now_ms(),
                revoked=False,
            )
        )

    async def new_device_token(self, name: str) -> dict[str, Any]:
        """Another token for an existing device (e.g. to rotate: issue, deploy, revoke the old one)."""
        token = security.new_token(security.DEVICE_TOKEN_PREFIX)
        async with self.store.write() as conn:
            await self._insert_token(conn, await self._device_id(conn, name), token)
        return {"device_id": name, "token": token}

    async def revoke_device_tokens(self, name: str) -> int:
        async with self.store.write() as conn:
            did = await self._device_id(conn, name)
            return (
                await conn.execute(
                    update(device_tokens)
                    .where(
                        device_tokens.c.device_id == did,
                        device_tokens.c.tenant_id == self.tenant_id,
                        device_tokens.c.revoked.is_(False),
                    )
                    .values(revoked=True)
                )
            ).rowcount

    async def create_battery(
        self,
        site: int | str,
        battery_id: str,
        name: str | None = None,
        device: str | None = None,
        poll_interval_s: float | None = None,
    ) -> dict[str, Any]:
        if not codec._BATTERY_ID.match(battery_id) or battery_id.endswith("\n"):
            raise ValueError("battery_id must match [A-Za-z0-9._-]{1,64}")
        async with self.store.write() as conn:
            sid = await self._site_id(conn, site)
            did = await self._device_id(conn, device) if device else None
            try:
                bid = (
                    await conn.execute(
                        insert(batteries)
                        .values(
                            tenant_id=self.tenant_id,
                            site_id=sid,
                            device_id=did,
                            battery_id=battery_id,
                            name=name or battery_id,
                            poll_interval_s=poll_interval_s or self.store.default_poll_interval_s,
                            cell_count=0,
                            temp_count=0,
                        )
                        .returning(batteries.c.id)
                    )
                ).scalar_one()
            except IntegrityError:
                raise Conflict(f"battery {battery_id!r} already exists") from None
            if did is not None:
                await conn.execute(insert(streams).values(device_id=did, battery_id=bid))
        return {"battery_id": battery_id, "name": name or battery_id, "site_id": sid, "device_id": device}

    async def assign_battery(self, battery_id: str, device: str | None) -> None:
        """Move a battery to another device (its samples so far stay, under the old device's stream)."""
        async with self.store.write() as conn:
            bid = await self._battery_pk(conn, battery_id)
            did = await self._device_id(conn, device) if device else None
            await conn.execute(update(batteries).where(batteries.c.id == bid).values(device_id=did))
            if did is not None:
                exists = (
                    await conn.execute(
                        select(streams.c.id).where(streams.c.device_id == did, streams.c.battery_id == bid)
                    )
                ).scalar()
                if exists is None:
                    await conn.execute(insert(streams).values(device_id=did, battery_id=bid))

    async def set_device_config(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """Store a device's remote config under the next ``config_version``; returns it as sent."""
        async with self.store.write() as conn:
            row = (
                await conn.execute(
                    select(devices.c.id, devices.c.config_version).where(
                        devices.c.name == name, devices.c.tenant_id == self.tenant_id
                    )
                )
            ).first()
            if row is None:
                raise NotFound(f"no device {name!r}")
            version = (row.config_version or 0) + 1
            body = {"config_version": version, **{k: v for k, v in config.items() if k != "config_version"}}
            await conn.execute(
                update(devices)
                .where(devices.c.id == row.id)
                .values(config=orjson.dumps(body).decode(), config_version=version)
            )
            # connectivity judges freshness by the poll interval the gateway is told to use
            for battery_id, bcfg in (body.get("batteries") or {}).items():
                if bcfg.get("poll_interval_s"):
                    await conn.execute(
                        update(batteries)
                        .where(
                            batteries.c.tenant_id == self.tenant_id,
                            batteries.c.device_id == row.id,
                            batteries.c.battery_id == battery_id,
                        )
                        .values(poll_interval_s=bcfg["poll_interval_s"])
                    )
        return body

    # ---------------------------------------------------------------- reads

    async def sites(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(sites.c.id, sites.c.name)
                    .where(sites.c.tenant_id == self.tenant_id)
                    .order_by(sites.c.name)
                )
            ).all()
        return [{"site_id": r.id, "name": r.name} for r in rows]

    def _fleet_item(self, r: Any, t_now: int, detail: bool = False) -> dict[str, Any]:
        link_state = None
        if r.heartbeat:
            for b in orjson.loads(r.heartbeat).get("batteries") or ():
                if b.get("battery_id") == r.battery_id:
                    link_state = b.get("link_state")
        latest, latest_ts = _last_known(r)
        lo, hi, delta = cell_stats(latest.get("cells_mv") if latest else None)
        conn_state = connectivity(
            t_now,
            poll_interval_s=r.poll_interval_s,
            last_received_ms=r.last_received_ms,
            received_ts_ms=r.received_ts_ms,
            heartbeat_ms=r.heartbeat_ms,
            link_state=link_state,
            offline_timeout_s=self.store.offline_timeout_s,
            grace_s=self.store.online_grace_s,
        )
        item = {
            "battery_id": r.battery_id,
            "name": r.name,
            "site_id": r.site_id,
            "site_name": r.site_name,
            "device_id": r.device_name,
            "connectivity": conn_state,
            "last_seen": codec.ms_to_ts(r.last_ts_ms) if r.last_ts_ms is not None else None,
            "last_received": codec.ms_to_ts(r.last_received_ms) if r.last_received_ms else None,
            "link_state": link_state,
            "latest": latest,
            "latest_ts": latest_ts,
            # from the newest sample that read the faults: one that did not says nothing about them
            "alarms": list(latest.get("faults") or []) if latest else [],
            "cell_min_mv": lo,
            "cell_max_mv": hi,
            "cell_delta_mv": delta,
            "power_w": power_w(latest) if latest else None,
        }
        if detail:
            item["cell_count"] = r.cell_count
            item["temp_count"] = r.temp_count
            item["poll_interval_s"] = r.poll_interval_s
        return item

    async def fleet(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(_fleet_query(self.tenant_id))).all()
        t = now_ms()
        return [self._fleet_item(r, t) for r in rows]

    async def battery(self, battery_id: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            r = (
                await conn.execute(_fleet_query(self.tenant_id).where(batteries.c.battery_id == battery_id))
            ).first()
        if r is None:
            raise NotFound(f"no battery {battery_id!r}")
        return self._fleet_item(r, now_ms(), detail=True)

    async def _battery_pk(self, conn: AsyncConnection, battery_id: str) -> int:
        bid = (
            await conn.execute(
                select(batteries.c.id).where(
                    batteries.c.battery_id == battery_id, batteries.c.tenant_id == self.tenant_id
                )
            )
        ).scalar()
        if bid is None:
            raise NotFound(f"no battery {battery_id!r}")
        return bid

    async def _battery_streams(self, conn: AsyncConnection, battery_id: str) -> tuple[Any, list[int]]:
        b = (
            await conn.execute(
                select(batteries.c.id, batteries.c.cell_count, batteries.c.temp_count).where(
                    batteries.c.battery_id == battery_id, batteries.c.tenant_id == self.tenant_id
                )
            )
        ).first()
        if b is None:
            raise NotFound(f"no battery {battery_id!r}")
        sids = (await conn.execute(select(streams.c.id).where(streams.c.battery_id == b.id))).scalars().all()
        return b, list(sids)

    async def history(self, battery_id: str, from_ms: int, to_ms: int, points: int) -> dict[str, Any]:
        """Min / max / mean per time bucket (at most ``points`` buckets), so that spikes survive.

        Buckets of a minute or more are aggregated in SQL from the 1-minute rollups (bucket edges on whole
        minutes): the reply and the Python work are bounded by ``points``, not by the span. Shorter buckets
        come from the raw samples, decoded only when the range holds at most :data:`RAW_HISTORY_MAX_ROWS`
        of them; otherwise 1-minute buckets from the rollups answer instead."""
        span_ms = max(1, to_ms - from_ms)
        points = max(1, points)
        bucket_ms = -(-max(1000, -(-span_ms // points)) // 1000) * 1000  # whole seconds
        async with self.engine.connect() as conn:
            _, sids = await self._battery_streams(conn, battery_id)
            if sids and bucket_ms < 60_000:
                s = samples.c
                in_range = and_(s.stream_id.in_(sids), s.ts_ms >= from_ms, s.ts_ms < to_ms)
                # count (up to the cap, index only) before fetching: a dense range goes to the rollups
                capped = select(s.ts_ms).where(in_range).limit(RAW_HISTORY_MAX_ROWS + 1).subquery()
                n_raw = (await conn.execute(select(func.count()).select_from(capped))).scalar_one()
                if n_raw <= RAW_HISTORY_MAX_ROWS:
                    base_ms, bucket_ms = _bucket_grid(from_ms, to_ms, bucket_ms, points, 1000)
                    rows = (await conn.execute(select(s.ts_ms, s.data).where(in_range))).all()
                    # decoding is CPU work: off the event loop, so other requests keep being served
                    buckets = await asyncio.to_thread(_raw_buckets, rows, base_ms, bucket_ms)
                    return _history_reply(battery_id, from_ms, to_ms, base_ms, bucket_ms, buckets)
                bucket_ms = 60_000
            bucket_ms = -(-bucket_ms // 60_000) * 60_000
            base_ms, bucket_ms = _bucket_grid(from_ms, to_ms, bucket_ms, points, 60_000)
            buckets: dict[int, list[Any]] = {}
            if sids:
                r = rollup_1m.c
                key = ((r.bucket_ms - base_ms) // bucket_ms).label("k")
                cols: list[Any] = [key]
                for name in codec.SERIES:
                    cols += [
                        func.sum(r[f"{name}_n"]),
                        func.min(r[f"{name}_min"]),
                        func.max(r[f"{name}_max"]),
                        func.sum(r[f"{name}_sum"]),
                    ]
                q = (
                    select(*cols)
                    .where(
                        r.stream_id.in_(sids),
                        r.bucket_ms >= from_ms - from_ms % 60_000,
                        r.bucket_ms < to_ms,
                    )
                    # by alias: PostgreSQL takes the expression's own bind parameters for another expression
                    .group_by(literal_column("k"))
                )
                for row in (await conn.execute(q)).all():
                    buckets[int(row[0])] = list(row[1:])
        return _history_reply(battery_id, from_ms, to_ms, base_ms, bucket_ms, buckets)

    async def export_info(self, battery_id: str) -> tuple[int, int]:
        """(cell columns, temp columns) for an export; raises NotFound before streaming starts."""
        async with self.engine.connect() as conn:
            b, _ = await self._battery_streams(conn, battery_id)
        return b.cell_count, b.temp_count

    async def export_rows(
        self, battery_id: str, from_ms: int, to_ms: int, page: int = 5000
    ) -> AsyncIterator[list[tuple[int, int, bytes]]]:
        """Pages of (ts_ms, seq, data) in time order, each page its own short query (no long-held cursor)."""
        async with self.engine.connect() as conn:
            _, sids = await self._battery_streams(conn, battery_id)
        if not sids:
            return
        s = samples.c
        last: tuple[int, int, int] | None = None
        while True:
            q = select(s.ts_ms, s.stream_id, s.seq, s.data).where(
                s.stream_id.in_(sids), s.ts_ms >= from_ms, s.ts_ms < to_ms
            )
            if last is not None:
                q = q.where(
                    or_(
                        s.ts_ms > last[0],
                        and_(
                            s.ts_ms == last[0],
                            or_(s.stream_id > last[1], and_(s.stream_id == last[1], s.seq > last[2])),
                        ),
                    )
                )
            q = q.order_by(s.ts_ms, s.stream_id, s.seq).limit(page)
            async with self.engine.connect() as conn:
                rows = (await conn.execute(q)).all()
            if not rows:
                return
            yield [(r.ts_ms, r.seq, r.data) for r in rows]
            if len(rows) < page:
                return
            last = (rows[-1].ts_ms, rows[-1].stream_id, rows[-1].seq)

    def _device_item(self, r: Any) -> dict[str, Any]:
        return {
            "device_id": r.name,
            "name": r.name,
            "last_contact": codec.ms_to_ts(r.last_contact_ms) if r.last_contact_ms else None,
            "heartbeat": orjson.loads(r.heartbeat) if r.heartbeat else None,
            "config_version": r.config_version,
            "reported_config_version": r.reported_config_version,
            "config": orjson.loads(r.config) if r.config else None,
        }

    async def devices(self) -> list[dict[str, Any]]:
        d = devices.c
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(select(devices).where(d.tenant_id == self.tenant_id).order_by(d.name))
            ).all()
        return [self._device_item(r) for r in rows]

    async def device(self, name: str) -> dict[str, Any]:
        d = devices.c
        async with self.engine.connect() as conn:
            r = (
                await conn.execute(select(devices).where(d.tenant_id == self.tenant_id, d.name == name))
            ).first()
        if r is None:
            raise NotFound(f"no device {name!r}")
        return self._device_item(r)
