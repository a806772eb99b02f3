"""Publishing section tasks from asyncio code (kombu's producer is blocking: run it in a thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from celery import Celery

from bookgen.service.queue.celery_app import QUEUE, SECTION_TASK

# Only the W3C trace context travels in task headers; baggage could carry anything.
TRACE_HEADERS = ("traceparent", "tracestate")


class Publisher:
    def __init__(self, app: Celery) -> None:
        self.app = app

    def publish_now(self, job_id: str, index: int, carrier: dict[str, str]) -> None:
        headers = {k: v for k, v in carrier.items() if k in TRACE_HEADERS}
        self.app.send_task(
            SECTION_TASK, args=(job_id, index), queue=QUEUE, headers=headers, ignore_result=True
        )

    async def publish(
        self, job_id: str, indices: Iterable[int], carrier: dict[str, str] | None = None
    ) -> None:
        """Send one task per piece; returns once the broker has them."""
        batch = list(indices)
        if batch:
            await asyncio.to_thread(self._publish_all, job_id, batch, dict(carrier or {}))

    def _publish_all(self, job_id: str, indices: list[int], carrier: dict[str, str]) -> None:
        for index in indices:
            self.publish_now(job_id, index, carrier)

    def ping(self) -> None:
        """Raise if the broker cannot be reached."""
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
