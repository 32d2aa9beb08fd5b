"""PostgreSQL: the hot segments' payloads are TOAST-compressed with lz4 instead of pglz.

A segment's payload (a batch's samples of one stream, ~74 bytes each) is over TOAST's 2 kB threshold, so
PostgreSQL compresses every one as it is written: with pglz that was a tenth of the machine's CPU at
55,000 samples/s (`bench/ingest.py --servers 2`: 56,000 → 62,000–66,000 samples/s with lz4, hot bytes per
sample 27 → 36). lz4 needs PostgreSQL 14 built with it (Debian's and the official images are); without it
the column keeps the server's default and the migration says so. SQLite stores payloads as they are.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def _set_compression(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    if int(bind.execute(sa.text("SHOW server_version_num")).scalar_one()) < 140000:
        log.warning("PostgreSQL before 14: hot segments keep pglz compression")
        return
    try:
        with bind.begin_nested():  # a server without lz4 refuses: keep the default, not a failed upgrade
            bind.execute(sa.text(f"ALTER TABLE sample_segments ALTER COLUMN data SET COMPRESSION {method}"))
    except sa.exc.DBAPIError as e:
        log.warning("hot segments keep the default compression (%s)", str(e.orig).splitlines()[0])


def upgrade() -> None:
    _set_compression("lz4")


def downgrade() -> None:
    _set_compression("pglz")
