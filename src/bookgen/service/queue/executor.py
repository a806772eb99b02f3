"""The API side of the worker tier: admit a book into the store and the queue; read the ledger."""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import datetime

from bookgen.service.jobs.runtime import RuntimeSnapshot
from bookgen.service.queue.publisher import Publisher
from bookgen.service.settings import Settings
from bookgen.service.store import JobRow, Store
from bookgen.service.store.tasks import Ledger, SectionTasks

logger = logging.getLogger("bookgen.queue")

LEDGER_REFRESH_S = 2.0


class QueuedExecutor:
    """Same surface as `JobRuntime` for the routes, but the books are written by workers."""

    def __init__(self, store: Store, settings: Settings, publisher: Publisher) -> None:
        self.store = store
        self.settings = settings
        self.publisher = publisher
        self.tasks = SectionTasks(store)
        self._ledger = Ledger(0, 0, None)
        self._pending_jobs = 0
        self._oldest_pending: datetime | None = None
        self._oldest_running: datetime | None = None
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._refresh()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="bookgen-ledger")

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)

    async def _refresh(self) -> None:
        self._ledger = await self.tasks.ledger()
        self._pending_jobs, self._oldest_pending = await self.store.pending()
        self._oldest_running = await self.store.oldest_running_created_at()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(LEDGER_REFRESH_S)
            try:
                await self._refresh()
            except Exception:
                logger.warning("ledger refresh failed", exc_info=True)

    async def submit(self, job: JobRow) -> None:
        """Store the book with its first pieces, then hand those to the broker.

        The book is durable once stored: if the broker cannot take the messages now, the
        workers' reaper publishes the pieces later, so the submission still succeeds.
        """
        pieces = [piece.index for piece in await self.tasks.submit(job)]
        self._pending_jobs += 1
        try:
            await self.publisher.publish(job.id, pieces, job.trace_context)
        except Exception as error:
            logger.warning(
                "broker unavailable; the job's tasks will be published later",
                extra={"job_id": job.id, "error_type": type(error).__name__},
            )
            return
        await self.tasks.mark_published([(job.id, index) for index in pieces])

    async def ping(self) -> bool:
        await asyncio.to_thread(self.publisher.ping)
        return True

    def snapshot(self) -> RuntimeSnapshot:
        return RuntimeSnapshot(
            queued=self._pending_jobs,
            running=0,
            oldest_running_created_at=self._oldest_running,
            oldest_queued_created_at=self._oldest_pending,
            queue_capacity=self.settings.max_queue,
            job_slots=self.settings.workers_expected * self.settings.worker_concurrency,
            paused=False,
            sections_queued=self._ledger.queued,
            sections_running=self._ledger.running,
            oldest_queued_section_at=self._ledger.oldest_queued_at,
            workers_expected=self.settings.workers_expected,
        )

    def estimate_seconds(self, chapters: int, total_words: int) -> float:
        """Rough wall time of a book submitted now: its critical path at the nominal rate,
        longer when the fleet's slots are taken."""
        rate = self.settings.sim.tokens_per_second
        one = (chapters * 40 + total_words / chapters * 4 / 3 * 1.1) / rate
        slots = max(1, self.settings.workers_expected) * self.settings.worker_concurrency
        load = (self._ledger.queued + self._ledger.running) / slots
        return one * (1 + math.floor(load))

    def cancel_local(self, job_id: str) -> bool:
        """Nothing runs here; a worker notices the cancellation when it next renews its lease."""
        return False

    def pause(self) -> None:
        raise NotImplementedError("pause the workers (SIGSTOP) when jobs run on a worker tier")

    def resume(self) -> None:
        raise NotImplementedError("resume the workers (SIGCONT)")

    @property
    def paused(self) -> bool:
        return False
