"""Login throttling state shared by every server process on one database (PostgreSQL deployments with
several API processes; the embedded SQLite server keeps it in memory).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(400), primary_key=True),  # "account:<email>" or "address:<host>"
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("locked_until", sa.Float, nullable=False),  # epoch seconds
        sa.Column("last_failure", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("login_throttle")
