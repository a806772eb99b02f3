"""`SectionWorker`: runs section tasks of the worker tier on one asyncio loop per process.

Celery's pool threads only wait: each task hands its piece to this process's event loop (where
the store engine, the LLM client and its connection pool live) and blocks on the result, so one
process streams many sections at once at the cost of a thread stack each, and async clients are
never shared across loops.

Each run holds a lease on its piece in the store and renews it; a worker that dies stops
renewing, and every worker's reaper queues such pieces again and republishes them. On a stop
signal the worker takes no new piece, gives running ones `worker_drain_s` to finish, then hands
the rest back (queued again, the run not counted against the piece's limit).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import threading
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError

from bookgen.service.hooks import Hooks, JobInfo, SectionRun
from bookgen.service.jobs.execution import book_spec, job_info
from bookgen.service.jobs.runtime import handback_delay
from bookgen.service.llm import spend
from bookgen.service.llm.breaker import CircuitBreaker
from bookgen.service.llm.errors import LLMError
from bookgen.service.pipeline.book import BookWriter, PlannedSection, chapter, frame
from bookgen.service.pipeline.outline import Outline
from bookgen.service.pipeline.writer import ChatModel, LengthPolicy
from bookgen.service.queue.publisher import Publisher
from bookgen.service.settings import Settings
from bookgen.service.store import LeaseLost, NewSection, Store, Usage
from bookgen.service.store.models import utcnow
from bookgen.service.store.repository import ERROR_LIMIT, INTERNAL_ERROR
from bookgen.service.store.tasks import OUTLINE_INDEX, Claim, SectionTasks

logger = logging.getLogger("bookgen.worker")

# A never-published piece (its publisher died between commit and send) waits this long.
UNPUBLISHED_GRACE_S = 15.0

T = TypeVar("T")


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[None]
    hand_back: bool = False  # set before cancelling: the stop is ours, not a lost lease


class SectionWorker:
    def __init__(
        self,
        settings: Settings,
        hooks: Hooks,
        publisher: Publisher,
        *,
        llm: ChatModel | None = None,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.hooks = hooks
        self.publisher = publisher
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._llm = llm
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bookgen-worker-loop")
        self._running: dict[tuple[str, int], _Running] = {}
        self._stopping = False
        self._closers: list[Any] = []
        self._reaper: asyncio.Task[None] | None = None
        self.store: Store | None = None
        self.tasks: SectionTasks | None = None
        self.writer: BookWriter | None = None
        self.breaker: CircuitBreaker | None = None
        self._later: set[asyncio.Task[None]] = set()

    # --- lifecycle (called from the worker's main thread) ------------------------------
    def start(self) -> None:
        self._thread.start()
        self._call(self._open())

    def begin_shutdown(self) -> None:
        """Stop taking pieces; hand back what is still running after the drain window."""
        if not self._stopping:
            self._stopping = True
            asyncio.run_coroutine_threadsafe(self._drain(), self._loop)

    def close(self) -> None:
        if self._thread.is_alive():
            self._call(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    @property
    def running(self) -> int:
        return len(self._running)

    def run(self, job_id: str, index: int, carrier: dict[str, str]) -> str:
        """Run one delivery of piece (job_id, index); blocks the calling thread; its outcome."""
        return self._call(self._deliver(job_id, index, carrier))

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    async def _open(self) -> None:
        from bookgen.service.llm.client import LLMClient
        from bookgen.service.llm.provider import announce_provider

        self.store = Store.from_url(self.settings.database_url)
        await self.store.prepare_schema(migrate=self.settings.db_auto_migrate)
        self.tasks = SectionTasks(self.store)
        if self._llm is None:
            base_url = announce_provider(self.settings, self.hooks).base_url
            if base_url is None:
                from bookgen.service.app import EmbeddedSim

                sim = EmbeddedSim(self.settings.sim)
                base_url = await sim.start()
                self._closers.append(sim.stop)
            client = LLMClient(self.settings, self.hooks, base_url=base_url)
            self._closers.append(client.aclose)
            self._llm = client
        breaker = getattr(self._llm, "breaker", None)
        self.breaker = breaker if isinstance(breaker, CircuitBreaker) else None
        self.writer = BookWriter(
            llm=self._llm,
            hooks=self.hooks,
            policy=LengthPolicy(self.settings.length_tolerance, self.settings.length_max_attempts),
            chapter_concurrency=self.settings.chapter_concurrency,
        )
        self._reaper = asyncio.create_task(self._reap_loop(), name="bookgen-reaper")

    async def _close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        for later in list(self._later):
            later.cancel()  # the reaper of a live worker publishes those pieces instead
        await asyncio.gather(*self._later, return_exceptions=True)
        for close in reversed(self._closers):
            await close()
        if self.store is not None:
            await self.store.close()

    async def _drain(self) -> None:
        tasks = [run.task for run in self._running.values()]
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.worker_drain_s)
        for run in list(self._running.values()):
            run.hand_back = True
            run.task.cancel()

    # --- one delivery ------------------------------------------------------------------
    async def _deliver(self, job_id: str, index: int, carrier: dict[str, str]) -> str:
        assert self.tasks is not None
        # While the provider is down, take nothing: the piece stays queued, not failed.
        while self.breaker is not None and not self.breaker.accepting() and not self._stopping:
            await self.breaker.changed(timeout_s=0.5)
        if self._stopping:
            # Received while stopping: give the message back rather than run or drop it.
            await self.publisher.publish(job_id, [index], carrier)
            return "handed_back"
        claim = await self.tasks.claim(job_id, index, self.owner, self.settings.section_lease_s)
        if isinstance(claim, str):
            # Already stored, running elsewhere, or its book ended: this delivery is a duplicate.
            info = JobInfo(job_id, 0, 0, "", utcnow())
            with self.hooks.section_task(SectionRun(info, index, "", 0, carrier, "duplicate")):
                pass
            return "duplicate"
        run = SectionRun(job_info(claim.job), index, claim.kind, claim.attempt, carrier)
        with self.hooks.section_task(run):
            run.outcome = await self._run_claimed(claim, run.job)
        return run.outcome

    async def _run_claimed(self, claim: Claim, info: JobInfo) -> str:
        assert self.tasks is not None
        key = (info.job_id, claim.index)
        if claim.attempt > self.settings.section_max_runs:
            reason = (
                f"{claim.kind} {claim.index} was cut off {claim.attempt - 1} times "
                f"(its workers died or it passed its deadline); gave up"
            )
            await self._fail_book(info, reason)
            return "gave_up"
        task = asyncio.current_task()
        assert task is not None
        self._running[key] = _Running(task)
        heartbeat = asyncio.create_task(self._heartbeat(key))
        tally = spend.SpendTally()
        try:
            with spend.tallied() as tally:
                async with asyncio.timeout(self.settings.section_deadline_s):
                    await self._write(claim, info)
        except asyncio.CancelledError:
            if not self._running[key].hand_back:
                # The lease was lost (taken over, or the book was cancelled): not ours to finish.
                task.uncancel()
                return "duplicate"
            task.uncancel()
            await self._hand_back(info, claim.index, counted=False)
            return "handed_back"
        except TimeoutError:
            logger.warning("section passed its deadline", extra={"job_id": info.job_id})
            await self._hand_back(info, claim.index, counted=True)
            return "handed_back"
        except LeaseLost:
            return "duplicate"
        except DBAPIError as error:
            # The store failed, not the book: the lease lapses and the reaper queues it again.
            kind = type(error.orig).__name__ if error.orig is not None else type(error).__name__
            logger.warning("store error; section left to the reaper", extra={"error_type": kind})
            return "failed"
        except LLMError as error:
            if error.retryable:
                return await self._provider_failed(claim, info, error)
            logger.warning(
                "section failed", extra={"job_id": info.job_id, "error_type": "LLMError"}
            )
            await self._fail_book(info, error.public())
            return "failed"
        except Exception as error:
            logger.warning(
                "section failed",
                extra={"job_id": info.job_id, "error_type": type(error).__name__},
                exc_info=True,
            )
            await self._fail_book(info, INTERNAL_ERROR)
            return "failed"
        finally:
            heartbeat.cancel()
            self._running.pop(key, None)
            await asyncio.shield(self._add_spend(info.job_id, Usage(*tally.take())))
        return "completed"

    async def _add_spend(self, job_id: str, usage: Usage) -> None:
        assert self.store is not None
        try:
            await self.store.add_spend(job_id, usage)
        except DBAPIError:
            logger.warning("could not add unsaved LLM spend", extra={"job_id": job_id})

    async def _provider_failed(self, claim: Claim, info: JobInfo, error: LLMError) -> str:
        """Hand the piece back after a backoff (the book's other pieces carry on), or fail the
        book once its pieces were handed back `llm_handback_max` times in all."""
        assert self.tasks is not None
        # The piece's own count sets its backoff; the book's total is what is capped.
        delay = handback_delay(self.settings, claim.handbacks + 1, error.retry_after)
        handbacks = await self.tasks.defer(info.job_id, claim.index, self.owner, delay)
        if handbacks is None:
            return "duplicate"  # the lease was lost meanwhile
        if handbacks > self.settings.llm_handback_max:
            await self._fail_book(
                info,
                f"the LLM provider kept failing: gave up after {handbacks - 1} hand-backs of "
                f"this book's sections (BOOKGEN_LLM_HANDBACK_MAX); last error ({claim.kind} "
                f"{claim.index}): {error.public()}"[:ERROR_LIMIT],
            )
            return "gave_up"
        logger.warning(
            "LLM provider failed; section handed back",
            extra={"job_id": info.job_id, "error_type": error.error_type},
        )
        later = asyncio.create_task(self._publish_later(info, claim.index, delay))
        self._later.add(later)
        later.add_done_callback(self._later.discard)
        return "handed_back"

    async def _publish_later(self, info: JobInfo, index: int, delay_s: float) -> None:
        """Publish a handed-back piece once its backoff is over (the reaper publishes it
        instead if this worker stops first)."""
        assert self.tasks is not None
        await asyncio.sleep(delay_s)
        await self.publisher.publish(info.job_id, [index], info.trace_context)
        await self.tasks.mark_published([(info.job_id, index)])

    async def _write(self, claim: Claim, info: JobInfo) -> None:
        assert self.writer is not None
        spec = book_spec(claim.job)
        if claim.index == OUTLINE_INDEX:
            await self._outline(claim, info)
            return
        planned: PlannedSection
        if claim.kind == "chapter":
            entry = {"title": claim.title, "synopsis": claim.synopsis}
            planned = chapter(spec, claim.index, entry)
        else:
            planned = next(p for p in frame(spec) if p.index == claim.index)
        await self.writer.section(spec, info, planned, _LeasedSink(self, info))

    async def _outline(self, claim: Claim, info: JobInfo) -> None:
        """The outline; each chapter is planned and published as soon as its entry streams in,
        so chapters start on other workers while the outline is still being written."""
        assert self.writer is not None and self.tasks is not None
        spec = book_spec(claim.job)
        known = {
            i: {"title": row.title, "synopsis": row.synopsis}
            for i, row in (await self.tasks.planned(info.job_id)).items()
            if row.kind == "chapter"
        }
        usage = Usage()
        if len(known) < spec.chapters:
            planning: list[asyncio.Task[None]] = []

            def on_entry(number: int, entry: dict[str, str]) -> None:
                if number not in known:
                    known[number] = entry
                    planning.append(asyncio.create_task(self._plan(info, number, entry)))

            outline, usage = await self.writer.outline(spec, info, on_entry)
            await asyncio.gather(*planning)
            for number, entry in enumerate(outline, start=1):
                if number not in known:
                    known[number] = entry
                    await self._plan(info, number, entry)
        # What was planned (by this run or a cut-off earlier one) is what chapters are written
        # from: store exactly that as the outline.
        final: Outline = [known[number] for number in range(1, spec.chapters + 1)]
        await self.tasks.save_outline(info.job_id, self.owner, final, usage)

    async def _plan(self, info: JobInfo, number: int, entry: dict[str, str]) -> None:
        assert self.tasks is not None
        if await self.tasks.add_chapter(info.job_id, number, entry):
            await self.publisher.publish(info.job_id, [number], info.trace_context)
            await self.tasks.mark_published([(info.job_id, number)])

    async def _hand_back(self, info: JobInfo, index: int, *, counted: bool) -> None:
        assert self.tasks is not None
        released = await asyncio.shield(
            self.tasks.release(info.job_id, index, self.owner, counted=counted)
        )
        if released:
            await asyncio.shield(self.publisher.publish(info.job_id, [index], info.trace_context))
            await self.tasks.mark_published([(info.job_id, index)])

    async def _fail_book(self, info: JobInfo, reason: str) -> None:
        assert self.tasks is not None
        if await self.tasks.fail_book(info.job_id, reason):
            duration = (utcnow() - info.created_at).total_seconds()
            self.hooks.job_finished(info, "failed", duration)

    async def finished_section(self, info: JobInfo, section: NewSection, usage: Usage) -> None:
        assert self.tasks is not None
        stored = await self.tasks.save_section(self.owner, section, usage)
        if stored.book_done and stored.job is not None:
            job = stored.job
            end = job.completed_at or utcnow()
            self.hooks.job_finished(info, "completed", (end - job.created_at).total_seconds())

    # --- leases ------------------------------------------------------------------------
    async def _heartbeat(self, key: tuple[str, int]) -> None:
        assert self.tasks is not None
        interval = self.settings.section_lease_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                held = await self.tasks.renew(*key, self.owner, self.settings.section_lease_s)
            except Exception:
                logger.warning("lease renewal failed", exc_info=True)
                continue
            if not held:
                run = self._running.get(key)
                if run is not None:
                    run.task.cancel()
                return

    async def _reap_loop(self) -> None:
        assert self.tasks is not None and self.store is not None
        while True:
            await asyncio.sleep(self.settings.reap_interval_s)
            try:
                await self._reap()
            except Exception:
                logger.warning("reaper pass failed", exc_info=True)

    async def _reap(self) -> None:
        """Queue again what dead workers held, and publish what has no message in the broker."""
        assert self.tasks is not None and self.store is not None
        lapsed = await self.tasks.reap()
        if lapsed:
            logger.info("re-queued %d sections whose worker stopped", len(lapsed))
        idle = self.running < self.settings.worker_concurrency
        settings = self.settings
        republish_s = settings.section_republish_idle_s if idle else settings.section_republish_s
        missing = await self.tasks.unpublished(UNPUBLISHED_GRACE_S, republish_s)
        by_job: dict[str, list[int]] = {}
        for job_id, index in [*lapsed, *missing]:
            by_job.setdefault(job_id, []).append(index)
        for job_id, indices in by_job.items():
            job = await self.store.get_job(job_id)
            carrier = dict(job.trace_context or {}) if job is not None else {}
            await self.publisher.publish(job_id, sorted(set(indices)), carrier)
            await self.tasks.mark_published([(job_id, i) for i in set(indices)])


@dataclass(frozen=True, slots=True)
class _LeasedSink:
    worker: SectionWorker
    job: JobInfo

    async def save_outline(self, outline: Outline, usage: Usage) -> None:
        raise AssertionError("the outline is stored by its own task")

    async def save_section(self, section: NewSection, usage: Usage) -> None:
        await self.worker.finished_section(self.job, section, usage)
