"""What the routes need from whatever runs the books: in this process, or on a worker tier."""

from __future__ import annotations

from typing import Protocol

from bookgen.service.jobs.runtime import RuntimeSnapshot
from bookgen.service.store import JobRow


class Executor(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def submit(self, job: JobRow) -> None:
        """Make a new (already validated) job durable and schedule it."""

    def snapshot(self) -> RuntimeSnapshot: ...

    def estimate_seconds(self, chapters: int, total_words: int) -> float: ...

    def cancel_local(self, job_id: str) -> bool:
        """Interrupt the job if it runs in this process; False otherwise."""

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    @property
    def paused(self) -> bool: ...
