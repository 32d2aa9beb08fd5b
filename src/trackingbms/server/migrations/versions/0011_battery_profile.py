"""A battery's profile: its chemistry and rated capacity, as its admin sets them.

The chemistry picks the built-in cell-voltage thresholds (LFP's 3.6 V over-voltage is a healthy NMC cell)
and the analytics engine's OCV curve (otherwise guessed from the first sample's cells); the rated capacity
is what SOH is measured against (otherwise the BMS's own figure). ``profile_ms`` says when either last
changed: other processes running the alarm service fingerprint it with the rule rows and rebuild.
All three nullable: a battery registered before keeps today's behaviour.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


#: the columns this revision adds, as db.py declares them
_COLUMNS = (
    ("chemistry", sa.String(8)),
    ("rated_capacity_ah", sa.Float),
    ("profile_ms", sa.BigInteger),
)


def upgrade() -> None:
    # 0001 creates "batteries" from the current declaration (db.py), which has the columns already on a
    # fresh database; a plain ADD COLUMN otherwise (a batch copy would trip SQLite's foreign keys)
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("batteries")}
    for name, type_ in _COLUMNS:
        if name not in have:
            op.add_column("batteries", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    # plain DROP COLUMN (SQLite >= 3.35): a batch rebuild of `batteries` would trip its foreign keys
    for name, _ in reversed(_COLUMNS):
        op.execute(f"ALTER TABLE batteries DROP COLUMN {name}")
