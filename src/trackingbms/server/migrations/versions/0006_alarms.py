"""Alarm rules (tenant / site / battery overrides), alarms with their lifecycle, per-battery analytics
state and health, notification targets.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alarm_rules",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False, index=True),
        sa.Column("site_id", sa.Integer, sa.ForeignKey("sites.id"), nullable=True),
        sa.Column("battery_pk", sa.Integer, sa.ForeignKey("batteries.id"), nullable=True),
        sa.Column("rule_id", sa.String(100), nullable=False),
        sa.Column("metric", sa.String(100), nullable=True),
        sa.Column("op", sa.String(1), nullable=True),
        sa.Column("set_value", sa.Float, nullable=True),
        sa.Column("clear_value", sa.Float, nullable=True),
        sa.Column("set_delay_s", sa.Float, nullable=True),
        sa.Column("clear_delay_s", sa.Float, nullable=True),
        sa.Column("severity", sa.String(16), nullable=True),
        sa.Column("repeat_s", sa.Float, nullable=True),
        sa.Column("notify_on_clear", sa.Boolean, nullable=True),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("title", sa.String(200), nullable=True),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "alarms",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("battery_pk", sa.Integer, sa.ForeignKey("batteries.id"), nullable=False),
        sa.Column("rule_id", sa.String(100), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("cell", sa.Integer, nullable=True),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("raised_ms", sa.BigInteger, nullable=False),
        sa.Column("acked_ms", sa.BigInteger, nullable=True),
        sa.Column("acked_by", sa.String(320), nullable=True),
        sa.Column("cleared_ms", sa.BigInteger, nullable=True),
        sa.Column("clear_message", sa.Text, nullable=True),
    )
    op.create_index("alarms_tenant_raised", "alarms", ["tenant_id", "raised_ms"])
    op.create_index(
        "alarms_one_active",
        "alarms",
        ["battery_pk", "rule_id"],
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )
    op.create_table(
        "battery_analytics",
        sa.Column("battery_pk", sa.Integer, sa.ForeignKey("batteries.id"), primary_key=True),
        sa.Column("t_last_ms", sa.BigInteger, nullable=True),
        sa.Column("state", sa.Text, nullable=True),
        sa.Column("health", sa.Text, nullable=True),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "notify_targets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant_id", sa.Integer, sa.ForeignKey("tenants.id"), nullable=False, index=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("severities", sa.String(64), nullable=False),
        sa.Column("recovery", sa.Boolean, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notify_targets")
    op.drop_table("battery_analytics")
    op.drop_index("alarms_one_active", "alarms")
    op.drop_index("alarms_tenant_raised", "alarms")
    op.drop_table("alarms")
    op.drop_table("alarm_rules")
