"""Initial schema: tenants, users, sites, devices, tokens, batteries, streams, samples.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from trackingbms.server import db

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: the per-sample table as this revision created it (frozen here: migration 0012 replaced it by segments)
PG_SAMPLES_DDL = (
    "CREATE TABLE samples (ts_ms bigint NOT NULL, seq bigint NOT NULL, stream_id integer NOT NULL, "
    "data bytea NOT NULL, PRIMARY KEY (stream_id, ts_ms)) PARTITION BY RANGE (ts_ms)"
)


def sqlite_samples_table() -> sa.Table:
    return sa.Table(
        "samples",
        sa.MetaData(),
        sa.Column("stream_id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("ts_ms", sa.BigInteger, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Index("samples_stream_ts", "stream_id", "ts_ms", unique=True),
        sqlite_with_rowid=False,
    )


_TABLES = ("tenants", "users", "user_tokens", "sites", "devices", "device_tokens", "batteries", "streams")


def upgrade() -> None:
    bind = op.get_bind()
    # the first revision creates the v1 tables as declared; later revisions use explicit op.* changes
    db.metadata.create_all(bind, tables=[db.metadata.tables[t] for t in _TABLES])
    if bind.dialect.name == "postgresql":
        op.execute(PG_SAMPLES_DDL)
    else:
        sqlite_samples_table().create(bind)


def downgrade() -> None:
    op.drop_table("samples")
    for t in reversed(_TABLES):
        op.drop_table(t)
