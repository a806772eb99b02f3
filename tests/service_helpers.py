"""Helpers shared by the service's tests: fast settings, a started app, polling a job."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from celery import Celery
from fastapi import FastAPI

from bookgen.service.app import create_app
from bookgen.service.hooks import Hooks
from bookgen.service.queue.publisher import Publisher
from bookgen.service.settings import Settings, SimSettings
from bookgen.service.store import JobRow
from bookgen.service.store.models import utcnow
from bookgen.service.store.tasks import SectionTasks
from bookgen.service.worker import SectionWorker

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


# --- the worker tier without a broker ----------------------------------------------------------
Piece = tuple[str, int, dict[str, str]]


class LocalPublisher(Publisher):
    """Deliveries go to an in-memory queue instead of a broker."""

    def __init__(self) -> None:
        super().__init__(Celery("test", set_as_current=False))
        self.queue: queue.Queue[Piece] = queue.Queue()
        self.sent: list[tuple[str, int]] = []

    def publish_now(self, job_id: str, index: int, carrier: dict[str, str]) -> None:
        self.sent.append((job_id, index))
        self.queue.put((job_id, index, carrier))


class Pool:
    """`threads` consumer threads feeding the worker, as Celery's threads pool does."""

    def __init__(self, worker: SectionWorker, publisher: LocalPublisher, threads: int) -> None:
        self.worker, self.publisher = worker, publisher
        self.stop = threading.Event()
        self.outcomes: list[str] = []
        self.threads = [threading.Thread(target=self._consume) for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def _consume(self) -> None:
        while not self.stop.is_set():
            try:
                job_id, index, carrier = self.publisher.queue.get(timeout=0.05)
            except queue.Empty:
                continue
            self.outcomes.append(self.worker.run(job_id, index, carrier))

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def tier_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "broker_url": "memory://",
        "section_lease_s": 1.5,
        "reap_interval_s": 0.2,
        "worker_drain_s": 0.0,
    }
    values.update(overrides)
    return fast_settings(tmp_path, **values)


TRACEPARENT = {"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}


def submit_book(
    worker: SectionWorker,
    publisher: LocalPublisher,
    chapters: int = 3,
    carrier: dict[str, str] | None = None,
) -> str:
    job = JobRow(
        id=f"job{time.monotonic_ns()}",
        character="Ada Lovelace",
        chapters=chapters,
        total_words=chapters * 300,
        model="bookgen-sim",
        status="pending",
        created_at=utcnow(),
        sources=[],
        trace_context=dict(TRACEPARENT if carrier is None else carrier),
    )
    tasks = SectionTasks(worker.store)  # type: ignore[arg-type]
    pieces = worker._call(tasks.submit(job))
    for piece in pieces:
        publisher.publish_now(job.id, piece.index, job.trace_context)
    return job.id


def wait_for_job(
    worker: SectionWorker, job_id: str, statuses: set[str], timeout_s: float = 30.0
) -> JobRow:
    assert worker.store is not None
    deadline = time.monotonic() + timeout_s
    while True:
        worker.store._finished.clear()
        job = worker._call(worker.store.get_job(job_id))
        assert job is not None
        if job.status in statuses:
            return job
        assert time.monotonic() < deadline, f"job still {job.status}"
        time.sleep(0.05)
