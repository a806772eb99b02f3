"""Statements that do not wait for the API's busy event loop: new jobs on PostgreSQL from a private
event loop in its own thread; on a SQLite file, small reads and writes inline when it is free.

A submission burst keeps the API's event loop busy: each await of an async database driver then
waits for the loop's next turn, behind every request ready before it, and one insert through
SQLAlchemy's async session is 5-6 such awaits (checkout with its ping, BEGIN, prepare, execute,
COMMIT). Admitted submissions took 250+ ms that way while a burst was being refused. Here the
transaction runs on a loop that serves nothing else, and the API's loop waits once, for the
result. (A SQLite file has its own writer thread, `SQLiteWriter`, for the same reason.)

Even that one wait costs a turn or two of a loop busy with a burst (180-240 ms admitted p95 with
1,000 submissions at once), so when the inserter is idle the API's thread blocks for the commit
instead (about a millisecond on a healthy store), bounded so that a slow or frozen store costs
the loop at most `WAIT_INLINE_S` once before submissions go back to waiting asynchronously.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry

from bookgen.service.store.models import JobRow

T = TypeVar("T")


class JobInserter:
    # A healthy PostgreSQL commits a new job in ~1 ms; the bound is what a stalled one may cost.
    WAIT_INLINE_S = 0.02

    def __init__(self, url: URL) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="bookgen-job-inserter", daemon=True
        )
        self.thread.start()
        self.engine: AsyncEngine | None = None
        self._last: concurrent.futures.Future[None] | None = None

    def submit(self, jobs: Sequence[JobRow]) -> concurrent.futures.Future[None]:
        """Store `jobs` in one transaction; the future is done once it is committed."""
        self._last = asyncio.run_coroutine_threadsafe(self._insert(jobs), self.loop)
        return self._last

    def submit_and_wait(self, jobs: Sequence[JobRow]) -> concurrent.futures.Future[None] | None:
        """Like `submit`, then block the calling thread until the commit, for at most
        `WAIT_INLINE_S`. None (nothing submitted) while an earlier insert is still running: a
        store that is slow now would make every caller wait the whole bound."""
        if self._last is not None and not self._last.done():
            return None
        future = self.submit(jobs)
        concurrent.futures.wait([future], timeout=self.WAIT_INLINE_S)
        return future

    async def _insert(self, jobs: Sequence[JobRow]) -> None:
        if self.engine is None:
            # No pre-ping: it is a round trip on every insert (a third of one); a connection the
            # server dropped is found by the insert itself, which is then made once more.
            self.engine = create_async_engine(self.url, pool_size=1, max_overflow=1)
        for attempt in (1, 2):
            try:
                async with AsyncSession(self.engine, expire_on_commit=False) as session:
                    async with session.begin():
                        session.add_all(jobs)
                    # Detached again, so the caller's thread may read them freely.
                    session.expunge_all()
                return
            except DBAPIError as error:
                if attempt == 2 or not error.connection_invalidated:
                    raise

    async def close(self) -> None:
        if self.loop.is_closed():
            return
        if self.engine is not None:
            future = asyncio.run_coroutine_threadsafe(self.engine.dispose(), self.loop)
            await asyncio.wrap_future(future)
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self.thread.join, 10)
        self.loop.close()


def _inline_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Never wait for the lock on the event loop: busy means "take the writer thread's queue".
    cursor.execute("PRAGMA busy_timeout=0")
    # Checkpoints (which fsync) are left to the writer thread's connection.
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()


class FileBusy(Exception):
    """Another connection holds the SQLite file's lock: take the thread's queue instead."""


class InlineSQLite:
    """Small statements on a SQLite file run right on the event loop, when the file is free.

    Under load a loop turn lasts as long as every request that became ready with it (tens of ms
    with 32 requests in flight, hundreds under a burst), and work handed to a thread reports back
    only a turn or two later: a submission, a cancel or a status read waited several turns for a
    statement that takes well under a millisecond (WAL mode, no fsync at commit, indexed reads).
    Run inline they answer in their own turn. When another writer holds the lock a write fails
    at once (busy_timeout 0) and the caller takes the writer thread's queue instead, so the loop
    never waits for a lock; readers of a WAL file never wait for writers.
    """

    def __init__(self, url: URL, on_write: Callable[[], None] | None = None) -> None:
        self.engine = create_engine(
            url.set(drivername="sqlite"),
            connect_args={"timeout": 0, "check_same_thread": False},
            pool_size=1,
            max_overflow=0,
        )
        event.listen(self.engine, "connect", _inline_pragmas)
        self._on_write = on_write  # after each committed write (the log's checkpoints count them)

    def write(self, work: Callable[[Session], T]) -> T:
        """What `work` returned, once committed and detached from the session; `FileBusy` if
        another writer holds the file now (nothing was written)."""
        return self._run(work, write=True)

    def read(self, work: Callable[[Session], T]) -> T:
        """What `work` returned, detached; `FileBusy` in the rare moments SQLite answers busy to
        a reader (WAL recovery): the caller reads in a thread then."""
        return self._run(work, write=False)

    def _run(self, work: Callable[[Session], T], *, write: bool) -> T:
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                with session.begin() if write else contextlib.nullcontext():
                    result = work(session)
                    session.flush()
                session.expunge_all()
        except OperationalError as error:
            if "locked" in str(error.orig) or "busy" in str(error.orig):
                raise FileBusy from error
            raise
        if write and self._on_write is not None:
            self._on_write()
        return result

    def close(self) -> None:
        self.engine.dispose()
