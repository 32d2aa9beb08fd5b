"""Compressed history blocks: the ``sample_blocks`` table, each stream's ``cold_ts_ms`` watermark, and the
existing samples older than the hot window converted into blocks (store/blocks.py, store/cold.py).

The conversion runs inside the migration's one transaction: a failure leaves the database as it was. Rows
are read per stream in ts order, page by page, cut into blocks as the compaction task cuts them, and
deleted from ``samples`` once their blocks are written.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

from trackingbms.server.store import blocks, cold

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_PAGE = 50_000


def upgrade() -> None:
    op.create_table(
        "sample_blocks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("stream_id", sa.Integer, nullable=False),
        sa.Column("ts_min", sa.BigInteger, nullable=False),
        sa.Column("ts_max", sa.BigInteger, nullable=False),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_index("sample_blocks_stream_ts", "sample_blocks", ["stream_id", "ts_min"], unique=True)
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # the payload is already zlib-compressed: PostgreSQL's own TOAST compression would only spend CPU
        op.execute("ALTER TABLE sample_blocks ALTER COLUMN data SET STORAGE EXTERNAL")
    # 0001 creates `streams` from the current model, which has the column already on a new database
    if "cold_ts_ms" not in {c["name"] for c in sa.inspect(bind).get_columns("streams")}:
        with op.batch_alter_table("streams") as b:
            b.add_column(sa.Column("cold_ts_ms", sa.BigInteger, nullable=True))
    convert(bind, int(time.time() * 1000) - cold.HOT_WINDOW_MS)


def convert(bind: sa.Connection, cutoff_ms: int) -> None:
    """Move every stream's samples older than ``cutoff_ms`` into blocks (the tables as of this revision)."""
    samples = sa.table(
        "samples", sa.column("stream_id"), sa.column("seq"), sa.column("ts_ms"), sa.column("data")
    )
    blocks_t = sa.table(
        "sample_blocks",
        sa.column("stream_id"),
        sa.column("ts_min"),
        sa.column("ts_max"),
        sa.column("n"),
        sa.column("data", sa.LargeBinary),
    )
    streams = sa.table("streams", sa.column("id"), sa.column("cold_ts_ms"))
    s = samples.c
    for sid in bind.execute(sa.select(streams.c.id).order_by(streams.c.id)).scalars().all():
        after: int | None = None
        pending: list[blocks.Row] = []
        top: int | None = None

        def write(chunks: list[list[blocks.Row]], sid: int = sid) -> None:
            bind.execute(
                sa.insert(blocks_t),
                [
                    {
                        "stream_id": sid,
                        "ts_min": c[0].ts_ms,
                        "ts_max": c[-1].ts_ms,
                        "n": len(c),
                        "data": blocks.encode(c),
                    }
                    for c in chunks
                ],
            )

        while True:
            q = sa.select(s.seq, s.ts_ms, s.data).where(s.stream_id == sid, s.ts_ms < cutoff_ms)
            if after is not None:
                q = q.where(s.ts_ms > after)
            page = [blocks.Row(*r) for r in bind.execute(q.order_by(s.ts_ms).limit(_PAGE)).all()]
            if not page:
                break
            after = page[-1].ts_ms
            chunks = cold.chunk(pending + page)
            pending = chunks.pop()  # the last run may continue on the next page
            if chunks:
                write(chunks)
            top = after
        if pending:
            write([pending])
        if top is not None:
            bind.execute(sa.delete(samples).where(s.stream_id == sid, s.ts_ms < cutoff_ms, s.ts_ms <= top))
            bind.execute(sa.update(streams).where(streams.c.id == sid).values(cold_ts_ms=top))


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT stream_id, data FROM sample_blocks")).all()
    samples = sa.table(
        "samples",
        sa.column("stream_id"),
        sa.column("seq"),
        sa.column("ts_ms"),
        sa.column("data", sa.LargeBinary),
    )
    for sid, payload in rows:
        bind.execute(
            sa.insert(samples),
            [
                {"stream_id": sid, "seq": r.seq, "ts_ms": r.ts_ms, "data": r.data}
                for r in blocks.decode(payload)
            ],
        )
    with op.batch_alter_table("streams") as b:
        b.drop_column("cold_ts_ms")
    op.drop_table("sample_blocks")
