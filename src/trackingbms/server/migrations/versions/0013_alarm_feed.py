"""The alarm feed: the alarm service reads newly stored hot segments back by id (server/alarm_feed.py), so
that samples stored by any process get evaluated, in the one process holding the ``alarm-feed`` lease.

- ``service_leases``: (name, holder, expires_ms, epoch, cursor);
- SQLite: ``sample_segments`` rebuilt with AUTOINCREMENT, so that an id is never handed out twice (without
  it SQLite reuses max(id) + 1 once compaction has deleted the table's newest rows, and the feed, past that
  id already, would never see the new segments). PostgreSQL's serial ids are never reused already.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_COLUMNS = "id, stream_id, seq_min, seq_max, ts_min, ts_max, n, data"
_INDEXES = (
    ("sample_segments_stream_ts", "stream_id, ts_min", True),
    ("sample_segments_stream_seq_max", "stream_id, seq_max", False),
    ("sample_segments_stream_ts_max", "stream_id, ts_max", False),
)


def _rebuild_segments(autoincrement: bool) -> None:
    op.execute(
        "CREATE TABLE sample_segments_new ("
        f"id INTEGER PRIMARY KEY{' AUTOINCREMENT' if autoincrement else ''}, stream_id INTEGER NOT NULL, "
        "seq_min BIGINT NOT NULL, seq_max BIGINT NOT NULL, ts_min BIGINT NOT NULL, ts_max BIGINT NOT NULL, "
        "n INTEGER NOT NULL, data BLOB NOT NULL)"
    )
    op.execute(f"INSERT INTO sample_segments_new ({_COLUMNS}) SELECT {_COLUMNS} FROM sample_segments")
    op.execute("DROP TABLE sample_segments")
    op.execute("ALTER TABLE sample_segments_new RENAME TO sample_segments")
    for name, cols, unique in _INDEXES:
        op.execute(f"CREATE {'UNIQUE ' if unique else ''}INDEX {name} ON sample_segments ({cols})")


def upgrade() -> None:
    op.create_table(
        "service_leases",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("holder", sa.String(80), nullable=True),
        sa.Column("expires_ms", sa.BigInteger, nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("cursor", sa.BigInteger, nullable=True),
    )
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_segments(autoincrement=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_segments(autoincrement=False)
    op.drop_table("service_leases")
