"""Each fault switch of the debug router moves the signal it targets, read from /metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from prometheus_client.parser import text_string_to_metric_families

from bookgen.asgi import build_app
from bookgen.service.routes import debug
from bookgen.service.settings import Settings, SimSettings

MIB = 1024 * 1024
TOKEN = "drill-token"
AUTH = {debug.TOKEN_HEADER: TOKEN}


def settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite+aiosqlite:///{tmp_path / 'bookgen.db'}",
        "llm_base_url": None,
        "sim": SimSettings(tokens_per_second=4000.0, time_to_first_token_s=0.0, jitter=0.0),
        "poll_interval_s": 0.05,
        "debug_routes": True,
        "debug_token": TOKEN,
        "worker_index": 0,
        "metrics_port_base": None,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    application = build_app(settings(tmp_path))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=AUTH
    ) as http:
        yield http


async def sample(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    text = (await client.get("/metrics")).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def test_debug_routes_are_absent_unless_enabled(tmp_path: Path) -> None:
    application = build_app(settings(tmp_path, debug_routes=False))
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.get("/debug/faults")).status_code == 404
        assert (await http.get("/debug/fail")).status_code == 404


async def test_fail_route_answers_500_and_counts_as_a_5xx(client: httpx.AsyncClient) -> None:
    before = await sample(client, "bookgen_http_requests_total", status="500")
    for _ in range(3):
        assert (await client.get("/debug/fail")).status_code == 500
    assert await sample(client, "bookgen_http_requests_total", status="500") == before + 3


async def test_a_request_for_another_worker_is_refused_without_acting(
    client: httpx.AsyncClient,
) -> None:
    response = await client.put("/debug/faults", json={"worker": 1, "error_ratio": 1.0})
    assert response.status_code == 421
    assert response.json()["detail"] == {"worker": 0}
    assert (await client.get("/debug/faults")).json()["error_ratio"] == 0.0


async def test_balloon_raises_resident_memory_and_release_lowers_it(
    client: httpx.AsyncClient,
) -> None:
    rss = "bookgen_process_resident_memory_bytes"
    before = await sample(client, rss)
    report = (await client.post("/debug/balloon", json={"mib": 256, "worker": 0})).json()
    assert report["balloon_mib"] == 256
    inflated = await sample(client, rss)
    assert inflated - before > 200 * MIB
    assert (await client.delete("/debug/balloon")).json()["balloon_mib"] == 0
    assert inflated - await sample(client, rss) > 200 * MIB


async def test_pause_and_resume_switch_the_job_runtime(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    assert (await client.post("/debug/pause", json={})).json()["paused"] is True
    assert app.state.runtime.snapshot().paused is True
    assert (await client.post("/debug/resume")).json()["paused"] is False
    assert app.state.runtime.snapshot().paused is False


async def test_paused_workers_leave_a_submitted_job_queued(client: httpx.AsyncClient) -> None:
    await client.post("/debug/pause")
    body = {"character": "Ada Lovelace", "chapters": 1, "total_words": 1000}
    job = (await client.post("/api/v1/biographies/generate", json=body)).json()["job_id"]
    await asyncio.sleep(0.5)
    assert (await client.get(f"/api/v1/biographies/{job}/status")).json()["status"] == "pending"
    await client.post("/debug/resume")


async def test_added_latency_slows_api_routes(client: httpx.AsyncClient) -> None:
    await client.put("/debug/faults", json={"latency_s": 0.3})
    started = time.monotonic()
    assert (await client.get("/health")).status_code == 200
    assert time.monotonic() - started >= 0.3
    bucket = await sample(client, "bookgen_http_request_duration_seconds_bucket", le="0.2")
    count = await sample(client, "bookgen_http_request_duration_seconds_count")
    assert count - bucket >= 1  # at least one request slower than the 200 ms bound
    await client.put("/debug/faults", json={"latency_s": 0.0})


async def test_error_ratio_fails_api_routes(client: httpx.AsyncClient) -> None:
    await client.put("/debug/faults", json={"error_ratio": 1.0})
    assert (await client.get("/api/v1/status")).status_code == 500
    await client.put("/debug/faults", json={"error_ratio": 0.0})
    assert (await client.get("/api/v1/status")).status_code == 200


async def test_the_fault_dependency_adds_latency_and_failures_where_attached() -> None:
    api = APIRouter()

    @api.get("/thing")
    async def thing() -> dict[str, str]:
        return {"ok": "yes"}

    application = FastAPI()
    application.state.settings = settings(Path("."))
    application.include_router(api, dependencies=[Depends(debug.injected_faults)])
    application.include_router(debug.router)
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=AUTH) as http:
        await http.put("/debug/faults", json={"latency_s": 0.25})
        started = time.monotonic()
        assert (await http.get("/thing")).status_code == 200
        assert time.monotonic() - started >= 0.25
        await http.put("/debug/faults", json={"latency_s": 0.0, "error_ratio": 1.0})
        assert (await http.get("/thing")).status_code == 500
        assert (await http.get("/debug/faults")).status_code == 200  # the switches stay usable
        await http.put("/debug/faults", json={"error_ratio": 0.0})
        assert (await http.get("/thing")).status_code == 200
