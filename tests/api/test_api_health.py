"""Liveness, readiness and the service status route."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from bookgen.service.routes import health
from bookgen.service.settings import Settings
from service_helpers import fast_settings, running_app


async def test_health_is_cheap_and_shaped_like_v1(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert {"timestamp", "version"} <= body.keys()


async def test_ready_when_store_and_model_answer(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json()["checks"] == {"store": "ok", "llm": "ok"}


async def test_not_ready_names_the_llm_when_it_is_down(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, llm_base_url="http://127.0.0.1:9/v1")
    async with running_app(settings) as (_, client):
        response = await client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["llm"]
    assert body["checks"]["store"] == "ok"


async def test_status_reports_configuration_and_live_figures(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/api/v1/status")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "operational" and body["api_version"] == "v1"
    assert body["configuration"]["chapters"] == settings.chapters
    assert body["configuration"]["total_words"] == settings.total_words
    assert body["configuration"]["model"] == settings.model
    assert body["queue"] == {"pending": 0, "capacity": settings.max_queue}
    assert body["workers"]["job_slots"] == settings.job_concurrency


async def test_openapi_docs_are_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 200
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/api/v1/biographies/generate" in paths
    assert "/api/v1/sources/validate" in paths


async def test_a_stale_verdict_is_served_while_one_check_refreshes_it(tmp_path: Path) -> None:
    async with running_app(fast_settings(tmp_path)) as (app, client):
        assert (await client.get("/ready")).status_code == 200
        release = asyncio.Event()
        calls = 0

        async def slow_and_down() -> bool:
            nonlocal calls
            calls += 1
            await release.wait()
            return False

        app.state.store.ping = slow_and_down
        # Past the fresh period, inside the stale one: the old verdict, at once, and one check.
        stamp, checks = app.state.ready_cache
        app.state.ready_cache = (stamp - health.READY_CACHE_S - 0.1, checks)
        answers = await asyncio.gather(*(client.get("/ready") for _ in range(5)))
        assert [a.status_code for a in answers] == [200] * 5
        await asyncio.sleep(0)
        assert calls == 1
        release.set()
        await app.state.ready_flight
        down = await client.get("/ready")
        assert down.status_code == 503 and down.json()["failed"] == ["store"]
        # Older than the stale period, a verdict is never given: the caller waits for a check.
        stamp, checks = app.state.ready_cache
        app.state.ready_cache = (stamp - health.READY_STALE_S - 0.1, {"store": "ok", "llm": "ok"})
        assert (await client.get("/ready")).status_code == 503
        assert calls == 2
