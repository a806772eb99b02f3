"""Alembic owns the schema: the migrations build exactly the models' tables, on both backends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from bookgen.service.store import Store
from bookgen.service.store import migrate as schema
from bookgen.service.store.models import Base, JobRow


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def _run(engine: AsyncEngine, fn: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.run_sync(fn)


async def test_migrations_build_the_models_schema(database_url: str) -> None:
    store = Store.from_url(database_url)
    try:
        await store.create_tables()
        assert await _run(store.engine, schema.current) == schema.head()
        assert await _run(store.engine, _differences) == []
        await store.create_tables()  # a second start finds nothing to do
        assert await _run(store.engine, schema.current) == schema.head()
    finally:
        await store.close()


async def test_a_database_from_before_the_worker_tier_gains_only_its_ledger(
    database_url: str,
) -> None:
    store = Store.from_url(database_url)
    try:
        async with store.engine.begin() as conn:
            tables = [Base.metadata.tables[name] for name in ("jobs", "sections")]
            await conn.run_sync(lambda c: Base.metadata.create_all(c, tables=tables))
        await store.add_job(
            JobRow(id="a" * 32, character="Ada", chapters=1, total_words=100, model="m")
        )
        await store.create_tables()
        names = await _run(store.engine, lambda c: set(inspect(c).get_table_names()))
        assert {"jobs", "sections", "section_tasks", "alembic_version"} <= names
        assert await store.get_job("a" * 32) is not None, "upgrading must keep existing rows"
        assert await _run(store.engine, _differences) == []
    finally:
        await store.close()


async def test_without_auto_migrate_an_old_schema_stops_the_start(database_url: str) -> None:
    store = Store.from_url(database_url)
    try:
        with pytest.raises(schema.SchemaNotCurrent, match="bookgen db upgrade"):
            await store.prepare_schema(migrate=False)
        names = await _run(store.engine, lambda c: set(inspect(c).get_table_names()))
        assert "jobs" not in names, "a check must not create tables"
        await store.prepare_schema(migrate=True)
        await store.prepare_schema(migrate=False)
    finally:
        await store.close()


async def test_processes_starting_together_migrate_once(database_url: str) -> None:
    stores = [Store.from_url(database_url) for _ in range(4)]
    try:
        await asyncio.gather(*(s.create_tables() for s in stores))
        assert await _run(stores[0].engine, schema.current) == schema.head()
        assert await _run(stores[0].engine, _differences) == []
    finally:
        await asyncio.gather(*(s.close() for s in stores))
