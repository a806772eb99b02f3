"""`bookgen serve` as a real process: a job end to end, and a SIGKILL in the middle of one."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from docx import Document
from realserver_helpers import alive, children_of

from bookgen.service.store import Store
from conftest import ServerFactory

pytestmark = pytest.mark.realserver

FIVE = {"character": "Ada Lovelace", "chapters": 5, "total_words": 5000}


def poll(url: str, job_id: str, statuses: set[str], timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, Any] = httpx.get(f"{url}/api/v1/biographies/{job_id}/status").json()
        if body["status"] in statuses:
            return body
        assert time.monotonic() < deadline, f"still {body['status']} after {timeout_s} s"
        time.sleep(0.1)


def test_five_chapter_job_create_status_download(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(
        f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}", BOOKGEN_SIM__TOKENS_PER_SECOND=600
    )
    created = httpx.post(f"{server.url}/api/v1/biographies/generate", json=FIVE)
    assert created.status_code == 202
    job_id = created.json()["job_id"]
    running = poll(server.url, job_id, {"in_progress", "completed"}, 20)
    assert running["started_at"] is not None
    done = poll(server.url, job_id, {"completed", "failed"}, 60)
    assert done["status"] == "completed", done["error"]
    assert done["progress"]["chapters_completed"] == 5
    text = httpx.get(f"{server.url}{done['download_url']}")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert all(f"Chapter {n}:" in text.text for n in range(1, 6))
    docx = httpx.get(f"{server.url}{done['download_url']}", params={"format": "docx"})
    headings = [p.text for p in Document(io.BytesIO(docx.content)).paragraphs]
    assert "Epilogue" in headings
    assert server.stop() == 0


async def stored(database_url: str, job_id: str) -> tuple[Any, list[Any]]:
    store = Store.from_url(database_url)
    try:
        return await store.get_job(job_id), await store.sections(job_id)
    finally:
        await store.close()


def test_sigkill_mid_job_then_restart_completes_every_chapter_once(
    serve: ServerFactory, database_url: str
) -> None:
    slow = {"BOOKGEN_SIM__TOKENS_PER_SECOND": 700, "BOOKGEN_CHAPTER_CONCURRENCY": 2}
    server = serve(database_url, **slow)
    job_id = httpx.post(f"{server.url}/api/v1/biographies/generate", json=FIVE).json()["job_id"]
    deadline = time.monotonic() + 60
    while True:
        job, sections = asyncio.run(stored(database_url, job_id))
        if len(sections) >= 2:
            break
        assert time.monotonic() < deadline, "no section stored within 60 s"
        time.sleep(0.2)
    server.kill()
    job, before = asyncio.run(stored(database_url, job_id))
    assert job.status == "in_progress" and 2 <= len(before) < 7
    texts = {s.index: s.text for s in before}

    restarted = serve(database_url, **slow)
    done = poll(restarted.url, job_id, {"completed", "failed"}, 90)
    assert done["status"] == "completed", done["error"]
    job, after = asyncio.run(stored(database_url, job_id))
    assert [s.index for s in after] == list(range(7))  # intro, 5 chapters, epilogue; once each
    assert all(s.text == texts[s.index] for s in after if s.index in texts)  # nothing rewritten
    assert job.runs == 2
    assert job.chapters_completed == 5
    assert job.words_written == sum(s.words for s in after)  # counted once
    assert restarted.stop() == 0


def test_workers_share_the_port_and_stop_cleanly(serve: ServerFactory, tmp_path: Path) -> None:
    server = serve(f"sqlite+aiosqlite:///{tmp_path / 'w.db'}", workers=2)
    assert server.process is not None
    workers = children_of(server.process.pid)
    assert len(workers) == 2
    seen = {
        httpx.get(f"{server.url}/api/v1/status", headers={"Connection": "close"}).json()["workers"][
            "worker_index"
        ]
        for _ in range(40)
    }
    assert seen == {0, 1}
    os.killpg(server.process.pid, signal.SIGINT)  # Ctrl+C: the whole process group
    assert server.process.wait(timeout=30) == 0
    assert not any(alive(pid) for pid in workers)
