"""Helpers shared by the service's tests: fast settings, a started app, polling a job."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from bookgen.service.app import create_app
from bookgen.service.hooks import Hooks
from bookgen.service.settings import Settings, SimSettings

FAST_SIM = SimSettings(tokens_per_second=4000.0, time_to_first_token_s=0.0, jitter=0.0)


def fast_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for tests: a temp SQLite file, the simulated model at high speed, no telemetry."""
    values: dict[str, object] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'bookgen.db'}",
        "llm_base_url": None,
        "sim": FAST_SIM,
        "poll_interval_s": 0.05,
        "job_lease_s": 5.0,
        "llm_backoff_base_s": 0.01,
        "llm_backoff_max_s": 0.05,
        "telemetry": False,
        "debug_routes": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def running_app(
    settings: Settings, hooks: Hooks | None = None
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """A started app (lifespan run, hooks installed before startup) and an ASGI client for it."""
    application = create_app(settings)
    if hooks is not None:
        application.state.hooks = hooks
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield application, http


async def wait_for_status(
    client: httpx.AsyncClient, job_id: str, statuses: set[str], timeout_s: float = 30.0
) -> dict[str, Any]:
    """Poll the status route until the job reaches one of `statuses` (bounded in time)."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(f"/api/v1/biographies/{job_id}/status")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in statuses:
            return body
        assert time.monotonic() < deadline, f"job still {body['status']} after {timeout_s} s"
        await asyncio.sleep(0.05)


POSTGRES_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def postgres_database() -> Iterator[str]:
    """A throw-away database on the local PostgreSQL server; skips if the server is down."""
    import uuid

    import asyncpg  # type: ignore[import-untyped]
    import pytest

    name = f"bookgen_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=3)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as error:
        pytest.skip(f"PostgreSQL is not reachable at 127.0.0.1:5432 ({error!r})")
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
