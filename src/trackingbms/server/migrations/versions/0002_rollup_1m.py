"""1-minute rollups per stream (count / min / max / sum of each history series).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SERIES = (
    "voltage_v",
    "current_a",
    "soc_pct",
    "power_w",
    "cell_min_mv",
    "cell_max_mv",
    "cell_delta_mv",
    "temp_max_c",
    "temp_min_c",
)


def upgrade() -> None:
    op.create_table(
        "rollup_1m",
        sa.Column("stream_id", sa.Integer, primary_key=True),
        sa.Column("bucket_ms", sa.BigInteger, primary_key=True),
        *(
            sa.Column(f"{name}_{part}", sa.Integer if part == "n" else sa.Float, nullable=True)
            for name in _SERIES
            for part in ("n", "min", "max", "sum")
        ),
    )


def downgrade() -> None:
    op.drop_table("rollup_1m")
