"""Hand-backs in the store: a graceful release is not an interrupted run; a provider hand-back
waits out its backoff, keeps stored sections and is counted."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bookgen.service.store import JobRow, NewSection, Store, Usage


async def test_release_and_defer(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    await store.create_tables()
    try:
        await store.add_job(
            JobRow(id="j1", character="Ada", chapters=1, total_words=1000, model="m", sources=[])
        )
        job = await store.claim("w1", 30.0)
        assert job is not None and job.runs == 1
        await store.release("j1", "w1")  # a clean shutdown
        job = await store.claim("w2", 30.0)
        assert job is not None and job.runs == 1  # the first run was not counted
        section = NewSection("j1", 0, "introduction", "Intro", "Text.", 1, 1, 0.0, 1)
        assert await store.save_section("w2", section, Usage())
        assert await store.defer("j1", "w2", 0.4, "waiting for the LLM provider") == 1
        assert await store.defer("j1", "w2", 0.4, "again") is None  # no longer ours
        job = await store.get_job("j1")
        assert job is not None and job.status == "pending" and job.error
        assert await store.claim("w3", 30.0) is None  # not before its backoff is over
        await asyncio.sleep(0.5)
        job = await store.claim("w3", 30.0)
        assert job is not None and job.llm_handbacks == 1 and job.runs == 1
        assert [s.index for s in await store.sections("j1")] == [0]  # kept
        await store.add_spend("j1", Usage(3, 4, 0.5))
        job = await store.get_job("j1")
        assert job is not None and (job.input_tokens, job.output_tokens) == (3, 4)
    finally:
        await store.close()
