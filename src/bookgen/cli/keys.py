"""`bookgen keys`: the API keys of principals, in the store BOOKGEN_DATABASE_URL names."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click

from bookgen.service.settings import get_settings

T = TypeVar("T")

# The key a client command (loadtest, verify) sends; the environment variable its Locust users read.
api_key_option = click.option(
    "--api-key",
    envvar="BOOKGEN_API_KEY",
    default=None,
    help="Sent as Authorization: Bearer on every request, for an API that requires keys "
    "(`bookgen keys create`); default BOOKGEN_API_KEY.",
)


def _with_store(work: Callable[..., Awaitable[T]]) -> T:
    from bookgen.service.store import Store

    async def run() -> T:
        settings = get_settings()
        store = Store.from_url(settings.database_url)
        try:
            await store.prepare_schema(migrate=settings.db_auto_migrate)
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


@click.group()
def keys() -> None:
    """API keys: requests carry `Authorization: Bearer <key>`; a key's name is its principal."""


@keys.command()
@click.argument("name")
@click.option(
    "--quota",
    type=click.IntRange(min=1),
    default=None,
    help="queued + running books this principal may have at once (default: "
    "BOOKGEN_PRINCIPAL_MAX_ACTIVE, 0 = no cap)",
)
@click.option("--admin", is_flag=True, help="sees and cancels every principal's jobs")
def create(name: str, quota: int | None, admin: bool) -> None:
    """Make a key for principal NAME; prints it once (only its hash is stored).

    A second key with the same name is the same principal (rotate: create, then revoke the old
    one by its id).
    """
    from bookgen.service.auth import check_name, create_key

    try:
        check_name(name)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="NAME") from None
    key, row = _with_store(lambda store: create_key(store, name, admin=admin, quota=quota))
    click.echo(key)
    role = "admin" if admin else f"quota {quota if quota is not None else 'default'}"
    click.echo(f"key {row.id} for {name} ({role}); store it now, it is not shown again", err=True)


@keys.command(name="list")
@click.option("--all", "show_all", is_flag=True, help="include revoked keys")
def list_keys(show_all: bool) -> None:
    """The keys (id, name, prefix, role, quota, created, revoked); never the keys themselves."""
    rows = _with_store(lambda store: store.keys(include_revoked=show_all))
    click.echo(f"{'id':<13} {'name':<24} {'prefix':<11} {'role':<6} {'quota':<7} created / revoked")
    for row in rows:
        revoked = f" / {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else ""
        quota = str(row.quota) if row.quota is not None else "-"
        click.echo(
            f"{row.id:<13} {row.name:<24} {row.prefix + '…':<11} "
            f"{'admin' if row.admin else 'user':<6} {quota:<7} {row.created_at:%Y-%m-%d %H:%M}"
            f"{revoked}"
        )


@keys.command()
@click.argument("name_or_id")
def revoke(name_or_id: str) -> None:
    """Revoke the key with this id, or every key of the principal with this name.

    API processes stop accepting it within BOOKGEN_KEY_CACHE_TTL_S (5 s).
    """
    rows = _with_store(lambda store: store.revoke_keys(name_or_id))
    if not rows:
        raise click.ClickException(f"no active key has the id or name {name_or_id!r}")
    for row in rows:
        click.echo(f"revoked {row.id} ({row.name})")
