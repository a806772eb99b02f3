"""The schema belongs to Alembic: upgrade to the newest revision, or say how far behind it is.

Deployments run `bookgen db upgrade` once (a compose one-shot, a Kubernetes Job) before the app
starts, and the app only checks the revision (`BOOKGEN_DB_AUTO_MIGRATE=false`); one machine may
let each process upgrade on start (the default), serialised by the store's schema lock.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Databases made before Alembic owned the schema (tables from create_all, no version table):
# the newest revision whose tables they already hold, so upgrading adds only what is missing.
LEGACY_REVISIONS = (("section_tasks", "0002"), ("jobs", "0001"))


class SchemaNotCurrent(RuntimeError):
    """The database is not at the revision this version of BookGen needs."""


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None, "no migrations found"
    return revision


def current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection) -> str:
    """Bring the schema to head on `connection` (in its transaction); return the head."""
    cfg = config(connection)
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" not in tables:
        for table, revision in LEGACY_REVISIONS:
            if table in tables:
                command.stamp(cfg, revision)
                break
    command.upgrade(cfg, "head")
    return head()


def check(connection: Connection) -> None:
    """Raise SchemaNotCurrent unless the database is at head (no migration is run)."""
    found, wanted = current(connection), head()
    if found != wanted:
        raise SchemaNotCurrent(
            f"the database schema is at revision {found or 'none'}, this BookGen needs {wanted}: "
            "run `bookgen db upgrade` (or set BOOKGEN_DB_AUTO_MIGRATE=true on one machine)"
        )
