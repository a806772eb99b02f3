"""The store on SQLite and PostgreSQL: exclusive claims, leases, sections stored exactly once."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text, update
from sqlalchemy.dialects.sqlite import dialect
from sqlalchemy.orm import Session

from bookgen.service.store import JobRow, LeaseLost, NewSection, Store, Usage, repository
from bookgen.service.store.inserter import JobInserter
from bookgen.service.store.models import utcnow
from service_helpers import postgres_database


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    s = Store.from_url(database_url)
    await s.create_tables()
    yield s
    await s.close()


def job(**values: object) -> JobRow:
    fields: dict[str, object] = {
        "id": uuid.uuid4().hex,
        "character": "Ada Lovelace",
        "chapters": 3,
        "total_words": 3000,
        "model": "bookgen-sim",
        "status": "pending",
        "created_at": utcnow(),
        "sources": [],
        "trace_context": {"traceparent": "00-abc"},
    }
    fields.update(values)
    return JobRow(**fields)


def section(job_id: str, index: int, words: int = 100) -> NewSection:
    return NewSection(job_id, index, "chapter", f"T{index}", "Text.", words, 100, 0.0, 1)


async def test_job_round_trip_keeps_utc_and_json(store: Store) -> None:
    added = await store.add_job(job())
    loaded = await store.get_job(added.id)
    assert loaded is not None
    assert loaded.created_at == added.created_at
    assert loaded.created_at.tzinfo is not None
    assert loaded.trace_context == {"traceparent": "00-abc"}
    assert await store.count_pending() == 1


async def test_claims_are_exclusive_across_processes(database_url: str, store: Store) -> None:
    jobs = [await store.add_job(job(created_at=utcnow() + timedelta(seconds=i))) for i in range(12)]
    workers = [Store.from_url(database_url) for _ in range(4)]

    async def drain(worker: Store, owner: str) -> list[str]:
        claimed = []
        while (row := await worker.claim(owner, 30)) is not None:
            claimed.append(row.id)
        return claimed

    try:
        results = await asyncio.gather(*(drain(w, f"w{i}") for i, w in enumerate(workers)))
    finally:
        await asyncio.gather(*(w.close() for w in workers))
    claimed = [job_id for result in results for job_id in result]
    assert sorted(claimed) == sorted(j.id for j in jobs)  # every job once, none twice
    assert await store.count_pending() == 0


async def test_claim_takes_oldest_first_and_sets_lease(store: Store) -> None:
    old = await store.add_job(job(created_at=utcnow() - timedelta(minutes=5)))
    await store.add_job(job())
    claimed = await store.claim("w1", 30)
    assert claimed is not None and claimed.id == old.id
    assert claimed.status == "in_progress" and claimed.lease_owner == "w1"
    assert claimed.started_at is not None and claimed.runs == 1


async def test_only_expired_leases_are_reclaimed(store: Store) -> None:
    added = await store.add_job(job())
    assert await store.claim("w1", 30) is not None
    assert await store.claim("w2", 30) is None  # lease still valid
    async with store.sessions() as s, s.begin():
        await s.execute(
            update(JobRow)
            .where(JobRow.id == added.id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    reclaimed = await store.claim("w2", 30)
    assert reclaimed is not None and reclaimed.lease_owner == "w2" and reclaimed.runs == 2
    assert not await store.renew(added.id, "w1", 30)  # the old owner lost it
    with pytest.raises(LeaseLost):
        await store.save_section("w1", section(added.id, 1), Usage())


async def test_sections_are_stored_once_and_counted_once(store: Store) -> None:
    added = await store.add_job(job())
    await store.claim("w1", 30)
    usage = Usage(input_tokens=5, output_tokens=7, cost_usd=0.5)
    assert await store.save_section("w1", section(added.id, 1), usage)
    assert not await store.save_section("w1", section(added.id, 1), usage)
    assert await store.save_section("w1", section(added.id, 2, words=50), usage)
    loaded = await store.get_job(added.id)
    assert loaded is not None
    assert (loaded.chapters_completed, loaded.words_written) == (2, 150)
    assert (loaded.input_tokens, loaded.output_tokens) == (10, 14)
    assert loaded.cost_usd == pytest.approx(1.0)
    assert [s.index for s in await store.sections(added.id)] == [1, 2]


async def test_cancel_stops_the_owner(store: Store) -> None:
    added = await store.add_job(job())
    await store.claim("w1", 30)
    cancelled = await store.cancel(added.id)
    assert cancelled is not None and cancelled.status == "cancelled"
    with pytest.raises(LeaseLost):
        await store.save_outline(added.id, "w1", [], Usage())
    assert await store.finish(added.id, "w1", "completed") is None
    final = await store.get_job(added.id)
    assert final is not None and final.status == "cancelled"


async def test_release_returns_the_job_to_the_queue(store: Store) -> None:
    added = await store.add_job(job())
    await store.claim("w1", 30)
    await store.release(added.id, "w1")
    again = await store.claim("w2", 30)
    assert again is not None and again.id == added.id


async def test_list_is_newest_first_with_filter(store: Store) -> None:
    base = utcnow()
    ids = [(await store.add_job(job(created_at=base + timedelta(seconds=i)))).id for i in range(5)]
    await store.cancel(ids[0])
    rows, total = await store.list_jobs(status=None, offset=0, limit=2)
    assert [r.id for r in rows] == [ids[4], ids[3]] and total == 5
    rows, total = await store.list_jobs(status="cancelled", offset=0, limit=10)
    assert [r.id for r in rows] == [ids[0]] and total == 1


async def test_versions_move_after_each_visible_local_write(store: Store) -> None:
    """The read caches key on these: every write a reader can see moves both versions."""
    added = await store.add_job(job())
    other = await store.add_job(job(created_at=utcnow() + timedelta(seconds=1)))
    assert store.job_version(added.id) < store.job_version(other.id) == store.version
    claimed = await store.claim("w1", 30)
    assert claimed is not None and claimed.id == added.id
    assert store.job_version(added.id) == store.version
    before = store.version
    assert await store.renew(added.id, "w1", 30)  # the lease is not part of what readers see
    assert store.version == before
    assert await store.save_section("w1", section(added.id, 1), Usage(1, 2, 0.1))
    assert store.job_version(added.id) == store.version > before
    before = store.version
    assert await store.finish(added.id, "w1", "completed") is not None
    assert store.job_version(added.id) == store.version > before
    await store.cancel(other.id)
    assert store.job_version(other.id) == store.version
    assert store.job_version("unknown") == 0


async def test_list_reads_only_the_listed_columns(store: Store) -> None:
    added = await store.add_job(job(outline=[{"title": "T", "synopsis": "S"}]))
    rows, total = await store.list_jobs(status="pending", offset=0, limit=10)
    assert total == 1 and [r.id for r in rows] == [added.id]
    assert "outline" not in rows[0]._fields and "trace_context" not in rows[0]._fields


async def test_a_new_job_is_stored_without_giving_the_busy_loop_a_turn(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under a burst every turn of the loop is long; an admitted submission that waits for one
    # answers late. The bound is lifted so that a slow machine cannot make this test flaky.
    monkeypatch.setattr(JobInserter, "WAIT_INLINE_S", 30.0)
    turns: list[str] = []
    asyncio.get_running_loop().call_soon(turns.append, "a turn")
    added = await store.add_job(job())
    assert turns == []
    assert (await store.get_job(added.id)) is not None
    await asyncio.sleep(0)
    assert turns == ["a turn"]


async def test_a_request_s_reads_and_cancel_on_a_sqlite_file_take_no_loop_turn(
    tmp_path: Path,
) -> None:
    """A status read, a list page, a book's sections and a cancel run inline on a free file: a
    busy loop would make each wait a turn or two for a thread (tens of ms with 32 in flight)."""
    store = Store.from_url(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await store.create_tables()
    try:
        added = await store.add_job(job())
        await store.claim("w1", 30)
        assert await store.save_section("w1", section(added.id, 1), Usage(1, 2, 0.1))
        turns: list[str] = []
        asyncio.get_running_loop().call_soon(turns.append, "a turn")
        read = await store.get_job(added.id)
        rows, total = await store.list_jobs(status=None, offset=0, limit=5)
        sections = await store.sections(added.id)
        cancelled = await store.cancel(added.id)
        assert turns == []
        assert read is not None and read.status == "in_progress"
        assert [r.id for r in rows] == [added.id] and total == 1
        assert [(x.index, x.text) for x in sections] == [(1, "Text.")]
        assert cancelled is not None and cancelled.status == "cancelled"
        assert store.job_version(added.id) == store.version
    finally:
        await store.close()


async def test_a_cancel_while_another_writer_holds_the_file_queues_and_lands(
    tmp_path: Path,
) -> None:
    """The loop never waits for SQLite's lock: the cancel goes to the writer thread, which
    waits for the other writer, and the job ends cancelled."""
    path = tmp_path / "store.db"
    store = Store.from_url(f"sqlite+aiosqlite:///{path}")
    await store.create_tables()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        added = await store.add_job(job())
        other.execute("BEGIN IMMEDIATE")  # another process's write transaction
        cancel = asyncio.ensure_future(store.cancel(added.id))
        await asyncio.sleep(0.3)
        assert not cancel.done()  # queued behind the lock, not failed, and not on the loop
        other.execute("COMMIT")
        cancelled = await asyncio.wait_for(cancel, 10)
        assert cancelled is not None and cancelled.status == "cancelled"
        final = await store.get_job(added.id)
        assert final is not None and final.status == "cancelled"
    finally:
        other.close()
        await store.close()


async def test_background_writes_run_on_the_loop_and_the_log_is_still_checkpointed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A background write takes no thread while the file is free; the inline connection never
    checkpoints, so the writer thread does, and the write-ahead log stays small even when
    writes never pause (a passive checkpoint never catches up with them)."""
    monkeypatch.setattr(repository, "CHECKPOINT_EVERY", 20)
    path = tmp_path / "store.db"
    store = Store.from_url(f"sqlite+aiosqlite:///{path}")
    await store.create_tables()
    threads: Counter[str] = Counter()
    try:
        added = await store.add_job(job())
        note = "x" * 8_000  # two pages or more a write: 800 writes log 6 MB or more unchecked
        for i in range(800):

            def work(s: Session, i: int = i) -> None:
                threads[threading.current_thread().name] += 1
                s.execute(update(JobRow).where(JobRow.id == added.id).values(error=f"{i}{note}"))

            await store.write(work)
            await asyncio.sleep(0)  # a turn, as a book's task yields between writes
        # Only writes that met a checkpoint holding the file went to the writer thread.
        assert threads[threading.current_thread().name] >= 700, threads
        await asyncio.sleep(0.5)  # the last checkpoint queued
        wal = await asyncio.to_thread(lambda: Path(f"{path}-wal").stat().st_size)
        assert wal < 1_000_000
    finally:
        await store.close()


async def test_writes_that_meet_a_checkpoint_wait_for_it_and_still_run_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the writer thread each write waits for the GIL at every statement while holding the
    file, so writes behind it find the file busy too: after a checkpoint they wait for it to end
    and run on the loop, submissions and cancels alike."""
    monkeypatch.setattr(repository, "CHECKPOINT_EVERY", 5)
    path = tmp_path / "store.db"
    store = Store.from_url(f"sqlite+aiosqlite:///{path}")
    await store.create_tables()
    checkpoint = repository.SQLiteWriter._checkpoint
    held = threading.Event()

    def slow_checkpoint(writer: repository.SQLiteWriter) -> None:
        # As a checkpoint on a slow disk: it holds SQLite's write lock for a while.
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            held.set()
            threading.Event().wait(0.3)
            connection.execute("COMMIT")
        finally:
            connection.close()
        checkpoint(writer)

    monkeypatch.setattr(repository.SQLiteWriter, "_checkpoint", slow_checkpoint)
    threads: Counter[str] = Counter()
    loop_thread = threading.current_thread().name
    try:
        added = await store.add_job(job())
        for i in range(4):  # the fifth inline write queues the checkpoint

            def work(s: Session, i: int = i) -> None:
                threads[threading.current_thread().name] += 1
                s.execute(update(JobRow).where(JobRow.id == added.id).values(error=str(i)))

            await store.write(work)
        await asyncio.to_thread(held.wait, 5)
        started = asyncio.get_running_loop().time()
        await store.write(work, urgent=True)
        newcomer = await store.add_job(job())
        waited = asyncio.get_running_loop().time() - started
        assert set(threads) == {loop_thread}, threads  # none went to the writer thread
        assert waited >= 0.1  # it did meet the checkpoint
        assert await store.get_job(newcomer.id) is not None
    finally:
        await store.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from postgres_database()


@pytest.mark.postgres
async def test_a_stalled_store_blocks_the_caller_once_and_at_most_the_bound(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store.from_url(postgres_url)
    await store.create_tables()
    inserter = JobInserter(store.engine.url)
    gate = threading.Event()
    insert = inserter._insert

    async def stalled(jobs: Sequence[JobRow]) -> None:
        await asyncio.to_thread(gate.wait, 30)
        await insert(jobs)

    monkeypatch.setattr(inserter, "_insert", stalled)
    try:
        first = inserter.submit_and_wait([job()])
        assert first is not None and not first.done()  # waited the bound, then gave up
        assert inserter.submit_and_wait([job()]) is None  # busy: nobody waits on it again
        gate.set()
        await asyncio.wrap_future(first)
        again = inserter.submit_and_wait([job()])
        assert again is not None
        await asyncio.wrap_future(again)
        assert await store.count_pending() == 2
    finally:
        gate.set()
        await inserter.close()
        await store.close()


@pytest.mark.postgres
async def test_an_insert_on_a_connection_the_server_dropped_is_made_once_more(
    postgres_url: str,
) -> None:
    store = Store.from_url(postgres_url)
    await store.create_tables()
    inserter = JobInserter(store.engine.url)
    try:
        await asyncio.wrap_future(inserter.submit([job()]))
        # The server ends every other session of the database, the inserter's pooled one too.
        async with store.engine.connect() as connection:
            ended = await connection.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        assert ended and ended >= 1
        await asyncio.wrap_future(inserter.submit([job()]))
        assert await store.count_pending() == 2
    finally:
        await inserter.close()
        await store.close()


def test_the_writer_thread_runs_a_request_s_writes_ahead_of_queued_background_ones() -> None:
    from bookgen.service.store.repository import UrgentFirst

    writer = UrgentFirst("test-writer")
    started, gate = threading.Event(), threading.Event()
    order: list[str] = []

    def hold() -> None:  # the transaction in progress while the others queue
        started.set()
        gate.wait(5)

    def urgent_write(name: str) -> Callable[[], None]:
        return lambda: order.append(name)

    try:
        blocker = writer.submit(hold)
        assert started.wait(5)
        background = [writer.submit(order.append, f"b{i}") for i in range(6)]
        urgent = [writer.submit_urgent(urgent_write(f"u{i}")) for i in range(6)]
        gate.set()
        blocker.result(timeout=5)
        for future in [*background, *urgent]:
            future.result(timeout=5)
    finally:
        writer.shutdown()
    # Urgent first, but never more than STREAK in a row while background work waits.
    assert order == ["u0", "u1", "u2", "u3", "b0", "u4", "u5", "b1", "b2", "b3", "b4", "b5"]
    with pytest.raises(RuntimeError):
        writer.submit(order.append, "late")


@pytest.mark.parametrize("owner", [None, "ip:127.0.0.1"])
@pytest.mark.parametrize("status", [None, "completed"])
async def test_a_list_page_is_read_off_an_index_not_sorted(
    tmp_path: Path, owner: str | None, status: str | None
) -> None:
    path = tmp_path / "store.db"
    s = Store.from_url(f"sqlite+aiosqlite:///{path}")
    try:
        await s.create_tables()  # the migrations' schema
    finally:
        await s.close()
    page, count = repository.listing(status=status, offset=800, limit=20, owner=owner)
    with sqlite3.connect(path) as conn:
        plans = []
        for statement in (page, count):
            sql = str(statement.compile(dialect=dialect(), compile_kwargs={"literal_binds": True}))
            plans.append(" | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")))
    assert "INDEX ix_jobs_" in plans[0] and "TEMP B-TREE" not in plans[0], plans[0]
    assert "INDEX" in plans[1] and "TEMP B-TREE" not in plans[1], plans[1]  # no table scan
