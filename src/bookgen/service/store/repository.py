"""The job store: every read and write the service makes, each a short transaction."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeAlias, TypeVar

from sqlalchemy import Row, Select, create_engine, event, func, or_, select, text, update
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from bookgen.service.store import migrate as migrate_schema
from bookgen.service.store.inserter import FileBusy, InlineSQLite, JobInserter
from bookgen.service.store.models import ApiKeyRow, JobRow, SectionRow, utcnow

ACTIVE = ("pending", "in_progress")
FINISHED = ("completed", "failed", "cancelled")
ERROR_LIMIT = 500  # characters of a failure reason kept with a job
# What a job's status says of a failure of ours: the exception stays in the service log.
INTERNAL_ERROR = "internal error while writing the book; the service log has the details"
FINISHED_CACHE_SIZE = 4096
VERSIONS_KEPT = 16384
SQLITE_READERS = 24
SCHEMA_LOCK = 0x426F6F6B  # "Book": serialises table creation between workers on PostgreSQL


AnyRow: TypeAlias = Row[*tuple[Any, ...]]
# What a list item shows: no JSON or text columns beyond `error` (outline, sources, trace).
LIST_COLUMNS = (
    JobRow.id,
    JobRow.owner,
    JobRow.status,
    JobRow.character,
    JobRow.chapters,
    JobRow.total_words,
    JobRow.model,
    JobRow.sections_completed,
    JobRow.chapters_completed,
    JobRow.words_written,
    JobRow.sections_out_of_band,
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
    # Stored short of the length band after all its attempts (counted on the job, reported).
    in_band: bool = True


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


T = TypeVar("T")
# Inline writes between two checkpoints of the log (SQLite's own default is 1,000 pages, about
# 4 MB; a section's write is a few pages).
CHECKPOINT_EVERY = 200
# Tries of a write on the loop, each after a checkpoint that held the file (see checkpoint_over).
INLINE_TRIES = 3


class UrgentFirst(Executor):
    """One thread that runs urgent work (a request's own writes) ahead of queued background work.

    Book sections, leases and claims are written by background tasks at a rate that grows with
    the streams in flight; a request's cancel or submission queued behind them in a plain FIFO
    waited for all of them (p95 over a second with 256 client streams). Each class keeps its
    own order. Strict priority would starve the background under a burst of submissions (no
    claim, so the queue only grows), so after `STREAK` urgent items in a row one background
    item runs: an urgent write waits for at most that one and the urgent ones before it.
    """

    STREAK = 4

    def __init__(self, name: str) -> None:
        self._urgent: deque[tuple[Future[Any], Callable[[], Any]]] = deque()
        self._background: deque[tuple[Future[Any], Callable[[], Any]]] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return self._put(self._background, functools.partial(fn, *args, **kwargs))

    def submit_urgent(self, fn: Callable[[], T]) -> Future[T]:
        return self._put(self._urgent, fn)

    def _put(
        self, line: deque[tuple[Future[Any], Callable[[], Any]]], fn: Callable[[], T]
    ) -> Future[T]:
        future: Future[T] = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            line.append((future, fn))
            self._ready.notify()
        return future

    def _serve(self) -> None:
        streak = 0
        while True:
            with self._ready:
                while not self._urgent and not self._background:
                    if self._closed:
                        return
                    self._ready.wait()
                if self._urgent and (streak < self.STREAK or not self._background):
                    future, fn = self._urgent.popleft()
                    streak += 1
                else:
                    future, fn = self._background.popleft()
                    streak = 0
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:  # handed to the waiting caller, as an executor does
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._ready:
            self._closed = True  # what is queued still runs
            self._ready.notify()
        if wait:
            self._thread.join()


class SQLiteWriter:
    """The writes of this process to a SQLite file that cannot run on the loop (another
    connection held the file) and async transactions, one at a time, in one thread.

    SQLite has one writer at a time. Through aiosqlite a write transaction is 4-10 hops between
    the event loop and the connection's thread (cursor, execute, commit, the pool's reset), and
    each hop waits for the loop's next turn: with requests and book streams keeping the loop busy,
    a write held the single-writer lock for tens of ms, and writes queued behind it for hundreds.
    Here a transaction runs start to commit in this thread with the plain sqlite3 driver (well
    under a millisecond) and costs the loop one hop; the executor's queue is the writer lock.
    Async transactions (`Store.transaction`) take the thread for their duration (`hold`). An inline
    write that meets either holding SQLite's lock fails at once and queues here; the lock keeps
    one writer at a time.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = create_engine(
            engine.url.set(drivername="sqlite"),
            connect_args={"timeout": 10, "check_same_thread": False},
            pool_size=1,
            max_overflow=0,
        )
        event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.executor = UrgentFirst("bookgen-sqlite-writer")
        self._inline_writes = 0
        self._checkpointing: Future[None] | None = None

    @staticmethod
    def usable(engine: AsyncEngine) -> bool:
        """A SQLite file (an in-memory database is private to its connection)."""
        database = engine.url.database or ""
        return (
            engine.dialect.name == "sqlite"
            and database not in ("", ":memory:")
            and "mode=memory" not in str(engine.url)
        )

    def _run(self, work: Callable[[Session], T]) -> T:
        with self.sessions() as session, session.begin():
            return work(session)

    async def write(self, work: Callable[[Session], T], *, urgent: bool = False) -> T:
        """Run `work(session)` in one transaction in the writer thread; committed on return.
        `urgent`: a request waits for it, so it goes ahead of queued background writes."""
        return await self.submit(work, urgent=urgent)

    def submit(self, work: Callable[[Session], T], *, urgent: bool = False) -> asyncio.Future[T]:
        """As `write`, handed to the thread now rather than when a task first runs."""
        run = functools.partial(self._run, work)
        if urgent:
            return asyncio.wrap_future(self.executor.submit_urgent(run))
        return asyncio.wrap_future(self.executor.submit(run))

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Keep the writer thread (and so every other write of this process) waiting."""
        loop = asyncio.get_running_loop()
        taken: asyncio.Future[None] = loop.create_future()
        release = threading.Event()

        def mark() -> None:
            if not taken.done():
                taken.set_result(None)

        def wait() -> None:
            loop.call_soon_threadsafe(mark)
            release.wait()

        self.executor.submit(wait)
        try:
            await taken
            yield
        finally:
            release.set()

    def inline_write_done(self) -> None:
        """Count a write committed on the loop (`InlineSQLite`); every `CHECKPOINT_EVERY`th
        copies the write-ahead log back into the database file, in this thread, behind what is
        queued: the inline connection never checkpoints (a checkpoint fsyncs), so without this
        a process whose writes all ran inline would grow the log without end. RESTART holds
        off writers until it is done, so the next write starts the log again; a passive
        checkpoint never catches up with writes that do not pause."""
        self._inline_writes += 1
        if self._inline_writes % CHECKPOINT_EVERY == 0:
            self._checkpointing = self.executor.submit(self._checkpoint)

    async def checkpoint_over(self) -> bool:
        """Wait for the log's checkpoint if one is queued or running; False if none is.

        A write that finds the file busy during a checkpoint waits for it here (tens of ms) and
        then runs on the loop again, rather than joining this thread's queue: in the thread each
        write waits for the GIL at every statement and holds SQLite's lock all that time, so the
        writes arriving behind it find the file busy too and queue up, and the queue fed itself
        for hundreds of ms after each checkpoint (submit and cancel p99 0.3-0.5 s, the other
        routes' 0.1 s)."""
        running = self._checkpointing
        if running is None or running.done():
            return False
        with contextlib.suppress(Exception):  # the checkpoint's own failure is not the write's
            await asyncio.shield(asyncio.wrap_future(running))
        return True

    def _checkpoint(self) -> None:
        with self.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA wal_checkpoint(RESTART)")

    async def close(self) -> None:
        await asyncio.to_thread(self.executor.shutdown, wait=True)
        self.engine.dispose()


class SQLiteReaders:
    """Reads of the hottest routes on a SQLite file, each whole in one of a few threads.

    Through aiosqlite one `get` is three hops between the loop and the connection's thread
    (cursor, execute and fetch, the rollback on close), each waiting for a turn of a busy loop;
    here it is one. The plain sqlite3 driver lets go of the GIL while SQLite works.
    """

    THREADS = 4

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = create_engine(
            engine.url.set(drivername="sqlite"),
            connect_args={"timeout": 10, "check_same_thread": False},
            pool_size=self.THREADS,
            max_overflow=0,
        )
        event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.executor = ThreadPoolExecutor(self.THREADS, thread_name_prefix="bookgen-sqlite-read")

    def _run(self, work: Callable[[Session], T]) -> T:
        with self.sessions() as session:
            return work(session)

    async def read(self, work: Callable[[Session], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._run, work)

    async def close(self) -> None:
        await asyncio.to_thread(self.executor.shutdown, wait=True)
        self.engine.dispose()


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        # Readers: connections are kept, not opened per burst. Each aiosqlite connection is a
        # thread plus its pragmas (hops of its own); past the pool, the default pool opened and
        # closed overflow connections all the time under load.
        engine = create_async_engine(
            url, connect_args={"timeout": 10}, pool_size=SQLITE_READERS, max_overflow=0
        )
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
        # On a SQLite file, writes run whole in one thread instead (see SQLiteWriter).
        self._writer = SQLiteWriter(engine) if SQLiteWriter.usable(engine) else None
        self._readers = SQLiteReaders(engine) if self._writer is not None else None
        # A finished job never changes again, so its row can be served from memory.
        self._finished: OrderedDict[str, JobRow] = OrderedDict()
        # Versions of what readers can see, bumped after each local write commits: `version` for
        # any job, `job_version(id)` per job. Read caches key on them (see routes/biographies.py).
        self.version = 0
        self._job_versions: OrderedDict[str, int] = OrderedDict()
        self._new_jobs: list[JobRow] = []  # submitted in this turn of the loop, to be stored
        self._new_jobs_done: asyncio.Future[None] | None = None
        self._inserter = JobInserter(engine.url) if engine.dialect.name == "postgresql" else None
        self._inline = (
            InlineSQLite(engine.url, on_write=self._writer.inline_write_done)
            if self._writer is not None
            else None
        )

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
            if self._writer is not None:
                await stack.enter_async_context(self._writer.hold())
            elif self._write_lock is not None:
                await stack.enter_async_context(self._write_lock)
            session = await stack.enter_async_context(self.sessions())
            await stack.enter_async_context(session.begin())
            yield session

    async def write(self, work: Callable[[Session], T], *, urgent: bool = False) -> T:
        """Run `work(session)` (sync statements) in one write transaction; committed on return.

        On a SQLite file it runs on the event loop when no other connection holds the file, else
        whole in the writer thread (one hop for the event loop), ahead of queued background
        writes when `urgent` (a request waits for it); elsewhere through an async transaction
        (`AsyncSession.run_sync`).

        Background writes (sections, leases, claims) run inline too: in the writer thread each
        waited for the GIL at every statement while the loop streamed hundreds of books' tokens,
        so it held SQLite's lock far longer than the write takes; a request's own write found the
        file busy and queued behind it (cancel p95 0.56-1.1 s with 256 client streams). On the loop
        a write is well under a millisecond and holds the lock for no longer.
        """
        if self._inline is not None:
            with contextlib.suppress(FileBusy):
                return await self._write_inline(work)
        if self._writer is not None:
            return await self._writer.write(work, urgent=urgent)
        async with self.transaction() as s:
            return await s.run_sync(work)

    async def _write_inline(self, work: Callable[[Session], T]) -> T:
        """`work` committed on the loop; a checkpoint holding the file is waited for (up to
        `INLINE_TRIES` tries in all, see `checkpoint_over`); `FileBusy` if the file stays held."""
        assert self._inline is not None and self._writer is not None
        tries = 0
        while True:
            try:
                return self._inline.write(work)
            except FileBusy:
                tries += 1
                if tries == INLINE_TRIES or not await self._writer.checkpoint_over():
                    raise

    async def read(self, work: Callable[[Session], T]) -> T:
        """Run `work(session)` (sync statements) outside any write transaction.

        On a SQLite file it runs whole in a reader thread (one hop for the event loop).
        """
        if self._readers is not None:
            return await self._readers.read(work)
        async with self.sessions() as s:
            return await s.run_sync(work)

    async def read_small(self, work: Callable[[Session], T]) -> T:
        """As `read`, for an indexed read of a few rows (a request's own): on a SQLite file it
        runs on the event loop (well under a millisecond) instead of waiting turns for a thread."""
        if self._inline is not None:
            with contextlib.suppress(FileBusy):
                return self._inline.read(work)
        return await self.read(work)

    async def write_small(self, work: Callable[[Session], T]) -> T:
        """As `write`, for a request's own statement or two on one row: urgent."""
        return await self.write(work, urgent=True)

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
        if self._inserter is not None:
            await self._inserter.close()
        if self._inline is not None:
            self._inline.close()
        if self._writer is not None:
            await self._writer.close()
        if self._readers is not None:
            await self._readers.close()
        await self.engine.dispose()

    async def ping(self) -> bool:
        if self._readers is not None:
            await self.read(lambda s: s.execute(text("SELECT 1")))
            return True
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
        """Store a new job. The jobs submitted in one turn of the event loop are stored in one
        transaction, handed to the writer at the end of that turn: a burst of submissions costs
        a few commits, not one each, and a batch never waits for the one before it to report
        back (under a burst each report waits for the loop, behind every ready request)."""
        if self._inline is not None:
            with contextlib.suppress(FileBusy):
                await self._write_inline(functools.partial(Session.add, instance=job))
                self.touch(job.id)
                return job
        if self._inserter is not None:
            written = self._inserter.submit_and_wait([job])
            if written is not None:
                if written.done():
                    written.result()
                else:
                    await asyncio.wrap_future(written)
                self.touch(job.id)
                return job
        if self._new_jobs_done is None:
            self._new_jobs_done = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._flush_new_jobs)
        done = self._new_jobs_done
        self._new_jobs.append(job)
        await asyncio.shield(done)
        return job

    def _flush_new_jobs(self) -> None:
        jobs, done = self._new_jobs, self._new_jobs_done
        self._new_jobs, self._new_jobs_done = [], None
        assert done is not None
        work = functools.partial(Session.add_all, instances=jobs)
        written: asyncio.Future[None]
        if self._inserter is not None:
            written = asyncio.wrap_future(self._inserter.submit(jobs))
        elif self._writer is not None:
            written = self._writer.submit(work, urgent=True)
        else:
            written = asyncio.ensure_future(self.write(work))

        def report(result: asyncio.Future[None]) -> None:
            if result.cancelled():
                done.cancel()
            elif (error := result.exception()) is not None:
                done.set_exception(error)
            else:
                for job in jobs:
                    self.touch(job.id)
                done.set_result(None)

        written.add_done_callback(report)

    async def get_job(self, job_id: str) -> JobRow | None:
        job = self._finished.get(job_id)
        if job is not None:
            return job
        job = await self.read_small(lambda s: s.get(JobRow, job_id))
        self._remember_if_finished(job)
        return job

    def _remember_if_finished(self, job: JobRow | None) -> None:
        if job is not None and job.status in FINISHED:
            self._finished[job.id] = job
            if len(self._finished) > FINISHED_CACHE_SIZE:
                self._finished.popitem(last=False)

    async def list_jobs(
        self, *, status: str | None, offset: int, limit: int, owner: str | None = None
    ) -> tuple[list[AnyRow], int]:
        """A page of jobs (the columns of `LIST_COLUMNS`, not whole rows) and the total.

        `owner` None lists every owner's jobs; else only that owner's.
        """
        page, count = listing(status=status, offset=offset, limit=limit, owner=owner)

        def work(s: Session) -> tuple[list[AnyRow], int]:
            return list(s.execute(page).all()), int(s.scalar(count) or 0)

        return await self.read_small(work)

    async def active_by_owner(self) -> dict[str | None, int]:
        """Queued + running books per owner (the admission counts are reconciled with this)."""
        query = (
            select(JobRow.owner, func.count())
            .where(JobRow.status.in_(ACTIVE))
            .group_by(JobRow.owner)
        )
        async with self.sessions() as s:
            return {owner: int(n) for owner, n in (await s.execute(query)).all()}

    async def spend_by_owner(self) -> dict[str | None, float]:
        """USD spent on each owner's books, all time."""
        query = select(JobRow.owner, func.sum(JobRow.cost_usd)).group_by(JobRow.owner)
        async with self.sessions() as s:
            return {owner: float(usd or 0.0) for owner, usd in (await s.execute(query)).all()}

    # --- API keys ------------------------------------------------------------------------
    async def add_key(self, key: ApiKeyRow) -> ApiKeyRow:
        async with self.transaction() as s:
            s.add(key)
        return key

    async def keys(self, *, include_revoked: bool = False) -> list[ApiKeyRow]:
        query = select(ApiKeyRow).order_by(ApiKeyRow.name, ApiKeyRow.created_at)
        if not include_revoked:
            query = query.where(ApiKeyRow.revoked_at.is_(None))
        async with self.sessions() as s:
            return list((await s.scalars(query)).all())

    async def key_by_hash(self, key_hash: str) -> ApiKeyRow | None:
        query = select(ApiKeyRow).where(
            ApiKeyRow.key_hash == key_hash, ApiKeyRow.revoked_at.is_(None)
        )
        async with self.sessions() as s:
            return (await s.scalars(query)).first()

    async def revoke_keys(self, name_or_id: str) -> list[ApiKeyRow]:
        """Revoke the key with this id, or every active key of the principal with this name."""
        match = or_(ApiKeyRow.id == name_or_id, ApiKeyRow.name == name_or_id)
        query = select(ApiKeyRow).where(match, ApiKeyRow.revoked_at.is_(None))
        async with self.transaction() as s:
            rows = list((await s.scalars(query)).all())
            now = utcnow()
            for row in rows:
                row.revoked_at = now
        return rows

    async def sections(self, job_id: str) -> list[SectionRow]:
        query = select(SectionRow).where(SectionRow.job_id == job_id).order_by(SectionRow.index)
        # A whole book is ~300 KB of text: read in a millisecond or two, fewer than a loop turn.
        return await self.read_small(lambda s: list(s.scalars(query).all()))

    async def cancel(self, job_id: str) -> JobRow | None:
        """Cancel a pending or running job; returns the job as it now is (None if unknown)."""
        statement = (
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.status.in_(ACTIVE))
            .values(
                status="cancelled",
                completed_at=utcnow(),
                lease_owner=None,
                lease_expires_at=None,
            )
        )

        def work(s: Session) -> JobRow | None:
            s.execute(statement)
            return s.get(JobRow, job_id)  # as committed, without a read after the write

        job = await self.write_small(work)
        self.touch(job_id)
        self._remember_if_finished(job)
        return job

    # --- worker side ---------------------------------------------------------------------
    async def claim(self, owner: str, lease_s: float) -> JobRow | None:
        """Atomically take the oldest pending job, or one whose worker's lease expired."""
        now = utcnow()
        # A pending job with a lease time was handed back after a provider failure: that time
        # is when it may run again.
        ready = (JobRow.status == "pending") & (
            JobRow.lease_expires_at.is_(None) | (JobRow.lease_expires_at < now)
        )
        candidate = (
            select(JobRow.id)
            .where(
                or_(
                    ready,
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
                    ready,
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

        def work(s: Session) -> JobRow | None:
            job_id = s.execute(statement).scalar_one_or_none()
            return None if job_id is None else s.get(JobRow, job_id)

        # The row comes back with the claim (no read after it): a cancel that lands between
        # the claim and the runtime taking the job would otherwise miss the running job.
        job = await self.write(work)
        if job is not None:
            self.touch(job.id)
        return job

    def _owned(self, job_id: str, owner: str) -> Any:
        return (
            (JobRow.id == job_id) & (JobRow.lease_owner == owner) & (JobRow.status == "in_progress")
        )

    async def renew(self, job_id: str, owner: str, lease_s: float) -> bool:
        expires = utcnow() + timedelta(seconds=lease_s)
        statement = (
            update(JobRow).where(self._owned(job_id, owner)).values(lease_expires_at=expires)
        )
        return await self.write(lambda s: bool(s.execute(statement).rowcount))  # type: ignore[attr-defined]

    def _hand_back(self, job_id: str, owner: str, **values: Any) -> Any:
        """The update that queues a running job of `owner` again; the claim counted the run,
        a hand-back does not, so it is taken off again (never below 0 after one claim)."""
        return (
            update(JobRow)
            .where(self._owned(job_id, owner))
            .values(status="pending", lease_owner=None, runs=JobRow.runs - 1, **values)
        )

    async def release(self, job_id: str, owner: str) -> None:
        """Hand a running job back to the queue (clean shutdown): the run is not counted
        against the job's limit of interrupted runs."""
        async with self.transaction() as s:
            await s.execute(self._hand_back(job_id, owner, lease_expires_at=None))
        self.touch(job_id)

    async def defer(self, job_id: str, owner: str, delay_s: float, note: str) -> int | None:
        """Hand a running job back after a provider failure, to run again in `delay_s`; its
        stored sections stay. The run is not counted as interrupted; the hand-back is. Returns
        the job's hand-backs so far, or None when it was no longer ours."""
        statement = self._hand_back(
            job_id,
            owner,
            lease_expires_at=utcnow() + timedelta(seconds=delay_s),
            llm_handbacks=JobRow.llm_handbacks + 1,
            error=note[:ERROR_LIMIT],
        )
        async with self.transaction() as s:
            row = (await s.execute(statement.returning(JobRow.llm_handbacks))).one_or_none()
        self.touch(job_id)
        return None if row is None else int(row[0])

    async def add_spend(self, job_id: str, usage: Usage) -> None:
        """Add tokens and cost spent on work that was not stored (failed or cut-off calls)."""
        if not (usage.input_tokens or usage.output_tokens or usage.cost_usd):
            return
        async with self.transaction() as s:
            await s.execute(update(JobRow).where(JobRow.id == job_id).values(**add_usage(usage)))
        self.touch(job_id)

    async def save_outline(
        self, job_id: str, owner: str, outline: list[dict[str, str]], usage: Usage
    ) -> None:
        statement = (
            update(JobRow)
            .where(self._owned(job_id, owner))
            .values(outline=outline, **add_usage(usage))
        )

        def work(s: Session) -> None:
            if not s.execute(statement).rowcount:  # type: ignore[attr-defined]
                raise LeaseLost(job_id)

        await self.write(work)
        self.touch(job_id)

    async def save_section(self, owner: str, section: NewSection, usage: Usage) -> bool:
        """Store a finished section once; False if it was already stored."""
        is_chapter = 1 if section.kind == "chapter" else 0
        statement = (
            update(JobRow)
            .where(self._owned(section.job_id, owner))
            .values(
                sections_completed=JobRow.sections_completed + 1,
                chapters_completed=JobRow.chapters_completed + is_chapter,
                words_written=JobRow.words_written + section.words,
                sections_out_of_band=JobRow.sections_out_of_band + (0 if section.in_band else 1),
                **add_usage(usage),
            )
        )

        def work(s: Session) -> None:
            if not s.execute(statement).rowcount:  # type: ignore[attr-defined]
                raise LeaseLost(section.job_id)
            s.add(SectionRow(**section_fields(section)))

        try:
            await self.write(work)
        except IntegrityError:
            return False
        self.touch(section.job_id)
        return True

    async def finish(
        self, job_id: str, owner: str, status: str, error: str | None = None
    ) -> datetime | None:
        """Mark an owned job finished; returns completed_at, or None if no longer ours."""
        now = utcnow()
        statement = (
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
        owned = await self.write(lambda s: bool(s.execute(statement).rowcount))  # type: ignore[attr-defined]
        self.touch(job_id)
        return now if owned else None


def listing(
    *, status: str | None, offset: int, limit: int, owner: str | None
) -> tuple[Select[*tuple[Any, ...]], Select[int]]:
    """The statements of a list page and of its total (the indexes named `*_listing` follow
    this order, so a page is read off an index rather than sorted)."""
    query = select(*LIST_COLUMNS).order_by(JobRow.created_at.desc(), JobRow.id.desc())
    count = select(func.count()).select_from(JobRow)
    if owner is not None:
        query = query.where(JobRow.owner == owner)
        count = count.where(JobRow.owner == owner)
    if status is not None:
        query = query.where(JobRow.status == status)
        count = count.where(JobRow.status == status)
    return query.offset(offset).limit(limit), count


def add_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": JobRow.input_tokens + usage.input_tokens,
        "output_tokens": JobRow.output_tokens + usage.output_tokens,
        "cost_usd": JobRow.cost_usd + usage.cost_usd,
    }


def section_fields(section: NewSection) -> dict[str, Any]:
    return {name: getattr(section, name) for name in NewSection.__slots__ if name != "in_band"}
