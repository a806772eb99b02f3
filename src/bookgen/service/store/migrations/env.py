"""Alembic environment: runs on the connection `bookgen.service.store.migrate` hands over.

The connection comes from the store's own (async) engine, already inside the transaction that
holds the schema lock, so every URL the store accepts works and concurrent starts serialise.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `bookgen db upgrade`, not the alembic command")

# Batch mode lets later revisions alter SQLite tables (it has no ALTER COLUMN).
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
