"""Regions and stateless API processes: a tenant's home region, and per-device rate-limit buckets shared by
every API process on one PostgreSQL database.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: the tenant lives in the region of the deployment that holds it (every tenant before regions)
    # 0001 creates "tenants" from the current declaration (db.py), which has the column already on a fresh
    # database; a plain ADD COLUMN otherwise (a batch copy of "tenants" would trip SQLite's foreign keys)
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("tenants")}
    if "region" not in columns:
        op.add_column("tenants", sa.Column("region", sa.String(40), nullable=True))
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(200), primary_key=True),  # "<limiter>:<device id>"
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),  # epoch seconds
        sa.Column("granted", sa.Boolean, nullable=False),  # the last decision, for RETURNING
    )


def downgrade() -> None:
    op.drop_table("rate_buckets")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("region")
