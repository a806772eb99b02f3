"""Garbage on every route: always a 4xx, never a 500, and no stored job is lost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from service_helpers import fast_settings, running_app

# One app for the whole module: these tests only read, or write jobs nobody runs.
pytestmark = pytest.mark.asyncio(loop_scope="module")

JOB = "/api/v1/biographies/{job_id}"
GARBAGE_BODIES: list[dict[str, object]] = [
    {"content": b"not json"},
    {"content": b"{"},
    {"content": b"[]"},
    {"content": b"null"},
    {"content": b"\xff\xfe\x00"},
    {"json": {"character": "\u0000"}},
    {"content": b'{"character": "\\ud800"}'},
    {"json": {"character": "x", "chapters": "many"}},
    {"json": {"character": "x", "chapters": 2.5}},
    {"json": {"character": "x", "total_words": 10**30}},
    {"json": {"character": "x", "temperature": "NaN"}},
    {"json": {"character": "x", "temperature": 3}},
    {"json": {"character": "x", "mode": "chaos"}},
    {"json": {"character": "x", "sources": "everything"}},
    {"json": {"character": "x", "sources": [{"url": 5}]}},
    {"json": {"character": ["x"]}},
    {"json": {"character": "x" * 201}},
    {"json": {"sources": [1, 2]}},
    {"json": {"sources": []}},
    {"json": {"sources": [{}] * 101}},
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    tmp: Path = tmp_path_factory.mktemp("bad_input")
    async with running_app(fast_settings(tmp, rate_limit="100000/minute")) as (app, client):
        app.state.runtime.pause()
        yield app, client


@pytest.fixture
def client(shared: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return shared[1]


@pytest.fixture
def app(shared: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return shared[0]


JOB_IDS = ["nope", "0" * 32, "x" * 5000, "%00", "..%2F..%2Fetc", "😀", "' OR 1=1 --"]


@pytest.mark.parametrize("path", ["/api/v1/biographies/generate", "/api/v1/sources/validate"])
@pytest.mark.parametrize("body", GARBAGE_BODIES)
async def test_garbage_bodies_are_4xx(
    client: httpx.AsyncClient, path: str, body: dict[str, object]
) -> None:
    headers = {"Content-Type": "application/json"}
    response = await client.post(path, headers=headers, **body)  # type: ignore[arg-type]
    if path.endswith("/validate") and response.status_code == 200:
        # A well-formed request whose items are bad: each item is reported, not the request.
        assert response.json()["invalid_sources"] == response.json()["total_sources"]
    else:
        assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize("job_id", JOB_IDS)
@pytest.mark.parametrize(
    ("method", "suffix", "params"),
    [
        ("GET", "/status", {}),
        ("GET", "/download", {}),
        ("GET", "/download", {"format": "exe"}),
        ("POST", "/cancel", {}),
    ],
)
async def test_garbage_job_ids_are_4xx(
    client: httpx.AsyncClient, job_id: str, method: str, suffix: str, params: dict[str, str]
) -> None:
    url = JOB.format(job_id=job_id) + suffix
    response = await client.request(method, url, params=params)
    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize(
    "params",
    [
        {"page": "0"},
        {"page": "-1"},
        {"page": "abc"},
        {"page_size": "1000"},
        {"page_size": "0"},
        {"status": "everything"},
        {"page": "99999999999999999999"},
    ],
)
async def test_garbage_list_queries_are_422(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    response = await client.get("/api/v1/biographies", params=params)
    assert response.status_code == 422


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/health"), ("PUT", "/api/v1/status"), ("GET", "/api/v1/biographies/generate")],
)
async def test_wrong_methods_are_405(client: httpx.AsyncClient, method: str, path: str) -> None:
    assert (await client.request(method, path)).status_code == 405


async def test_garbage_never_loses_a_stored_job(app: FastAPI, client: httpx.AsyncClient) -> None:
    before = (await client.get("/api/v1/biographies")).json()["total"]
    job = (
        await client.post(
            "/api/v1/biographies/generate", json={"character": "Kept", "total_words": 1000}
        )
    ).json()
    for body in GARBAGE_BODIES:
        await client.post("/api/v1/biographies/generate", **body)  # type: ignore[arg-type]
    status = await client.get(JOB.format(job_id=job["job_id"]) + "/status")
    assert status.json()["status"] == "pending"
    listing = (await client.get("/api/v1/biographies")).json()
    assert listing["total"] == before + 1
