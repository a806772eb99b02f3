"""The job store: every read and write the service makes, each a short transaction."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeAlias

from sqlalchemy import Row, event, func, or_, select, text, update
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry

from bookgen.service.store import migrate as migrate_schema
from bookgen.service.store.models import JobRow, SectionRow, utcnow

ACTIVE = ("pending", "in_progress")
FINISHED = ("completed", "failed", "cancelled")
ERROR_LIMIT = 500  # characters of a failure reason kept with a job
FINISHED_CACHE_SIZE = 4096
VERSIONS_KEPT = 16384
SCHEMA_LOCK = 0x426F6F6B  # "Book": serialises table creation between workers on PostgreSQL


AnyRow: TypeAlias = Row[*tuple[Any, ...]]
# What a list item shows: no JSON or text columns beyond `error` (outline, sources, trace).
LIST_COLUMNS = (
    JobRow.id,
    JobRow.status,
    JobRow.character,
    JobRow.chapters,
    JobRow.total_words,
    JobRow.model,
    JobRow.sections_completed,
    JobRow.chapters_completed,
    JobRow.words_written,
    JobRow.input_tokens,
    JobRow.output_tokens,
    JobRow.cost_usd,
    JobRow.created_at,
    JobRow.started_at,
    JobRow.completed_at,
    JobRow.error,
)


_SCHEMA_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _schema_lock() -> asyncio.Lock:
    """One schema change at a time in this process: Alembic keeps its context in a global."""
    loop = asyncio.get_running_loop()
    lock = _SCHEMA_LOCKS.get(loop)
    if lock is None:
        lock = _SCHEMA_LOCKS[loop] = asyncio.Lock()
    return lock


class LeaseLost(Exception):
    """This worker no longer owns the job (lease taken over, or the job was cancelled)."""


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class NewSection:
    job_id: str
    index: int
    kind: str
    title: str
    text: str
    words: int
    target_words: int
    deviation: float
    attempts: int


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 10})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        # SQLite has one writer at a time; queueing this process's writes here, instead of in
        # SQLite's sleeping busy handler, keeps write latency low. PostgreSQL needs no such lock.
        self._write_lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        # A finished job never changes again, so its row can be served from memory.
        self._finished: OrderedDict[str, JobRow] = OrderedDict()
        # Versions of what readers can see, bumped after each local write commits: `version` for
        # any job, `job_version(id)` per job. Read caches key on them (see routes/biographies.py).
        self.version = 0
        self._job_versions: OrderedDict[str, int] = OrderedDict()

    def touch(self, job_id: str) -> None:
        """Record a committed local write to `job_id` (call after the commit, never before)."""
        self.version += 1
        self._job_versions[job_id] = self.version
        self._job_versions.move_to_end(job_id)
        if len(self._job_versions) > VERSIONS_KEPT:
            self._job_versions.popitem(last=False)

    def job_version(self, job_id: str) -> int:
        """The store's version at the last local write to this job (0 if none is remembered)."""
        return self._job_versions.get(job_id, 0)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction, for statements that write."""
        async with contextlib.AsyncExitStack() as stack:
            if self._write_lock is not None:
                await stack.enter_async_context(self._write_lock)
            session = await stack.enter_async_context(self.sessions())
            await stack.enter_async_context(session.begin())
            yield session

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(make_engine(url))

    async def create_tables(self) -> None:
        """Migrate the schema to the newest revision; safe when several workers start at once."""
        await self.prepare_schema(migrate=True)

    async def prepare_schema(self, *, migrate: bool) -> None:
        """Upgrade the schema (Alembic), or only check it is current when `migrate` is false."""
        async with _schema_lock():
            await self._prepare_schema(migrate)

    async def _prepare_schema(self, migrate: bool) -> None:
        for attempt in range(5):
            try:
                async with self.engine.begin() as conn:
                    if conn.dialect.name == "postgresql":
                        await conn.execute(text(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})"))
                    await conn.run_sync(migrate_schema.upgrade if migrate else migrate_schema.check)
                return
            except DBAPIError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> bool:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True

    # --- submission and reads ------------------------------------------------------------
    async def count_pending(self) -> int:
        async with self.sessions() as s:
            n = await s.scalar(select(func.count()).where(JobRow.status == "pending"))
        return int(n or 0)

    async def pending(self) -> tuple[int, datetime | None]:
        """Jobs waiting to start, and when the oldest of them was submitted."""
        query = select(func.count(), func.min(JobRow.created_at)).where(JobRow.status == "pending")
        async with self.sessions() as s:
            count, oldest = (await s.execute(query)).one()
        return int(count or 0), oldest

    async def oldest_running_created_at(self) -> datetime | None:
        query = select(func.min(JobRow.created_at)).where(JobRow.status == "in_progress")
        async with self.sessions() as s:
            oldest: datetime | None = await s.scalar(query)
        return oldest

    async def add_job(self, job: JobRow) -> JobRow:
        async with self.transaction() as s:
            s.add(job)
        self.touch(job.id)
        return job

    async def get_job(self, job_id: str) -> JobRow | None:
        job = self._finished.get(job_id)
        if job is not None:
            return job
        async with self.sessions() as s:
            job = await s.get(JobRow, job_id)
        if job is not None and job.status in FINISHED:
            self._finished[job_id] = job
            if len(self._finished) > FINISHED_CACHE_SIZE:
                self._finished.popitem(last=False)
        return job

    async def list_jobs(
        self, *, status: str | None, offset: int, limit: int
    ) -> tuple[list[AnyRow], int]:
        """A page of jobs (the columns of `LIST_COLUMNS`, not whole rows) and the total."""
        query = select(*LIST_COLUMNS).order_by(JobRow.created_at.desc(), JobRow.id.desc())
        count = select(func.count()).select_from(JobRow)
        if status is not None:
            query = query.where(JobRow.status == status)
            count = count.where(JobRow.status == status)
        async with self.sessions() as s:
            rows = list((await s.execute(query.offset(offset).limit(limit))).all())
            total = int(await s.scalar(count) or 0)
        return rows, total

    async def sections(self, job_id: str) -> list[SectionRow]:
        query = select(SectionRow).where(SectionRow.job_id == job_id).order_by(SectionRow.index)
        async with self.sessions() as s:
            return list((await s.scalars(query)).all())

    async def cancel(self, job_id: str) -> JobRow | None:
        """Cancel a pending or running job; returns the job as it now is (None if unknown)."""
        async with self.transaction() as s:
            await s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status.in_(ACTIVE))
                .values(
                    status="cancelled",
                    completed_at=utcnow(),
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
        self.touch(job_id)
        return await self.get_job(job_id)

    # --- worker side ---------------------------------------------------------------------
    async def claim(self, owner: str, lease_s: float) -> JobRow | None:
        """Atomically take the oldest pending job, or one whose worker's lease expired."""
        now = utcnow()
        candidate = (
            select(JobRow.id)
            .where(
                or_(
                    JobRow.status == "pending",
                    (JobRow.status == "in_progress") & (JobRow.lease_expires_at < now),
                )
            )
            .order_by(JobRow.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = (
            update(JobRow)
            .where(
                JobRow.id == candidate,
                or_(
                    JobRow.status == "pending",
                    (JobRow.status == "in_progress") & (JobRow.lease_expires_at < now),
                ),
            )
            .values(
                status="in_progress",
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_s),
                started_at=func.coalesce(JobRow.started_at, now),
                runs=JobRow.runs + 1,
            )
            .returning(JobRow.id)
            .execution_options(synchronize_session=False)
        )
        async with self.transaction() as s:
            job_id = (await s.execute(statement)).scalar_one_or_none()
        if job_id is not None:
            self.touch(job_id)
        return None if job_id is None else await self.get_job(job_id)

    def _owned(self, job_id: str, owner: str) -> Any:
        return (
            (JobRow.id == job_id) & (JobRow.lease_owner == owner) & (JobRow.status == "in_progress")
        )

    async def renew(self, job_id: str, owner: str, lease_s: float) -> bool:
        expires = utcnow() + timedelta(seconds=lease_s)
        async with self.transaction() as s:
            result = await s.execute(
                update(JobRow).where(self._owned(job_id, owner)).values(lease_expires_at=expires)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def release(self, job_id: str, owner: str) -> None:
        """Hand a running job back to the queue (clean shutdown)."""
        async with self.transaction() as s:
            await s.execute(
                update(JobRow)
                .where(self._owned(job_id, owner))
                .values(status="pending", lease_owner=None, lease_expires_at=None)
            )
        self.touch(job_id)

    async def save_outline(
        self, job_id: str, owner: str, outline: list[dict[str, str]], usage: Usage
    ) -> None:
        async with self.transaction() as s:
            result = await s.execute(
                update(JobRow)
                .where(self._owned(job_id, owner))
                .values(outline=outline, **add_usage(usage))
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                raise LeaseLost(job_id)
        self.touch(job_id)

    async def save_section(self, owner: str, section: NewSection, usage: Usage) -> bool:
        """Store a finished section once; False if it was already stored."""
        is_chapter = 1 if section.kind == "chapter" else 0
        try:
            async with self.transaction() as s:
                result = await s.execute(
                    update(JobRow)
                    .where(self._owned(section.job_id, owner))
                    .values(
                        sections_completed=JobRow.sections_completed + 1,
                        chapters_completed=JobRow.chapters_completed + is_chapter,
                        words_written=JobRow.words_written + section.words,
                        **add_usage(usage),
                    )
                )
                if not result.rowcount:  # type: ignore[attr-defined]
                    raise LeaseLost(section.job_id)
                s.add(SectionRow(**section_fields(section)))
        except IntegrityError:
            return False
        self.touch(section.job_id)
        return True

    async def finish(
        self, job_id: str, owner: str, status: str, error: str | None = None
    ) -> datetime | None:
        """Mark an owned job finished; returns completed_at, or None if no longer ours."""
        now = utcnow()
        async with self.transaction() as s:
            result = await s.execute(
                update(JobRow)
                .where(self._owned(job_id, owner))
                .values(
                    status=status,
                    error=error,
                    completed_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
        self.touch(job_id)
        return now if result.rowcount else None  # type: ignore[attr-defined]


def add_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": JobRow.input_tokens + usage.input_tokens,
        "output_tokens": JobRow.output_tokens + usage.output_tokens,
        "cost_usd": JobRow.cost_usd + usage.cost_usd,
    }


def section_fields(section: NewSection) -> dict[str, Any]:
    return {name: getattr(section, name) for name in NewSection.__slots__}
