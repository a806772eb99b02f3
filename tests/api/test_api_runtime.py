"""The job runtime through the API: snapshot figures, pause/resume, cancelling a running job."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bookgen.service.jobs import JobRuntime
from bookgen.service.jobs import runtime as runtime_module
from bookgen.service.pipeline import export
from bookgen.service.store import Store
from bookgen.service.store.repository import INTERNAL_ERROR
from service_helpers import fast_settings, running_app, wait_for_status

SLOW_SIM = {"tokens_per_second": 400.0, "time_to_first_token_s": 0.0, "jitter": 0.0}
BOOK = {"character": "Ada Lovelace", "chapters": 4, "total_words": 1200}


async def test_snapshot_pause_and_resume(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, sim=SLOW_SIM, chapter_concurrency=1)
    async with running_app(settings) as (app, client):
        runtime: JobRuntime = app.state.runtime
        store: Store = app.state.store
        job_id = (await client.post("/api/v1/biographies/generate", json=BOOK)).json()["job_id"]
        await wait_for_status(client, job_id, {"in_progress"})
        snap = runtime.snapshot()
        assert (snap.running, snap.paused, snap.job_slots) == (1, False, settings.job_concurrency)
        assert snap.oldest_running_created_at is not None
        runtime.pause()
        await asyncio.sleep(1.5)  # any call already in flight (~1 s at 400 tok/s) ends
        frozen = len(await store.sections(job_id))
        await asyncio.sleep(1.0)
        assert len(await store.sections(job_id)) == frozen  # suspended between LLM calls
        assert runtime.snapshot().paused
        second = (await client.post("/api/v1/biographies/generate", json=BOOK)).json()["job_id"]
        await asyncio.sleep(0.3)
        assert (await client.get(f"/api/v1/biographies/{second}/status")).json()[
            "status"
        ] == "pending"  # a paused runtime claims nothing
        assert runtime.snapshot().queued == 1
        runtime.resume()
        body = await wait_for_status(client, job_id, {"completed"}, timeout_s=60)
        assert body["progress"]["chapters_completed"] == 4


async def test_cancelling_a_running_job_stops_it(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, sim=SLOW_SIM, chapter_concurrency=1)
    async with running_app(settings) as (app, client):
        job_id = (await client.post("/api/v1/biographies/generate", json=BOOK)).json()["job_id"]
        await wait_for_status(client, job_id, {"in_progress"})
        response = await client.post(f"/api/v1/biographies/{job_id}/cancel")
        assert response.status_code == 200 and response.json()["status"] == "cancelled"
        await asyncio.sleep(0.2)
        assert app.state.runtime.snapshot().running == 0
        count = len(await app.state.store.sections(job_id))
        await asyncio.sleep(1.0)
        assert len(await app.state.store.sections(job_id)) == count
        download = await client.get(f"/api/v1/biographies/{job_id}/download")
        assert download.status_code == 400 and "cancelled" in download.json()["detail"]


async def test_model_failures_fail_the_job_with_a_reason(tmp_path: Path) -> None:
    broken = {"error_rate": 1.0, "time_to_first_token_s": 0.0, "jitter": 0.0}
    # No hand-backs allowed: a provider failure the client's retries did not cure ends the book.
    settings = fast_settings(tmp_path, sim=broken, llm_max_retries=1, llm_handback_max=0)
    async with running_app(settings) as (_, client):
        job_id = (await client.post("/api/v1/biographies/generate", json=BOOK)).json()["job_id"]
        body = await wait_for_status(client, job_id, {"failed", "completed"})
        assert body["status"] == "failed"
        assert body["error"] and "LLM" in body["error"]
        download = await client.get(f"/api/v1/biographies/{job_id}/download")
        assert download.status_code == 400 and "failed" in download.json()["detail"]


async def test_a_bug_fails_the_job_with_our_words_not_the_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "postgresql://bookgen:hunter2@db"

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"cannot reach {secret}")

    settings = fast_settings(tmp_path)
    async with running_app(settings) as (app, client):
        monkeypatch.setattr(type(app.state.runtime.writer), "write", broken)
        job_id = (await client.post("/api/v1/biographies/generate", json=BOOK)).json()["job_id"]
        body = await wait_for_status(client, job_id, {"failed", "completed"})
    assert body["status"] == "failed"
    assert body["error"] == INTERNAL_ERROR and secret not in str(body)
    # The operator still gets the exception, in the service log beside the job id.
    assert any(r.exc_info and secret in str(r.exc_info[1]) for r in caplog.records)


async def test_clean_shutdown_hands_running_jobs_back(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, sim=SLOW_SIM, chapter_concurrency=1)
    async with running_app(settings) as (_, client):
        job_id = (await client.post("/api/v1/biographies/generate", json=BOOK)).json()["job_id"]
        await wait_for_status(client, job_id, {"in_progress"})
    store = Store.from_url(settings.database_url)
    try:
        job = await store.get_job(job_id)
    finally:
        await store.close()
    assert job is not None
    assert (job.status, job.lease_owner) == ("pending", None)


async def test_a_book_s_docx_is_rendered_before_it_is_reported_completed(tmp_path: Path) -> None:
    async with running_app(fast_settings(tmp_path)) as (app, client):
        job_id = (await client.post("/api/v1/biographies/generate", json=BOOK)).json()["job_id"]
        await wait_for_status(client, job_id, {"completed"})
        cached = app.state.rendered_books.get(job_id, "docx")  # already there: no render waited
        assert cached is not None and cached[:2] == b"PK"  # a DOCX is a zip
        download = await client.get(f"/api/v1/biographies/{job_id}/download?format=docx")
        assert download.status_code == 200 and download.content == cached


async def test_a_failed_render_does_not_hold_the_book_back_and_a_reader_renders_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = export.render_async
    failures: list[str] = []

    async def fails_once(fmt: str, character: str, sections: list[export.Section]) -> bytes:
        if not failures:
            failures.append(fmt)
            raise RuntimeError("renderer gone")
        return await real(fmt, character, sections)

    monkeypatch.setattr(export, "render_async", fails_once)
    async with running_app(fast_settings(tmp_path)) as (app, client):
        job_id = (await client.post("/api/v1/biographies/generate", json=BOOK)).json()["job_id"]
        await wait_for_status(client, job_id, {"completed"})
        assert failures == ["docx"] and app.state.rendered_books.get(job_id, "docx") is None
        download = await client.get(f"/api/v1/biographies/{job_id}/download?format=docx")
        assert download.status_code == 200 and download.content[:2] == b"PK"


async def test_a_stuck_render_does_not_hold_the_book_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = asyncio.Event()

    async def never(fmt: str, character: str, sections: list[export.Section]) -> bytes:
        await stuck.wait()
        return b"PK"

    monkeypatch.setattr(export, "render_async", never)
    monkeypatch.setattr(runtime_module, "BEFORE_COMPLETED_TIMEOUT_S", 0.3)
    async with running_app(fast_settings(tmp_path)) as (_, client):
        job_id = (await client.post("/api/v1/biographies/generate", json=BOOK)).json()["job_id"]
        body = await wait_for_status(client, job_id, {"completed", "failed"})
        stuck.set()  # let the render end before the app stops
        assert body["status"] == "completed"
