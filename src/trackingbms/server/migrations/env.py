"""Alembic environment: migrations run on the connection handed over by trackingbms.server.db.migrate."""

from __future__ import annotations

from alembic import context

from trackingbms.server.db import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `trackingbms server migrate` (it supplies the connection)")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
