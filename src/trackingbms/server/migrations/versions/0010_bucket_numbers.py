"""A tally table, ``bucket_numbers`` (the integers 0..5000), for history on SQLite.

History folds rollup rows into at most 5,000 buckets (``points``). Grouped by an expression of
``bucket_ms``, SQLite copies every row it reads into a temporary b-tree and sorts it before folding: for a
7-day span, 10,080 minute rows of 38 columns, two thirds of the query's time. Joined to this table instead
(bucket k reads its own ``bucket_ms`` range of the primary key), the rows arrive in bucket order and are
folded as they are read (store/history.py). Created on both backends so that their schemas stay alike;
PostgreSQL groups by hash and does not read it.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

#: frozen copy of db.BUCKET_NUMBERS_MAX at this revision (the API's largest ``points``)
_MAX = 5000


def upgrade() -> None:
    t = op.create_table("bucket_numbers", sa.Column("k", sa.Integer, primary_key=True, autoincrement=False))
    op.bulk_insert(t, [{"k": k} for k in range(_MAX + 1)])


def downgrade() -> None:
    op.drop_table("bucket_numbers")
