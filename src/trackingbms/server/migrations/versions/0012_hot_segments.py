"""Hot segments: the per-sample ``samples`` table (PostgreSQL: partitioned by month) is replaced by
``sample_segments``, one row per (stream, batch) (store/segments.py).

The hot rows still in ``samples`` (the last hour or so; older ones are in blocks since 0009) are read per
stream in ts order, page by page, and written as segments of at most 500 samples, then the table is dropped
(on PostgreSQL with its monthly partitions). All of it in the migration's one transaction: a failure leaves
the database as it was. The downgrade rebuilds the per-sample table (and its partitions) from the segments.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import sqlalchemy as sa
from alembic import op

from trackingbms.server.store import segments

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_PAGE = 50_000
#: samples per converted segment (what one batch of a gateway typically holds)
_CHUNK = 500

_samples = sa.table(
    "samples", sa.column("stream_id"), sa.column("seq"), sa.column("ts_ms"), sa.column("data", sa.LargeBinary)
)
_segments = sa.table(
    "sample_segments",
    sa.column("stream_id"),
    sa.column("seq_min"),
    sa.column("seq_max"),
    sa.column("ts_min"),
    sa.column("ts_max"),
    sa.column("n"),
    sa.column("data", sa.LargeBinary),
)
_streams = sa.table("streams", sa.column("id"))


def upgrade() -> None:
    op.create_table(
        "sample_segments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("stream_id", sa.Integer, nullable=False),
        sa.Column("seq_min", sa.BigInteger, nullable=False),
        sa.Column("seq_max", sa.BigInteger, nullable=False),
        sa.Column("ts_min", sa.BigInteger, nullable=False),
        sa.Column("ts_max", sa.BigInteger, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_index("sample_segments_stream_ts", "sample_segments", ["stream_id", "ts_min"], unique=True)
    op.create_index("sample_segments_stream_seq_max", "sample_segments", ["stream_id", "seq_max"])
    op.create_index("sample_segments_stream_ts_max", "sample_segments", ["stream_id", "ts_max"])
    bind = op.get_bind()
    s = _samples.c
    for sid in bind.execute(sa.select(_streams.c.id).order_by(_streams.c.id)).scalars().all():
        after: int | None = None
        while True:
            q = sa.select(s.seq, s.ts_ms, s.data).where(s.stream_id == sid)
            if after is not None:
                q = q.where(s.ts_ms > after)
            page = bind.execute(q.order_by(s.ts_ms).limit(_PAGE)).all()
            if not page:
                break
            after = page[-1][1]
            rows = []
            for k in range(0, len(page), _CHUNK):
                part = page[k : k + _CHUNK]
                seqs = np.array([r[0] for r in part], dtype=np.int64)
                tss = np.array([r[1] for r in part], dtype=np.int64)
                rows += [
                    {"stream_id": sid, **g._asdict()} for g in segments.build(seqs, tss, [r[2] for r in part])
                ]
            bind.execute(sa.insert(_segments), rows)
    op.drop_table("samples")  # PostgreSQL: a partitioned table's partitions go with it


def downgrade() -> None:
    bind = op.get_bind()
    pg = bind.dialect.name == "postgresql"
    if pg:
        op.execute(
            "CREATE TABLE samples (ts_ms bigint NOT NULL, seq bigint NOT NULL, stream_id integer NOT NULL, "
            "data bytea NOT NULL, PRIMARY KEY (stream_id, ts_ms)) PARTITION BY RANGE (ts_ms)"
        )
    else:
        op.execute(
            "CREATE TABLE samples (stream_id INTEGER NOT NULL, seq BIGINT NOT NULL, ts_ms BIGINT NOT NULL, "
            "data BLOB NOT NULL, PRIMARY KEY (stream_id, seq)) WITHOUT ROWID"
        )
        op.execute("CREATE UNIQUE INDEX samples_stream_ts ON samples (stream_id, ts_ms)")
    months: set[str] = set()
    if pg:
        # the months of the blocks too: downgrading past 0009 moves their samples back into this table
        lo, hi = bind.execute(sa.text("SELECT min(ts_min), max(ts_max) FROM sample_blocks")).one()
        while lo is not None and lo <= hi:
            lo = _ensure_month(lo, months)
    for sid, payload in bind.execute(sa.text("SELECT stream_id, data FROM sample_segments")).all():
        rows = segments.decode(payload)
        t = rows[0].ts_ms
        while pg and t <= rows[-1].ts_ms:
            t = _ensure_month(t, months)
        bind.execute(
            sa.insert(_samples),
            [{"stream_id": sid, "seq": r.seq, "ts_ms": r.ts_ms, "data": r.data} for r in rows],
        )
    op.drop_table("sample_segments")


def _ensure_month(ts_ms: int, made: set[str]) -> int:
    """The monthly partition of ``ts_ms`` (as store/ingest.py created them before this revision); returns
    where the next month starts."""
    d = datetime.fromtimestamp(ts_ms / 1000, UTC)
    name = f"samples_{d.year:04d}_{d.month:02d}"
    start = datetime(d.year, d.month, 1, tzinfo=UTC)
    end = datetime(d.year + (d.month == 12), d.month % 12 + 1, 1, tzinfo=UTC)
    lo, hi = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    if name not in made:
        op.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF samples FOR VALUES FROM ({lo}) TO ({hi})")
        made.add(name)
    return hi
