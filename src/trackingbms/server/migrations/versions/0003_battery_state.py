"""Per-battery last known state: each measurement field's newest value and the ts it was read at.

Seeded from each battery's newest stored sample (the one the fleet view showed until now); fields that
sample lacked fill in as samples carrying them arrive.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

from trackingbms.server.store import packing

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# spelled out (not imported from db.py) so this revision keeps creating the same table as the code moves on
_FIELDS: tuple[tuple[str, Any], ...] = (
    ("voltage_v", sa.Float),
    ("current_a", sa.Float),
    ("soc_pct", sa.Float),
    ("remaining_ah", sa.Float),
    ("cycles", sa.Integer),
    ("state", sa.String(16)),
    ("charge_mos", sa.Boolean),
    ("discharge_mos", sa.Boolean),
    ("charger_connected", sa.Boolean),
    ("load_connected", sa.Boolean),
    ("cells_mv", sa.Text),
    ("temps_c", sa.Text),
    ("balancing", sa.Text),
    ("faults", sa.Text),
    ("fault_code", sa.Integer),
)
_JSON = frozenset(("cells_mv", "temps_c", "balancing", "faults"))


def upgrade() -> None:
    cols: list[sa.Column] = []
    for name, type_ in _FIELDS:
        cols.append(sa.Column(name, type_, nullable=True))
        cols.append(sa.Column(f"{name}_ts", sa.BigInteger, nullable=True))
    state = op.create_table(
        "battery_state",
        sa.Column("battery_id", sa.Integer, sa.ForeignKey("batteries.id"), primary_key=True),
        *cols,
    )
    batteries = sa.table(
        "batteries", sa.column("id", sa.Integer), sa.column("last_ts_ms"), sa.column("last_data")
    )
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(batteries.c.id, batteries.c.last_ts_ms, batteries.c.last_data).where(
            batteries.c.last_data.is_not(None)
        )
    ).all()
    seed: list[dict[str, Any]] = []
    for bid, ts, data in rows:
        fields = packing.unpack(data)
        row: dict[str, Any] = {"battery_id": bid}
        for name, _ in _FIELDS:
            v = fields.get(name)
            has = v is not None
            row[name] = (orjson.dumps(v).decode() if name in _JSON else v) if has else None
            row[f"{name}_ts"] = ts if has else None
        seed.append(row)
    if seed:
        op.bulk_insert(state, seed)


def downgrade() -> None:
    op.drop_table("battery_state")
