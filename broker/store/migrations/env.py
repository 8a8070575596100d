"""Alembic environment: migrations run on the connection the store hands over, never on their
own engine, so that they share the store's transaction and its lock."""

from __future__ import annotations

from alembic import context

from broker.store.sql import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("broker migrations run through SqlEntityStore.migrate(), not alembic's CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table="broker_alembic_version",
)
with context.begin_transaction():
    context.run_migrations()
