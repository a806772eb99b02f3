"""The worker tier's ledger on SQLite and PostgreSQL: leases, fencing, exactly-once sections, the
book completed by the transaction that stores its last section, bounded reruns."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from bookgen.service.store import JobRow, LeaseLost, NewSection, SectionRow, Store, Usage
from bookgen.service.store.models import SectionTaskRow, utcnow
from bookgen.service.store.tasks import OUTLINE_INDEX, Claim, SectionTasks

ENTRY = {"title": "Early years", "synopsis": "Childhood in London."}


@pytest.fixture
async def tasks(database_url: str) -> AsyncIterator[SectionTasks]:
    store = Store.from_url(database_url)
    await store.create_tables()
    yield SectionTasks(store)
    await store.close()


def new_job(chapters: int = 2) -> JobRow:
    return JobRow(
        id=uuid.uuid4().hex,
        character="Ada Lovelace",
        chapters=chapters,
        total_words=1000,
        model="bookgen-sim",
        status="pending",
        created_at=utcnow(),
        sources=[],
        trace_context={},
    )


def section(job: JobRow, index: int, kind: str = "chapter") -> NewSection:
    return NewSection(job.id, index, kind, f"Piece {index}", "Some words here.", 3, 3, 0.0, 1)


async def expire(tasks: SectionTasks, job: JobRow, index: int) -> None:
    """What a killed worker leaves behind: a lease nobody renews, now in the past."""
    async with tasks.store.transaction() as s:
        await s.execute(
            update(SectionTaskRow)
            .where(SectionTaskRow.job_id == job.id, SectionTaskRow.index == index)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


async def test_submit_plans_outline_and_frame(tasks: SectionTasks) -> None:
    job = new_job(chapters=3)
    pieces = await tasks.submit(job)
    assert sorted(p.index for p in pieces) == [OUTLINE_INDEX, 0, 4]
    ledger = await tasks.ledger()
    assert (ledger.queued, ledger.running) == (3, 0)
    assert ledger.oldest_queued_at is not None


async def test_a_piece_runs_under_one_lease_at_a_time(tasks: SectionTasks) -> None:
    job = new_job()
    await tasks.submit(job)
    first = await tasks.claim(job.id, 0, "worker-a", 30)
    assert isinstance(first, Claim) and first.attempt == 1 and first.kind == "introduction"
    assert await tasks.claim(job.id, 0, "worker-b", 30) == "busy"
    stored = await tasks.store.get_job(job.id)
    assert stored is not None and stored.status == "in_progress"


async def test_a_lapsed_lease_is_reaped_and_runs_again_fenced(tasks: SectionTasks) -> None:
    job = new_job()
    await tasks.submit(job)
    assert isinstance(await tasks.claim(job.id, 0, "dead", 30), Claim)
    await expire(tasks, job, 0)
    assert await tasks.reap() == [(job.id, 0)]
    again = await tasks.claim(job.id, 0, "alive", 30)
    assert isinstance(again, Claim) and again.attempt == 2
    # The dead worker's late write is refused (fencing): only the lease holder stores.
    with pytest.raises(LeaseLost):
        await tasks.save_section("dead", section(job, 0, "introduction"), Usage())
    assert not await tasks.renew(job.id, 0, "dead", 30)
    assert await tasks.renew(job.id, 0, "alive", 30)
    assert (await tasks.save_section("alive", section(job, 0, "introduction"), Usage())) is not None
    assert await tasks.claim(job.id, 0, "late-duplicate", 30) == "done"


async def test_the_last_section_completes_the_book_once(tasks: SectionTasks) -> None:
    job = new_job(chapters=1)
    await tasks.submit(job)
    assert await tasks.add_chapter(job.id, 1, ENTRY)
    assert not await tasks.add_chapter(job.id, 1, {"title": "Other", "synopsis": "x"})
    outline = await tasks.claim(job.id, OUTLINE_INDEX, "w", 30)
    assert isinstance(outline, Claim)
    await tasks.save_outline(job.id, "w", [ENTRY], Usage(1, 2, 0.5))
    results = []
    for index, kind in ((0, "introduction"), (1, "chapter"), (2, "epilogue")):
        claim = await tasks.claim(job.id, index, "w", 30)
        assert isinstance(claim, Claim)
        if kind == "chapter":
            assert (claim.title, claim.synopsis) == (ENTRY["title"], ENTRY["synopsis"])
        results.append(await tasks.save_section("w", section(job, index, kind), Usage(1, 1, 0.1)))
    assert [r.book_done for r in results] == [False, False, True]
    done = await tasks.store.get_job(job.id)
    assert done is not None and done.status == "completed" and done.completed_at is not None
    assert done.sections_completed == 3 and done.chapters_completed == 1
    assert done.outline == [ENTRY] and done.output_tokens == 5
    async with tasks.store.sessions() as s:
        count = await s.scalar(select(func.count()).where(SectionRow.job_id == job.id))
    assert count == 3


async def test_concurrent_claims_have_one_winner(tasks: SectionTasks) -> None:
    job = new_job()
    await tasks.submit(job)
    results = await asyncio.gather(*(tasks.claim(job.id, 0, f"w{i}", 30) for i in range(8)))
    assert sum(isinstance(r, Claim) for r in results) == 1
    assert all(r == "busy" for r in results if not isinstance(r, Claim))


async def test_graceful_hand_back_is_not_counted(tasks: SectionTasks) -> None:
    job = new_job()
    await tasks.submit(job)
    assert isinstance(await tasks.claim(job.id, 0, "w", 30), Claim)
    assert await tasks.release(job.id, 0, "w", counted=False)
    again = await tasks.claim(job.id, 0, "w2", 30)
    assert isinstance(again, Claim) and again.attempt == 1
    assert await tasks.release(job.id, 0, "w2", counted=True)
    third = await tasks.claim(job.id, 0, "w3", 30)
    assert isinstance(third, Claim) and third.attempt == 2


async def test_a_failed_or_cancelled_book_runs_nothing_more(tasks: SectionTasks) -> None:
    job = new_job()
    await tasks.submit(job)
    assert isinstance(await tasks.claim(job.id, 0, "w", 30), Claim)
    assert await tasks.fail_book(job.id, "gave up")
    assert not await tasks.fail_book(job.id, "twice")
    assert await tasks.claim(job.id, OUTLINE_INDEX, "w", 30) == "inactive"
    assert not await tasks.renew(job.id, 0, "w", 30)
    failed = await tasks.store.get_job(job.id)
    assert failed is not None and failed.status == "failed" and failed.error == "gave up"
    assert (await tasks.ledger()).queued == 0

    other = new_job()
    await tasks.submit(other)
    assert isinstance(await tasks.claim(other.id, 0, "w", 30), Claim)
    await tasks.store.cancel(other.id)
    assert not await tasks.renew(other.id, 0, "w", 30)  # the runner notices and stops
    with pytest.raises(LeaseLost):
        await tasks.save_section("w", section(other, 0, "introduction"), Usage())


async def test_unpublished_pieces_are_found_and_marked(tasks: SectionTasks) -> None:
    job = new_job()
    await tasks.submit(job)
    assert len(await tasks.unpublished(grace_s=0, republish_s=3600)) == 3
    await tasks.mark_published([(job.id, OUTLINE_INDEX), (job.id, 0)])
    assert await tasks.unpublished(grace_s=0, republish_s=3600) == [(job.id, job.chapters + 1)]
    assert len(await tasks.unpublished(grace_s=0, republish_s=-1)) == 3  # published long ago
    assert await tasks.unpublished(grace_s=3600, republish_s=3600) == []
