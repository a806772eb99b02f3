"""`bookgen db`: the schema, owned by Alembic migrations."""

from __future__ import annotations

import asyncio

import click

from bookgen.service.settings import get_settings


@click.group()
def db() -> None:
    """Database schema: upgrade it, or show where it stands."""


async def _run(url: str, *, migrate: bool) -> tuple[str | None, str]:
    from bookgen.service.store import Store
    from bookgen.service.store import migrate as schema

    store = Store.from_url(url)
    try:
        if migrate:
            await store.prepare_schema(migrate=True)
        async with store.engine.connect() as conn:
            found = await conn.run_sync(schema.current)
        return found, schema.head()
    finally:
        await store.close()


@db.command()
def upgrade() -> None:
    """Bring BOOKGEN_DATABASE_URL's schema to the newest revision (run once per deployment)."""
    found, head = asyncio.run(_run(get_settings().database_url, migrate=True))
    click.echo(f"schema at revision {found} (head {head})")


@db.command()
def current() -> None:
    """Print the schema's revision; exit 1 when it is not the newest."""
    found, head = asyncio.run(_run(get_settings().database_url, migrate=False))
    click.echo(f"schema at revision {found or 'none'} (head {head})")
    if found != head:
        raise SystemExit(1)
