"""1-hour rollups per stream (same layout as the 1-minute ones), filled from the existing 1-minute rollups.

Long history spans (a bucket of an hour or more) read these: a year is 8,760 rows per stream instead
of 525,600.
The fill is exact: n and sum add up, min / max of minutes are the min / max of the hour. On SQLite both
rollup tables become WITHOUT ROWID (rollup_1m is rebuilt: a copy, one-off).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# frozen copy of the series at this revision (db.ROLLUP_SERIES may grow later, with its own migration)
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


def _rollup_table(name: str) -> None:
    op.create_table(
        name,
        sa.Column("stream_id", sa.Integer, primary_key=True),
        sa.Column("bucket_ms", sa.BigInteger, primary_key=True),
        *(
            sa.Column(f"{series}_{part}", sa.Integer if part == "n" else sa.Float, nullable=True)
            for series in _SERIES
            for part in ("n", "min", "max", "sum")
        ),
        # SQLite: rows clustered on (stream, bucket), a range read is one b-tree walk, not an index walk plus
        # a rowid lookup per row (history over 7 days reads 10,080 minute rows)
        sqlite_with_rowid=False,
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # rollup_1m rebuilt WITHOUT ROWID too (same columns, same order)
        _rollup_table("rollup_1m_new")
        op.execute("INSERT INTO rollup_1m_new SELECT * FROM rollup_1m")
        op.drop_table("rollup_1m")
        op.rename_table("rollup_1m_new", "rollup_1m")
    _rollup_table("rollup_1h")
    cols = ["stream_id", "bucket_ms"]
    aggs = ["stream_id", "bucket_ms - bucket_ms % 3600000"]
    for name in _SERIES:
        cols += [f"{name}_n", f"{name}_min", f"{name}_max", f"{name}_sum"]
        # n is 0 (not NULL) where no minute carried the series, as ingest writes it
        aggs += [f"coalesce(sum({name}_n), 0)", f"min({name}_min)", f"max({name}_max)", f"sum({name}_sum)"]
    op.execute(
        f"INSERT INTO rollup_1h ({', '.join(cols)}) SELECT {', '.join(aggs)} FROM rollup_1m "
        "GROUP BY stream_id, bucket_ms - bucket_ms % 3600000"
    )


def downgrade() -> None:
    op.drop_table("rollup_1h")
