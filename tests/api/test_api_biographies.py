"""Jobs through the API: submit, follow, download, list and cancel; the hooks see each step."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from docx import Document
from fastapi import FastAPI

from bookgen.service.hooks import ChapterOutcome, Hooks, JobInfo
from service_helpers import fast_settings, running_app, wait_for_status

SMALL = {"character": "Ada Lovelace", "chapters": 3, "total_words": 3000}


async def submit(client: httpx.AsyncClient, body: dict[str, object] | None = None) -> str:
    response = await client.post("/api/v1/biographies/generate", json=body or SMALL)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


async def test_generate_answers_202_with_v1_fields(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/biographies/generate", json=SMALL)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending" and body["character"] == "Ada Lovelace"
    assert body["chapters"] == 3
    created = datetime.fromisoformat(body["created_at"])
    assert datetime.fromisoformat(body["estimated_completion_time"]) > created


async def test_defaults_come_from_settings(app: FastAPI, client: httpx.AsyncClient) -> None:
    app.state.runtime.pause()
    response = await client.post("/api/v1/biographies/generate", json={"character": "Curie"})
    assert response.status_code == 202
    assert (response.json()["chapters"], response.json()["total_words"]) == (20, 51_000)


async def test_job_runs_to_completion_and_downloads(client: httpx.AsyncClient) -> None:
    job_id = await submit(client)
    body = await wait_for_status(client, job_id, {"completed", "failed"})
    assert body["status"] == "completed", body["error"]
    assert body["progress"] == {"chapters_completed": 3, "total_chapters": 3, "percentage": 100.0}
    assert 3000 <= body["words_written"] <= 3000 * 1.05 + 1000  # chapters + intro/epilogue
    assert body["tokens"]["output"] > 4000 and body["cost_usd"] > 0
    assert body["started_at"] and body["completed_at"]
    assert body["download_url"] == f"/api/v1/biographies/{job_id}/download"

    txt = await client.get(body["download_url"])
    assert txt.status_code == 200
    assert txt.headers["content-type"].startswith("text/plain")
    assert 'filename="Ada_Lovelace_' in txt.headers["content-disposition"]
    for heading in ("Introduction", "Chapter 1:", "Chapter 2:", "Chapter 3:", "Epilogue"):
        assert heading in txt.text
    assert txt.text.index("Chapter 1:") < txt.text.index("Chapter 3:") < txt.text.index("Epilogue")

    md = await client.get(body["download_url"], params={"format": "md"})
    assert md.headers["content-type"].startswith("text/markdown")
    assert md.text.startswith("# Ada Lovelace: A Biography") and md.text.count("\n## ") == 5

    docx = await client.get(body["download_url"], params={"format": "docx"})
    assert docx.headers["content-disposition"].endswith('.docx"')
    paragraphs = [p.text for p in Document(io.BytesIO(docx.content)).paragraphs]
    assert "Epilogue" in paragraphs


async def test_unfinished_download_is_400_with_reason(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    app.state.runtime.pause()
    job_id = await submit(client)
    response = await client.get(f"/api/v1/biographies/{job_id}/download")
    assert response.status_code == 400
    assert "pending" in response.json()["detail"]


@pytest.mark.parametrize("suffix", ["status", "download", "cancel"])
async def test_unknown_job_is_404(client: httpx.AsyncClient, suffix: str) -> None:
    method = "POST" if suffix == "cancel" else "GET"
    response = await client.request(method, f"/api/v1/biographies/{'0' * 32}/{suffix}")
    assert response.status_code == 404


async def test_list_is_newest_first_paginated_and_filtered(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    app.state.runtime.pause()
    ids = [await submit(client, {**SMALL, "character": f"Person {i}"}) for i in range(5)]
    await client.post(f"/api/v1/biographies/{ids[1]}/cancel")
    page = (await client.get("/api/v1/biographies", params={"page_size": 2})).json()
    assert [item["job_id"] for item in page["items"]] == [ids[4], ids[3]]
    assert (page["total"], page["pages"]) == (5, 3)
    last = (await client.get("/api/v1/biographies", params={"page_size": 2, "page": 3})).json()
    assert [item["job_id"] for item in last["items"]] == [ids[0]]
    cancelled = (await client.get("/api/v1/biographies", params={"status": "cancelled"})).json()
    assert [item["job_id"] for item in cancelled["items"]] == [ids[1]]


async def test_cancel_pending_then_conflict(app: FastAPI, client: httpx.AsyncClient) -> None:
    app.state.runtime.pause()
    job_id = await submit(client)
    response = await client.post(f"/api/v1/biographies/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert (await client.post(f"/api/v1/biographies/{job_id}/cancel")).status_code == 409
    app.state.runtime.resume()
    body = await wait_for_status(client, job_id, {"cancelled"})
    assert body["completed_at"] is not None


class RecordingHooks(Hooks):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.run_contexts: list[dict[str, str]] = []

    def job_submitted(self, job_id: str) -> dict[str, str]:
        self.events.append(("submitted", job_id))
        return {"traceparent": f"00-{job_id}-01"}

    def job_rejected(self, reason: str) -> None:
        self.events.append(("rejected", reason))

    @contextmanager
    def job_run(self, job: JobInfo) -> Iterator[None]:
        self.run_contexts.append(job.trace_context)
        yield

    def job_finished(self, job: JobInfo, outcome: str, duration_s: float) -> None:
        self.events.append(("finished", outcome))
        assert duration_s >= 0

    @contextmanager
    def chapter_run(self, job: JobInfo, index: int, kind: str) -> Iterator[None]:
        self.events.append(("chapter_run", kind))
        yield

    def chapter_done(self, outcome: ChapterOutcome) -> None:
        self.events.append(("chapter_done", outcome.kind))


async def test_hooks_see_every_documented_point(tmp_path: Path) -> None:
    hooks = RecordingHooks()
    settings = fast_settings(tmp_path, rate_limit="2/minute")
    async with running_app(settings, hooks) as (app, client):
        job_id = await submit(client)
        await wait_for_status(client, job_id, {"completed"})
        assert (await client.post("/api/v1/biographies/generate", json={})).status_code == 422
        app.state.runtime.pause()
        cancelled = await submit(client)
        await client.post(f"/api/v1/biographies/{cancelled}/cancel")
        limited = await client.post("/api/v1/biographies/generate", json=SMALL)
        assert limited.status_code == 429
    assert hooks.run_contexts == [{"traceparent": f"00-{job_id}-01"}]
    assert ("rejected", "invalid") in hooks.events and ("rejected", "rate_limited") in hooks.events
    assert hooks.events.count(("finished", "completed")) == 1
    assert hooks.events.count(("finished", "cancelled")) == 1
    assert hooks.events.count(("chapter_done", "chapter")) == 3
    assert ("chapter_run", "outline") in hooks.events
    assert ("chapter_done", "introduction") in hooks.events
    assert ("chapter_done", "epilogue") in hooks.events


async def test_cached_reads_show_this_process_writes_at_once(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """List pages and job statuses are cached, but never past a write made by this process."""
    app.state.runtime.pause()
    first = await submit(client)
    listed = (await client.get("/api/v1/biographies?page_size=5")).json()
    assert [i["job_id"] for i in listed["items"]] == [first]
    assert (await client.get(f"/api/v1/biographies/{first}/status")).json()["status"] == "pending"
    second = await submit(client)
    listed = (await client.get("/api/v1/biographies?page_size=5")).json()
    assert [i["job_id"] for i in listed["items"]] == [second, first] and listed["total"] == 2
    assert (await client.post(f"/api/v1/biographies/{first}/cancel")).status_code == 200
    status = await client.get(f"/api/v1/biographies/{first}/status")
    assert status.json()["status"] == "cancelled"
    assert status.headers["content-type"] == "application/json"
    listed = (await client.get("/api/v1/biographies?status=cancelled")).json()
    assert [i["job_id"] for i in listed["items"]] == [first]
