"""The same job flow on each storage backend, and a job resumed after its worker vanished."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bookgen.service.store import Store
from service_helpers import fast_settings, running_app, wait_for_status

SMALL = {"character": "Ada Lovelace", "chapters": 3, "total_words": 3000}


async def test_job_completes_on_each_backend(database_url: str, tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, database_url=database_url)
    async with running_app(settings) as (app, client):
        created = await client.post("/api/v1/biographies/generate", json=SMALL)
        assert created.status_code == 202
        job_id = created.json()["job_id"]
        body = await wait_for_status(client, job_id, {"completed", "failed"})
        assert body["status"] == "completed", body["error"]
        store: Store = app.state.store
        assert [s.index for s in await store.sections(job_id)] == [0, 1, 2, 3, 4]
        download = await client.get(f"/api/v1/biographies/{job_id}/download")
        assert download.status_code == 200 and "Chapter 3:" in download.text


async def test_a_job_left_by_a_dead_worker_resumes_without_rewriting(
    database_url: str, tmp_path: Path
) -> None:
    # A first app takes the job and is stopped without a clean hand-back (its lease just lapses).
    slow = fast_settings(
        tmp_path,
        database_url=database_url,
        job_lease_s=1.0,
        chapter_concurrency=1,
        sim={"tokens_per_second": 1500.0, "time_to_first_token_s": 0.0, "jitter": 0.0},
    )
    async with running_app(slow) as (app, client):
        job_id = (await client.post("/api/v1/biographies/generate", json=SMALL)).json()["job_id"]
        store: Store = app.state.store
        for _ in range(200):
            if len(await store.sections(job_id)) >= 2:
                break
            await asyncio.sleep(0.02)
        runtime = app.state.runtime
        runtime.pause()  # freeze it; then drop its tasks without releasing the lease
        for running in list(runtime._running.values()):
            running.task.cancel()
        runtime._stopping = True
        first = {s.index: s.text for s in await store.sections(job_id)}
    assert 2 <= len(first) < 5
    async with running_app(fast_settings(tmp_path, database_url=database_url)) as (app, client):
        body = await wait_for_status(client, job_id, {"completed", "failed"}, timeout_s=30)
        assert body["status"] == "completed"
        sections = await app.state.store.sections(job_id)
    assert [s.index for s in sections] == [0, 1, 2, 3, 4]
    assert all(s.text == first[s.index] for s in sections if s.index in first)
    assert body["progress"]["chapters_completed"] == 3
