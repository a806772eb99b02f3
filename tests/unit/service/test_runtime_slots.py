"""A job cancelled right after it was claimed (before its task first ran) frees its slot."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

from bookgen.service.hooks import Hooks
from bookgen.service.jobs import JobRuntime
from bookgen.service.pipeline.writer import ChatModel
from bookgen.service.store import JobRow, Store
from bookgen.service.store.models import utcnow
from service_helpers import fast_settings


class Silent:
    """A model that never answers (the job must not get as far as asking it)."""

    async def chat(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.Event().wait()


async def test_cancel_between_claim_and_first_run_frees_the_slot(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, job_concurrency=1)
    store = Store.from_url(settings.database_url)
    await store.create_tables()
    runtime = JobRuntime(store, cast(ChatModel, Silent()), settings, Hooks())
    try:
        for name in ("a", "b"):
            job = JobRow(
                id=name * 8, character="Ada", chapters=1, total_words=100,
                model="bookgen-sim", status="pending", created_at=utcnow(),
            )  # fmt: skip
            await store.add_job(job)
        await runtime._tick()  # claims "aaaaaaaa"; its task has not run yet
        assert runtime.snapshot().running == 1
        assert runtime.cancel_local("a" * 8)
        for _ in range(5):
            await asyncio.sleep(0)
        assert runtime.snapshot().running == 0
        await runtime._tick()  # the slot is free again: the next job is taken
        assert runtime.snapshot().running == 1
    finally:
        await runtime.stop()
        await store.close()
