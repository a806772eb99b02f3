"""Back-pressure and limits: full queue, per-client rate, body size; all 4xx with reasons."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError

from bookgen.service.auth import create_key
from bookgen.service.store import Store
from service_helpers import fast_settings, running_app

GENERATE = "/api/v1/biographies/generate"
SMALL = {"character": "Ada Lovelace", "chapters": 2, "total_words": 1000}


async def test_full_queue_is_429_with_retry_after_and_loses_nothing(tmp_path: Path) -> None:
    async with running_app(fast_settings(tmp_path, max_queue=3)) as (app, client):
        app.state.runtime.pause()
        answers = [await client.post(GENERATE, json=SMALL) for _ in range(5)]
        assert [a.status_code for a in answers] == [202, 202, 202, 429, 429]
        assert int(answers[3].headers["Retry-After"]) > 0
        assert "queue is full" in answers[3].json()["detail"]
        store: Store = app.state.store
        assert await store.count_pending() == 3


async def test_rate_limit_is_per_client_with_retry_after(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, rate_limit="2/minute", auth="on")
    async with running_app(settings) as (app, client):
        app.state.runtime.pause()
        alice = {"Authorization": "Bearer " + (await create_key(app.state.store, "alice"))[0]}
        bob = {"Authorization": "Bearer " + (await create_key(app.state.store, "bob"))[0]}
        codes = [
            (await client.post(GENERATE, json=SMALL, headers=alice)).status_code for _ in "abc"
        ]
        assert codes == [202, 202, 429]
        limited = await client.post(GENERATE, json=SMALL, headers=alice)
        assert limited.status_code == 429
        assert 0 < int(limited.headers["Retry-After"]) <= 60
        assert (await client.post(GENERATE, json=SMALL, headers=bob)).status_code == 202


REDIS = "async+redis://127.0.0.1:6379/0"


async def _redis_or_skip() -> None:
    import redis.asyncio

    client = redis.asyncio.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2)
    try:
        await client.ping()
    except redis.exceptions.RedisError as error:
        pytest.skip(f"Redis is not reachable at 127.0.0.1:6379 ({error!r})")
    finally:
        await client.aclose()


async def test_two_workers_share_one_rate_limit_through_redis(tmp_path: Path) -> None:
    """Two apps (as two `serve` workers) with one Redis-backed limit: 3 submissions in all."""
    await _redis_or_skip()
    settings = fast_settings(tmp_path, rate_limit="3/minute", rate_limit_storage=REDIS, auth="on")
    async with running_app(settings) as (one, first), running_app(settings) as (two, second):
        one.state.runtime.pause()
        two.state.runtime.pause()
        # A fresh principal: Redis outlives runs.
        key, _ = await create_key(one.state.store, f"carol-{uuid.uuid4().hex}")
        carol = {"Authorization": f"Bearer {key}"}
        codes = []
        for client in (first, second, first, second, first):
            codes.append((await client.post(GENERATE, json=SMALL, headers=carol)).status_code)
    assert codes == [202, 202, 202, 429, 429]


async def test_rate_limit_storage_outage_lets_submissions_through(tmp_path: Path) -> None:
    down = "async+redis://127.0.0.1:9/0"  # nothing listens on the discard port
    settings = fast_settings(tmp_path, rate_limit="1/minute", rate_limit_storage=down)
    async with running_app(settings) as (app, client):
        app.state.runtime.pause()
        codes = [(await client.post(GENERATE, json=SMALL)).status_code for _ in range(3)]
    assert codes == [202, 202, 202]


async def test_validation_errors_name_field_and_reason(client: httpx.AsyncClient) -> None:
    response = await client.post(GENERATE, json={"character": "", "chapters": 99})
    assert response.status_code == 422
    fields = {e["field"]: e["msg"] for e in response.json()["detail"]}
    assert "character" in fields and "chapters" in fields
    assert "50" in fields["chapters"]


async def test_manual_mode_needs_sources(client: httpx.AsyncClient) -> None:
    response = await client.post(GENERATE, json={**SMALL, "mode": "manual"})
    assert response.status_code == 422
    assert "source" in response.json()["detail"][0]["msg"]
    ok = await client.post(
        GENERATE, json={**SMALL, "mode": "manual", "sources": [{"title": "Notes", "url": None}]}
    )
    assert ok.status_code == 202


async def test_oversized_body_is_413_by_header(tmp_path: Path) -> None:
    async with running_app(fast_settings(tmp_path, max_body_bytes=2048)) as (_, client):
        response = await client.post(GENERATE, json={**SMALL, "character": "x" * 5000})
        assert response.status_code == 413
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_oversized_streamed_body_is_413(tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    async with running_app(fast_settings(tmp_path, max_body_bytes=2048)) as (_, client):
        response = await client.post(
            GENERATE, content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 413
        assert response.headers["x-content-type-options"] == "nosniff"
        small = await client.post(GENERATE, json=SMALL)
        assert small.status_code == 202


async def test_store_outage_is_503_with_retry_after(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(job_id: str) -> None:
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(app.state.store, "get_job", broken)
    response = await client.get(f"/api/v1/biographies/{'0' * 32}/status")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "SELECT" not in response.text
