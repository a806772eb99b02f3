"""Books survive a provider outage: 8 books written while the model answers 503 (or 429 with a
Retry-After past the client's cap) to everything, all completed once it is back, none failed.

Time is compressed about 60x (a 3-minute outage is 3 s; hand-back backoffs, the breaker's open
window and the Retry-After cap scaled alike); the code path is the production one: the embedded
simulated model over real HTTP, the client, the breaker, the runtime's hand-backs, the store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookgen.service.hooks import Hooks, LLMCall
from bookgen.service.settings import Settings
from bookgen.service.store import Store
from bookgen.service.worker import SectionWorker
from service_helpers import (
    LocalPublisher,
    Pool,
    fast_settings,
    running_app,
    submit_book,
    tier_settings,
    wait_for_job,
)

BOOKS = 8
CHAPTERS = 2
BOOK = {"character": "Ada Lovelace", "chapters": CHAPTERS, "total_words": 1000}
OUTAGE_S = 3.0  # stands for 3 minutes
SIM = {"tokens_per_second": 4000.0, "time_to_first_token_s": 0.0, "jitter": 0.0}
# The production defaults divided by ~60 (hand-backs 5 s..120 s, breaker 10 s, cap 60 s).
COMPRESSED: dict[str, object] = {
    "sim": SIM,
    "llm_max_retries": 2,
    "llm_handback_base_s": 0.1,
    "llm_handback_max_s": 2.0,
    "llm_breaker_open_s": 0.2,
    "llm_retry_after_max_s": 1.0,
    "job_concurrency": BOOKS,
}
OUTAGES = {
    "503": ({"error_rate": 1.0, "error_status": 503}, {"error_rate": 0.0}),
    # Retry-After: 120 s, compressed to 3 s: past the (compressed) 1 s cap, so each call gives
    # up at once and the book waits out the provider's time with its slot free.
    "429-retry-after": ({"rate_limit_rate": 1.0, "retry_after_s": 3.0}, {"rate_limit_rate": 0.0}),
}


class Calls(Hooks):
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.finished: list[str] = []
        self.breaker: list[str] = []

    @contextmanager
    def llm_call(self, call: LLMCall) -> Iterator[LLMCall]:
        try:
            yield call
        finally:
            if call.error_type:
                self.errors.append(call.error_type)

    def job_finished(self, job: Any, outcome: str, duration_s: float) -> None:
        self.finished.append(outcome)

    def llm_breaker(self, state: str) -> None:
        self.breaker.append(state)


def outage_settings(tmp_path: Path, **extra: object) -> Settings:
    return fast_settings(tmp_path, **{**COMPRESSED, **extra})


@pytest.mark.parametrize("kind", sorted(OUTAGES))
async def test_eight_books_outlive_an_outage_in_process(tmp_path: Path, kind: str) -> None:
    down, up = OUTAGES[kind]
    hooks = Calls()
    async with running_app(outage_settings(tmp_path), hooks) as (app, client):
        admin = app.state.sim.base_url.removesuffix("/v1") + "/admin/config"
        async with httpx.AsyncClient() as sim:
            assert (await sim.patch(admin, json=down)).status_code == 200
            ids = [
                (await client.post("/api/v1/biographies/generate", json=BOOK)).json()["job_id"]
                for _ in range(BOOKS)
            ]
            await asyncio.sleep(OUTAGE_S)
            during = [await status(client, job_id) for job_id in ids]
            assert (await sim.patch(admin, json=up)).status_code == 200
        final = [await until_finished(client, job_id) for job_id in ids]
        store: Store = app.state.store
        sections = [len(await store.sections(job_id)) for job_id in ids]
        jobs = [await store.get_job(job_id) for job_id in ids]
    assert not any(body["status"] == "failed" for body in during)
    assert [body["status"] for body in final] == ["completed"] * BOOKS, [
        body["error"] for body in final
    ]
    assert all(body["error"] is None for body in final)  # the waiting note is gone
    assert sections == [CHAPTERS + 2] * BOOKS  # each section stored once
    assert hooks.finished == ["completed"] * BOOKS
    refused = "503" if kind == "503" else "429"
    assert hooks.errors.count(refused) >= BOOKS  # the outage did reach every book
    assert sum(job.llm_handbacks for job in jobs if job is not None) >= 1
    # The breaker opened during the outage (work stopped being taken) and closed after it.
    assert "open" in hooks.breaker and hooks.breaker[-1] == "closed"


async def status(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/biographies/{job_id}/status")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def until_finished(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        body = await status(client, job_id)
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, f"still {body['status']}: {body['error']}"
        await asyncio.sleep(0.1)


class WorkerCalls(Calls):
    pass


@pytest.mark.parametrize("kind", sorted(OUTAGES))
def test_eight_books_outlive_an_outage_on_the_worker_tier(tmp_path: Path, kind: str) -> None:
    down, up = OUTAGES[kind]
    hooks = WorkerCalls()
    publisher = LocalPublisher()
    settings = tier_settings(tmp_path, **COMPRESSED)
    worker = SectionWorker(settings, hooks, publisher, owner="worker-a")
    worker.start()
    pool = Pool(worker, publisher, threads=16)
    try:
        base_url = getattr(worker._llm, "base_url", "")
        admin = base_url.removesuffix("/v1") + "/admin/config"
        assert httpx.patch(admin, json=down).status_code == 200
        ids = [submit_book(worker, publisher, chapters=CHAPTERS) for _ in range(BOOKS)]
        time.sleep(OUTAGE_S)
        during = [
            wait_for_job(worker, job_id, {"pending", "in_progress", "completed", "failed"})
            for job_id in ids
        ]
        assert httpx.patch(admin, json=up).status_code == 200
        final = [wait_for_job(worker, j, {"completed", "failed"}, timeout_s=90) for j in ids]
    finally:
        pool.close()
        worker.close()
    assert not any(job.status == "failed" for job in during)
    assert [job.status for job in final] == ["completed"] * BOOKS, [job.error for job in final]
    assert hooks.finished == ["completed"] * BOOKS
    refused = "503" if kind == "503" else "429"
    assert hooks.errors.count(refused) >= BOOKS
    assert "handed_back" in pool.outcomes
    assert "open" in hooks.breaker and hooks.breaker[-1] == "closed"


async def test_books_complete_under_a_binding_tokens_per_minute_quota(tmp_path: Path) -> None:
    """A quota the books exceed: the model answers 429 with a short Retry-After (when its token
    bucket holds the request again) over and over. Each call waits those out, however many, so
    every book completes, later; no hand-back is even allowed here."""
    quota = {**SIM, "tokens_per_second": 2000.0, "tpm_limit": 6000}
    settings = fast_settings(tmp_path, sim=quota, llm_handback_max=0, job_concurrency=4)
    hooks = Calls()
    async with running_app(settings, hooks) as (_, client):
        ids = [
            (await client.post("/api/v1/biographies/generate", json=BOOK)).json()["job_id"]
            for _ in range(4)
        ]
        final = [await until_finished(client, job_id) for job_id in ids]
    assert [body["status"] for body in final] == ["completed"] * 4, [b["error"] for b in final]
    assert hooks.errors.count("429") > settings.llm_max_retries  # the quota did bind
