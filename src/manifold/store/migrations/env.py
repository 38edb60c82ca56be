"""Alembic's environment: the caller (manifold.store.schema) hands over an open connection, already inside
the transaction (and, on PostgreSQL, holding the advisory lock) the upgrade runs in."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

connection = context.config.attributes["connection"]
assert isinstance(connection, Connection)
context.configure(connection=connection, target_metadata=None, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
