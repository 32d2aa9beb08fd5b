"""Initial schema: tenants, users, sites, devices, tokens, batteries, streams, samples.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from trackingbms.server import db

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TABLES = ("tenants", "users", "user_tokens", "sites", "devices", "device_tokens", "batteries", "streams")


def upgrade() -> None:
    bind = op.get_bind()
    # the first revision creates the v1 tables as declared; later revisions use explicit op.* changes
    db.metadata.create_all(bind, tables=[db.metadata.tables[t] for t in _TABLES])
    if bind.dialect.name == "postgresql":
        op.execute(db.PG_SAMPLES_DDL)
    else:
        db.samples.create(bind)


def downgrade() -> None:
    op.drop_table("samples")
    for t in reversed(_TABLES):
        op.drop_table(t)
