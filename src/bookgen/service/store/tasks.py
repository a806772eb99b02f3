"""The worker tier's ledger: which piece of which book may run where, and what already ran.

Every method is one short transaction. The broker may deliver a task twice, late, or to two
workers at once; what makes the effect exactly-once is here: a piece is run only under a lease
taken by a conditional UPDATE, stored only while that lease is still held (the owner is the
fencing token), and stored at most once (unique (job, index) in `sections`). The transaction that
stores a book's last section also completes the book.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from bookgen.service.store.models import JobRow, SectionRow, SectionTaskRow, utcnow
from bookgen.service.store.repository import (
    ACTIVE,
    ERROR_LIMIT,
    LeaseLost,
    NewSection,
    Store,
    Usage,
    add_usage,
    section_fields,
)

OUTLINE_INDEX = -1

ClaimRefusal = Literal["done", "busy", "inactive", "unknown"]


@dataclass(frozen=True, slots=True)
class Claim:
    """A piece this worker now holds the lease of."""

    job: JobRow
    index: int
    kind: str
    title: str
    synopsis: str
    attempt: int  # 1 on the first run; more after runs that were cut off
    handbacks: int = 0  # times handed back after a retryable LLM provider failure


@dataclass(frozen=True, slots=True)
class Ledger:
    """Whole-service figures for gauges and autoscaling."""

    queued: int
    running: int
    oldest_queued_at: datetime | None


@dataclass(frozen=True, slots=True)
class Stored:
    """A section stored under the lease; `book_done` when it was the book's last."""

    book_done: bool
    job: JobRow | None = None


def planned_pieces(job: JobRow) -> list[SectionTaskRow]:
    """What a new book starts with: its outline, introduction and epilogue (chapters follow
    their outline entries)."""
    now = job.created_at
    return [
        SectionTaskRow(job_id=job.id, index=OUTLINE_INDEX, kind="outline", queued_at=now),
        SectionTaskRow(job_id=job.id, index=0, kind="introduction", queued_at=now),
        SectionTaskRow(job_id=job.id, index=job.chapters + 1, kind="epilogue", queued_at=now),
    ]


def _piece(job_id: str, index: int) -> Any:
    return (SectionTaskRow.job_id == job_id) & (SectionTaskRow.index == index)


def _held(job_id: str, index: int, owner: str) -> Any:
    return (
        _piece(job_id, index)
        & (SectionTaskRow.lease_owner == owner)
        & (SectionTaskRow.state == "running")
    )


def _hand_back(job_id: str, index: int, owner: str, **values: Any) -> Any:
    """The update that queues a running piece of `owner` again, to be published anew."""
    return (
        update(SectionTaskRow)
        .where(_held(job_id, index, owner))
        .values(
            state="queued", lease_owner=None, lease_expires_at=None, published_at=None, **values
        )
    )


def _job_active(job_id: str) -> Any:
    return (JobRow.id == job_id) & JobRow.status.in_(ACTIVE)


class SectionTasks:
    def __init__(self, store: Store) -> None:
        self.store = store

    # --- API side -----------------------------------------------------------------------
    async def submit(self, job: JobRow) -> list[SectionTaskRow]:
        """Store a new job with its first pieces, in one transaction; returns those pieces."""
        pieces = planned_pieces(job)
        async with self.store.transaction() as s:
            s.add(job)
            await s.flush()
            s.add_all(pieces)
        self.store.touch(job.id)
        return pieces

    async def ledger(self) -> Ledger:
        query = select(
            func.count().filter(SectionTaskRow.state == "queued"),
            func.count().filter(SectionTaskRow.state == "running"),
            func.min(SectionTaskRow.queued_at).filter(SectionTaskRow.state == "queued"),
        ).where(SectionTaskRow.state.in_(("queued", "running")))
        async with self.store.sessions() as s:
            queued, running, oldest = (await s.execute(query)).one()
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        return Ledger(int(queued or 0), int(running or 0), oldest)

    # --- worker side --------------------------------------------------------------------
    async def add_chapter(self, job_id: str, number: int, entry: dict[str, str]) -> bool:
        """Plan chapter `number` from its outline entry; False if it was planned already."""
        try:
            async with self.store.transaction() as s:
                s.add(
                    SectionTaskRow(
                        job_id=job_id,
                        index=number,
                        kind="chapter",
                        title=entry["title"][:300],
                        synopsis=entry["synopsis"],
                        queued_at=utcnow(),
                    )
                )
        except IntegrityError:
            return False
        return True

    async def planned(self, job_id: str) -> dict[int, SectionTaskRow]:
        query = select(SectionTaskRow).where(SectionTaskRow.job_id == job_id)
        async with self.store.sessions() as s:
            return {row.index: row for row in (await s.scalars(query)).all()}

    async def claim(
        self, job_id: str, index: int, owner: str, lease_s: float
    ) -> Claim | ClaimRefusal:
        """Take the lease of a queued piece, or of one whose worker stopped renewing it."""
        now = utcnow()
        active_job = select(JobRow.id).where(_job_active(job_id)).scalar_subquery()
        statement = (
            update(SectionTaskRow)
            .where(
                _piece(job_id, index),
                SectionTaskRow.job_id == active_job,
                or_(
                    SectionTaskRow.state == "queued",
                    (SectionTaskRow.state == "running") & (SectionTaskRow.lease_expires_at < now),
                ),
            )
            .values(
                state="running",
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_s),
                attempts=SectionTaskRow.attempts + 1,
                started_at=now,
            )
            .returning(
                SectionTaskRow.kind,
                SectionTaskRow.title,
                SectionTaskRow.synopsis,
                SectionTaskRow.attempts,
                SectionTaskRow.llm_handbacks,
            )
            .execution_options(synchronize_session=False)
        )
        async with self.store.transaction() as s:
            row = (await s.execute(statement)).one_or_none()
            if row is not None:
                await s.execute(
                    update(JobRow)
                    .where(_job_active(job_id))
                    .values(
                        status="in_progress",
                        started_at=func.coalesce(JobRow.started_at, now),
                    )
                )
        if row is None:
            return await self._refusal(job_id, index)
        self.store.touch(job_id)
        job = await self.store.get_job(job_id)
        if job is None:  # deleted between the two reads
            return "unknown"
        kind, title, synopsis, attempts, handbacks = row
        return Claim(job, index, kind, title, synopsis, int(attempts), int(handbacks or 0))

    async def _refusal(self, job_id: str, index: int) -> ClaimRefusal:
        async with self.store.sessions() as s:
            piece = await s.get(SectionTaskRow, (job_id, index))
            job = await s.get(JobRow, job_id)
        if piece is None or job is None:
            return "unknown"
        if job.status not in ACTIVE:
            return "inactive"
        return "done" if piece.state in ("done", "failed") else "busy"

    async def renew(self, job_id: str, index: int, owner: str, lease_s: float) -> bool:
        """Extend the lease; False when it is lost (taken over, or the book ended)."""
        expires = utcnow() + timedelta(seconds=lease_s)
        active_job = select(JobRow.id).where(_job_active(job_id)).scalar_subquery()
        async with self.store.transaction() as s:
            result = await s.execute(
                update(SectionTaskRow)
                .where(_held(job_id, index, owner), SectionTaskRow.job_id == active_job)
                .values(lease_expires_at=expires)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def release(self, job_id: str, index: int, owner: str, *, counted: bool) -> bool:
        """Hand a running piece back: queued again. A graceful stop is not `counted` against
        the piece's run limit; a run that passed its deadline is."""
        uncount = 0 if counted else 1
        attempts = case(
            (SectionTaskRow.attempts >= uncount, SectionTaskRow.attempts - uncount), else_=0
        )
        async with self.store.transaction() as s:
            result = await s.execute(
                _hand_back(job_id, index, owner, attempts=attempts, queued_at=utcnow())
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def defer(self, job_id: str, index: int, owner: str, delay_s: float) -> int | None:
        """Hand a running piece back after an LLM provider failure: queued again, to be
        published once `delay_s` is over (the reaper does it if the caller cannot). The run is
        not counted as cut off; the hand-back is. Returns the hand-backs of the whole book so
        far (the cap is per book), or None when the lease was lost."""
        statement = _hand_back(
            job_id,
            index,
            owner,
            attempts=SectionTaskRow.attempts - 1,  # the claim counted it
            llm_handbacks=SectionTaskRow.llm_handbacks + 1,
            queued_at=utcnow() + timedelta(seconds=delay_s),
        )
        async with self.store.transaction() as s:
            row = (
                await s.execute(
                    statement.returning(SectionTaskRow.llm_handbacks).execution_options(
                        synchronize_session=False
                    )
                )
            ).one_or_none()
            if row is None:
                return None
            total = await s.scalar(
                select(func.sum(SectionTaskRow.llm_handbacks)).where(
                    SectionTaskRow.job_id == job_id
                )
            )
        return int(total or 0)

    async def reap(self) -> list[tuple[str, int]]:
        """Queue again every piece whose worker stopped renewing its lease; returns them."""
        now = utcnow()
        active_jobs = select(JobRow.id).where(JobRow.status.in_(ACTIVE))
        statement = (
            update(SectionTaskRow)
            .where(
                SectionTaskRow.state == "running",
                SectionTaskRow.lease_expires_at < now,
                SectionTaskRow.job_id.in_(active_jobs),
            )
            .values(
                state="queued",
                lease_owner=None,
                lease_expires_at=None,
                queued_at=now,
                published_at=None,
            )
            .returning(SectionTaskRow.job_id, SectionTaskRow.index)
            .execution_options(synchronize_session=False)
        )
        async with self.store.transaction() as s:
            rows = (await s.execute(statement)).all()
        return [(job_id, index) for job_id, index in rows]

    async def unpublished(
        self, grace_s: float, republish_s: float, limit: int = 200
    ) -> list[tuple[str, int]]:
        """Queued pieces whose message may be missing: never published (the publisher died
        between commit and send) or published long ago and not picked up (the broker lost it)."""
        now = utcnow()
        query = (
            select(SectionTaskRow.job_id, SectionTaskRow.index)
            .join(JobRow, JobRow.id == SectionTaskRow.job_id)
            .where(
                SectionTaskRow.state == "queued",
                JobRow.status.in_(ACTIVE),
                or_(
                    SectionTaskRow.published_at.is_(None)
                    & (SectionTaskRow.queued_at < now - timedelta(seconds=grace_s)),
                    SectionTaskRow.published_at < now - timedelta(seconds=republish_s),
                ),
            )
            .order_by(SectionTaskRow.queued_at)
            .limit(limit)
        )
        async with self.store.sessions() as s:
            rows = (await s.execute(query)).all()
        return [(job_id, index) for job_id, index in rows]

    async def mark_published(self, pieces: list[tuple[str, int]]) -> None:
        if not pieces:
            return
        now = utcnow()
        async with self.store.transaction() as s:
            for job_id, index in pieces:
                await s.execute(
                    update(SectionTaskRow)
                    .where(_piece(job_id, index), SectionTaskRow.state == "queued")
                    .values(published_at=now)
                )

    async def save_outline(
        self, job_id: str, owner: str, outline: list[dict[str, str]], usage: Usage
    ) -> None:
        async with self.store.transaction() as s:
            held = await s.execute(
                update(SectionTaskRow)
                .where(_held(job_id, OUTLINE_INDEX, owner))
                .values(state="done", lease_owner=None, finished_at=utcnow())
            )
            if not held.rowcount:  # type: ignore[attr-defined]
                raise LeaseLost(job_id)
            await s.execute(
                update(JobRow)
                .where(_job_active(job_id))
                .values(outline=outline, **add_usage(usage))
            )
        self.store.touch(job_id)

    async def save_section(self, owner: str, section: NewSection, usage: Usage) -> Stored:
        """Store a section under the lease, once; the last one completes the book."""
        now = utcnow()
        is_chapter = 1 if section.kind == "chapter" else 0
        completes = JobRow.sections_completed + 1 >= JobRow.chapters + 2
        try:
            async with self.store.transaction() as s:
                held = await s.execute(
                    update(SectionTaskRow)
                    .where(_held(section.job_id, section.index, owner))
                    .values(state="done", lease_owner=None, finished_at=now)
                )
                if not held.rowcount:  # type: ignore[attr-defined]
                    raise LeaseLost(section.job_id)
                s.add(SectionRow(**section_fields(section)))
                await s.flush()
                row = (
                    await s.execute(
                        update(JobRow)
                        .where(_job_active(section.job_id))
                        .values(
                            sections_completed=JobRow.sections_completed + 1,
                            chapters_completed=JobRow.chapters_completed + is_chapter,
                            words_written=JobRow.words_written + section.words,
                            sections_out_of_band=JobRow.sections_out_of_band
                            + (0 if section.in_band else 1),
                            status=case((completes, "completed"), else_=JobRow.status),
                            completed_at=case((completes, now), else_=JobRow.completed_at),
                            **add_usage(usage),
                        )
                        .returning(JobRow.status)
                    )
                ).one_or_none()
                if row is None:
                    raise LeaseLost(section.job_id)  # the book was cancelled or failed meanwhile
        except IntegrityError:
            return Stored(book_done=False)  # stored before by an earlier run: nothing to add
        self.store.touch(section.job_id)
        if row[0] != "completed":
            return Stored(book_done=False)
        return Stored(book_done=True, job=await self.store.get_job(section.job_id))

    async def fail_book(self, job_id: str, reason: str) -> bool:
        """End an active book as failed, with every unfinished piece; False if it had ended."""
        now = utcnow()
        async with self.store.transaction() as s:
            result = await s.execute(
                update(JobRow)
                .where(_job_active(job_id))
                .values(status="failed", error=reason[:ERROR_LIMIT], completed_at=now)
            )
            await s.execute(
                update(SectionTaskRow)
                .where(
                    and_(
                        SectionTaskRow.job_id == job_id,
                        SectionTaskRow.state.in_(("queued", "running")),
                    )
                )
                .values(state="failed", lease_owner=None, lease_expires_at=None, finished_at=now)
            )
        self.store.touch(job_id)
        return bool(result.rowcount)  # type: ignore[attr-defined]
