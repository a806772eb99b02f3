"""Source validation: offline structure, URL and domain checks; async accessibility checks."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

VALIDATE = "/api/v1/sources/validate"


async def test_offline_checks(client: httpx.AsyncClient) -> None:
    sources = [
        {"url": "https://en.wikipedia.org/wiki/Ada_Lovelace", "title": "Ada", "author": "W"},
        {"url": "https://example.com/ada", "title": "Blog", "source_type": "web"},
        {"url": "ftp://example.com/x", "title": "Bad scheme"},
        {"url": "https://exa mple.com", "title": "Space"},
        {"title": ""},
        {"title": "A book", "source_type": "book", "author": "Toole"},
        {"url": "http://[::1", "title": "Broken"},
    ]
    response = await client.post(VALIDATE, json={"sources": sources})
    assert response.status_code == 200
    body = response.json()
    assert (body["total_sources"], body["valid_sources"], body["invalid_sources"]) == (7, 3, 4)
    results = body["results"]
    assert results[0]["valid"] and results[0]["trusted_domain"]
    assert results[1]["valid"] and not results[1]["trusted_domain"]
    assert "trusted" in results[1]["warnings"][0]
    assert not results[2]["valid"] and "http" in results[2]["errors"][0]
    assert not results[4]["valid"] and results[4]["errors"][0].startswith("title")
    assert results[5]["valid"]
    assert body["summary"]["trusted"] == 1
    assert body["summary"]["checked_accessibility"] is False
    assert all(r["accessible"] is None for r in results)


async def test_accessibility_uses_real_requests(app: FastAPI, client: httpx.AsyncClient) -> None:
    base = f"http://127.0.0.1:{app.state.sim.port}"
    sources = [
        {"url": f"{base}/health", "title": "up"},
        {"url": f"{base}/no-such-page", "title": "missing"},
        {"url": "http://127.0.0.1:9/closed", "title": "closed port"},
    ]
    response = await client.post(VALIDATE, json={"sources": sources, "check_accessibility": True})
    assert response.status_code == 200
    results = response.json()["results"]
    # /health answers GET only: the HEAD gets 405 and the check falls back to GET.
    assert results[0]["accessible"] is True and results[0]["status_code"] == 200
    assert results[1]["accessible"] is False and results[1]["status_code"] == 404
    assert results[2]["accessible"] is False and results[2]["status_code"] is None
    assert response.json()["summary"]["inaccessible"] == 2
