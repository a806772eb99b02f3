"""JobRuntime: claims jobs from the store, runs them under a renewed lease, recovers the lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import DBAPIError

from bookgen.service.hooks import Hooks, JobInfo
from bookgen.service.jobs.execution import StoreSink, book_spec, job_info
from bookgen.service.llm import spend
from bookgen.service.llm.breaker import CLOSED, CircuitBreaker
from bookgen.service.llm.errors import LLMError
from bookgen.service.pipeline.book import BookWriter
from bookgen.service.pipeline.writer import ChatModel, LengthPolicy
from bookgen.service.settings import Settings
from bookgen.service.store import JobRow, LeaseLost, Store, Usage
from bookgen.service.store.models import utcnow
from bookgen.service.store.repository import ERROR_LIMIT, INTERNAL_ERROR

logger = logging.getLogger("bookgen.jobs")

MAX_RUNS = 5
# A stuck renderer must not hold a written book back from completing.
BEFORE_COMPLETED_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class RuntimeSnapshot:
    queued: int
    running: int
    oldest_running_created_at: datetime | None
    queue_capacity: int
    job_slots: int
    paused: bool
    # Submission time of the oldest job not yet started (whole service).
    oldest_queued_created_at: datetime | None = None
    # The worker tier's ledger (whole service); zeros when jobs run in-process.
    sections_queued: int = 0
    sections_running: int = 0
    oldest_queued_section_at: datetime | None = None
    workers_expected: int = 0


@dataclass(slots=True)
class _Running:
    job: JobInfo
    task: asyncio.Task[None]
    cancelled: bool = False  # by a user (cancel route) or because the lease was lost


class JobRuntime:
    def __init__(
        self,
        store: Store,
        llm: ChatModel,
        settings: Settings,
        hooks: Hooks,
        *,
        owner: str | None = None,
        breaker: CircuitBreaker | None = None,
        before_completed: Callable[[JobRow], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        # Work a written book is worth before it is reported completed (its DOCX): a reader who
        # downloads it the moment it completes then reads a file, instead of waiting for it.
        self.before_completed = before_completed
        self.settings = settings
        self.hooks = hooks
        # The LLM client's breaker: while it is open, no job is claimed (none would progress).
        self.breaker = breaker
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._unpaused = asyncio.Event()
        self._unpaused.set()
        self._wake = asyncio.Event()
        self.writer = BookWriter(
            llm=llm,
            hooks=hooks,
            policy=LengthPolicy(settings.length_tolerance, settings.length_max_attempts),
            chapter_concurrency=settings.chapter_concurrency,
            gate=self._gate,
        )
        self._running: dict[str, _Running] = {}
        self._queued = 0
        self._oldest_queued: datetime | None = None
        self._poller: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_reclaim_scan = -math.inf

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        self._queued, self._oldest_queued = await self.store.pending()
        self._poller = asyncio.create_task(self._poll_loop(), name="bookgen-job-poller")

    async def stop(self) -> None:
        """Stop claiming, interrupt running jobs and hand them back to the queue."""
        self._stopping = True
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        tasks = [r.task for r in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- controls -----------------------------------------------------------------------
    async def _gate(self) -> None:
        """Held before each LLM call: a paused runtime suspends its jobs here."""
        await self._unpaused.wait()

    def pause(self) -> None:
        self._unpaused.clear()

    def resume(self) -> None:
        self._unpaused.set()
        self._wake.set()

    @property
    def paused(self) -> bool:
        return not self._unpaused.is_set()

    async def submit(self, job: JobRow) -> None:
        await self.store.add_job(job)
        self.wake()

    def wake(self) -> None:
        """A job was just submitted: look for work now rather than at the next poll."""
        self._queued += 1
        self._wake.set()

    def cancel_local(self, job_id: str) -> bool:
        running = self._running.get(job_id)
        if running is None:
            return False
        running.cancelled = True
        running.task.cancel()
        return True

    def snapshot(self) -> RuntimeSnapshot:
        oldest = min((r.job.created_at for r in self._running.values()), default=None)
        return RuntimeSnapshot(
            queued=self._queued,
            running=len(self._running),
            oldest_running_created_at=oldest,
            queue_capacity=self.settings.max_queue,
            job_slots=self.settings.job_concurrency,
            paused=self.paused,
            oldest_queued_created_at=self._oldest_queued if self._queued else None,
        )

    def estimate_seconds(self, chapters: int, total_words: int) -> float:
        """Rough wall time of a job submitted now, from the nominal stream rate."""
        rate = self.settings.sim.tokens_per_second
        per_chapter = total_words / chapters * 4 / 3 * 1.1
        rounds = math.ceil((chapters + 2) / self.settings.chapter_concurrency)
        one = (chapters * 40 + rounds * per_chapter) / rate
        ahead = (self._queued + len(self._running)) / self.settings.job_concurrency
        return one * (1 + math.floor(ahead))

    # --- claiming -----------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        while not self._stopping:
            try:
                await self._tick()
            except Exception:
                logger.exception("job poll failed")
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_interval_s):
                    await self._wake.wait()
            self._wake.clear()

    async def _tick(self) -> None:
        self._queued, self._oldest_queued = await self.store.pending()
        # Claiming is a write: try it when work is queued, or now and then for lapsed leases.
        now = time.monotonic()
        if self._queued == 0 and now - self._last_reclaim_scan < self.settings.job_lease_s / 2:
            return
        self._last_reclaim_scan = now
        # At most the slots free now: slots freed meanwhile are the next tick's, so a stream of
        # submissions cancelled at once cannot keep this loop (and `_queued` unreconciled,
        # which admission reads) going.
        for _ in range(max(0, self.settings.job_concurrency - len(self._running))):
            if (
                self._stopping
                or self.paused
                or len(self._running) >= self.settings.job_concurrency
                or not (self.breaker is None or self.breaker.accepting())
            ):
                break
            job = await self.store.claim(self.owner, self.settings.job_lease_s)
            if job is None:
                break
            info = job_info(job)
            task = asyncio.create_task(self._run(job, info), name=f"bookgen-job-{job.id[:8]}")
            self._running[job.id] = _Running(info, task)
            # A task cancelled before it first runs (a cancel right after the claim) never
            # reaches `_run`'s cleanup; without this its slot stayed taken for good.
            task.add_done_callback(self._forgetter(job.id))
            self._queued = max(0, self._queued - 1)
            if self.breaker is not None and self.breaker.state != CLOSED:
                break  # half-open: one job carries the probe; the rest wait for its answer

    # --- running ------------------------------------------------------------------------
    async def _heartbeat(self, job_id: str) -> None:
        interval = self.settings.job_lease_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                owned = await self.store.renew(job_id, self.owner, self.settings.job_lease_s)
            except Exception:
                logger.warning("lease renewal failed", extra={"job_id": job_id}, exc_info=True)
                continue
            if not owned:
                self.cancel_local(job_id)
                return

    def _forgetter(self, job_id: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(task: asyncio.Task[None]) -> None:
            running = self._running.get(job_id)
            if running is not None and running.task is task:
                del self._running[job_id]
                self._wake.set()

        return forget

    async def _run(self, job: JobRow, info: JobInfo) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(job.id))
        try:
            with self.hooks.job_run(info), spend.tallied() as tally:
                try:
                    await self._execute(job, info)
                finally:
                    await asyncio.shield(self._add_spend(job.id, Usage(*tally.take())))
        finally:
            heartbeat.cancel()
            self._running.pop(job.id, None)
            self._wake.set()

    async def _add_spend(self, job_id: str, usage: Usage) -> None:
        try:
            await self.store.add_spend(job_id, usage)
        except DBAPIError:
            logger.warning("could not add unsaved LLM spend", extra={"job_id": job_id})

    async def _finish(
        self, job_id: str, info: JobInfo, outcome: str, error: str | None = None
    ) -> bool:
        """End an owned job; False if it was no longer ours. The run's unsaved spend is stored
        first: a reader who sees the job ended sees what its work cost."""
        await self._add_spend(job_id, Usage(*spend.take()))
        if await self.store.finish(job_id, self.owner, outcome, error) is None:
            return False
        self._finished(info, outcome)
        return True

    async def _execute(self, job: JobRow, info: JobInfo) -> None:
        if job.runs > MAX_RUNS:
            # A job that keeps taking its workers down must not do so forever.
            reason = f"gave up after {MAX_RUNS} interrupted runs"
            await self._finish(job.id, info, "failed", reason)
            return
        sink = StoreSink(self.store, job.id, self.owner)
        try:
            done = {s.index for s in await self.store.sections(job.id)}
            await self.writer.write(book_spec(job), info, sink, outline=job.outline, done=done)
            await self._before_completed(job)
        except asyncio.CancelledError:
            if self._stopping and not self._running[job.id].cancelled:
                await asyncio.shield(self.store.release(job.id, self.owner))
                raise
            await self._finished_elsewhere(info)
            return
        except LeaseLost:
            await self._finished_elsewhere(info)
            return
        except DBAPIError as error:
            # The store, not the job, failed: leave the lease to lapse so the job is resumed.
            kind = type(error.orig).__name__ if error.orig is not None else type(error).__name__
            logger.warning(
                "store error; job left to resume", extra={"job_id": job.id, "error_type": kind}
            )
            return
        except LLMError as error:
            if error.retryable and job.llm_handbacks < self.settings.llm_handback_max:
                await self._hand_back(job, error)
                return
            message = error.public()
            if error.retryable:
                message = (
                    f"the LLM provider kept failing: gave up after {job.llm_handbacks} "
                    f"hand-backs (BOOKGEN_LLM_HANDBACK_MAX); last error: {error.public()}"
                )
            logger.warning("job failed", extra={"job_id": job.id, "error_type": "LLMError"})
            await self._finish(job.id, info, "failed", message[:ERROR_LIMIT])
            return
        except Exception as error:
            logger.warning(
                "job failed",
                extra={"job_id": job.id, "error_type": type(error).__name__},
                exc_info=True,
            )
            await self._finish(job.id, info, "failed", INTERNAL_ERROR)
            return
        await self._finish(job.id, info, "completed")

    async def _before_completed(self, job: JobRow) -> None:
        if self.before_completed is None:
            return
        try:
            await asyncio.wait_for(self.before_completed(job), BEFORE_COMPLETED_TIMEOUT_S)
        except Exception:  # an optimisation (timeouts included): a reader does the work itself
            logger.warning("work before completion failed", extra={"job_id": job.id}, exc_info=True)

    async def _hand_back(self, job: JobRow, error: LLMError) -> None:
        """Give a book whose provider failed back to the queue, stored sections kept, to be
        taken again after a backoff (or the provider's Retry-After, if longer)."""
        delay = handback_delay(self.settings, job.llm_handbacks + 1, error.retry_after)
        note = (
            f"waiting for the LLM provider (hand-back {job.llm_handbacks + 1} of "
            f"{self.settings.llm_handback_max}, again in {delay:.0f} s): {error.public()}"
        )
        logger.warning(
            "LLM provider failed; job handed back",
            extra={"job_id": job.id, "error_type": error.error_type},
        )
        await self.store.defer(job.id, self.owner, delay, note)
        self._wake.set()

    async def _finished_elsewhere(self, info: JobInfo) -> None:
        """The job stopped being ours: report it only if a user cancelled it."""
        current = await self.store.get_job(info.job_id)
        if current is not None and current.status == "cancelled":
            self._finished(info, "cancelled")

    def _finished(self, info: JobInfo, outcome: str) -> None:
        duration = (utcnow() - info.created_at).total_seconds()
        self.hooks.job_finished(info, outcome, duration)


def handback_delay(settings: Settings, handback: int, retry_after: float | None) -> float:
    """Backoff before hand-back number `handback` (1, 2, ...) runs again: doubling from
    `llm_handback_base_s` to `llm_handback_max_s`, jittered down by up to half so books handed
    back together do not return together; never sooner than the provider asked."""
    ceiling = min(
        settings.llm_handback_max_s, settings.llm_handback_base_s * 2 ** min(handback - 1, 30)
    )
    delay = ceiling * random.uniform(0.5, 1.0)
    return float(max(delay, retry_after or 0.0))
