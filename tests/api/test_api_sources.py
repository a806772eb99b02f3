"""Source validation: offline structure, URL and domain checks; async accessibility checks."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from bookgen.service.routes import sources as sources_route
from service_helpers import fast_settings, running_app

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


async def test_accessibility_uses_real_requests(tmp_path: Path) -> None:
    async with running_app(fast_settings(tmp_path, sources_allow_private=True)) as (app, client):
        await _check_real_requests(app, client)


async def _check_real_requests(app: FastAPI, client: httpx.AsyncClient) -> None:
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


async def test_accessibility_never_probes_non_public_addresses(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """By default a client cannot make the service probe its own network."""
    urls = [
        f"http://127.0.0.1:{app.state.sim.port}/health",
        f"http://localhost:{app.state.sim.port}/health",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/",
        "http://[::1]:9/",
        "http://[::ffff:127.0.0.1]:9/",
    ]
    sources = [{"url": url, "title": f"internal {i}"} for i, url in enumerate(urls)]
    response = await client.post(VALIDATE, json={"sources": sources, "check_accessibility": True})
    assert response.status_code == 200
    for result in response.json()["results"]:
        assert result["accessible"] is None and result["status_code"] is None, result
        assert any("non-public address" in w for w in result["warnings"]), result


@pytest.mark.parametrize(
    ("host", "refused"),
    [
        ("127.0.0.1", True),
        ("10.0.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("::ffff:192.168.0.1", True),
        ("100.64.0.1", True),
        ("8.8.8.8", False),
        ("2001:4860:4860::8888", False),
    ],
)
async def test_non_public_addresses(host: str, refused: bool) -> None:
    _, refusal = await sources_route.check_host(host)
    assert (refusal is not None) is refused
