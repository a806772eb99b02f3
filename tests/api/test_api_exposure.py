"""What the API shows: debug routes only with the token, our words for errors, nosniff."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from bookgen.service.routes import debug
from bookgen.stack.faults import ApiFaults, debug_headers
from bookgen.stack.supervisor import Stack
from service_helpers import fast_settings, running_app, wait_for_status

SECRET = "postgresql://bookgen:hunter2@10.9.8.7/prod"


@pytest.mark.parametrize("token", ["s3cret-token", None])
async def test_debug_routes_need_the_token(tmp_path: Path, token: str | None) -> None:
    settings = fast_settings(tmp_path, debug_routes=True, debug_token=token)
    async with running_app(settings) as (_, client):
        for headers in ({}, {debug.TOKEN_HEADER: "wrong"}, {debug.TOKEN_HEADER: ""}):
            for method, path in (("GET", "/debug/faults"), ("GET", "/debug/fail")):
                response = await client.request(method, path, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert debug.TOKEN_HEADER in response.json()["detail"]
        refused = await client.put(
            "/debug/faults", json={"error_ratio": 1.0}, headers={debug.TOKEN_HEADER: "wrong"}
        )
        assert refused.status_code == 401
        assert (await client.get("/api/v1/status")).status_code == 200  # nothing was switched
        if token is not None:
            good = {debug.TOKEN_HEADER: token}
            report = await client.get("/debug/faults", headers=good)
            assert report.status_code == 200 and report.json()["error_ratio"] == 0.0
            assert (await client.get("/debug/fail", headers=good)).status_code == 500
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert not [p for p in paths if p.startswith("/debug")]


async def test_ready_names_a_failed_check_without_the_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running_app(fast_settings(tmp_path)) as (app, client):

        async def broken() -> bool:
            raise RuntimeError(f"could not connect to {SECRET}")

        monkeypatch.setattr(app.state.store, "ping", broken)
        response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["store"] == "error"
    assert "hunter2" not in response.text and "RuntimeError" not in response.text


async def test_a_malformed_source_url_is_described_in_our_words(
    client: httpx.AsyncClient,
) -> None:
    sources = [{"url": "http://[::1", "title": "a"}, {"url": "http://h:99999999/", "title": "b"}]
    response = await client.post("/api/v1/sources/validate", json={"sources": sources})
    assert response.status_code == 200
    for result in response.json()["results"]:
        assert result["errors"] == ["url is malformed: its host or port cannot be parsed"]


async def test_the_pause_refusal_of_a_worker_tier_is_our_sentence(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, debug_routes=True, debug_token="t")
    async with running_app(settings) as (app, client):

        def cannot() -> None:
            raise NotImplementedError(f"internal: {SECRET}")

        app.state.runtime.pause = cannot
        response = await client.post("/debug/pause", headers={debug.TOKEN_HEADER: "t"})
    assert response.status_code == 409
    assert "hunter2" not in response.text and "SIGSTOP" in response.json()["detail"]


async def test_every_response_and_every_download_says_nosniff(tmp_path: Path) -> None:
    async with running_app(fast_settings(tmp_path)) as (_, client):
        body = {"character": "Ada Lovelace", "chapters": 1, "total_words": 1000}
        job = (await client.post("/api/v1/biographies/generate", json=body)).json()["job_id"]
        await wait_for_status(client, job, {"completed"})
        for fmt in ("txt", "md", "docx"):
            response = await client.get(f"/api/v1/biographies/{job}/download?format={fmt}")
            assert response.status_code == 200
            assert response.headers["x-content-type-options"] == "nosniff"
        for answer in (
            await client.get("/health"),
            await client.get("/api/v1/biographies/nope/download"),
            await client.post("/api/v1/biographies/generate", json={}),
        ):
            assert answer.headers["x-content-type-options"] == "nosniff", answer


def test_a_stack_with_faults_makes_a_debug_token_and_its_clients_send_it(tmp_path: Path) -> None:
    with_faults = Stack(tmp_path / "a", faults=True)
    assert with_faults.debug_token and len(with_faults.debug_token) >= 32
    assert Stack(tmp_path / "b", faults=True).debug_token != with_faults.debug_token
    assert Stack(tmp_path / "c").debug_token is None
    chosen = Stack(tmp_path / "d", faults=True, env={"BOOKGEN_DEBUG_TOKEN": "mine"})
    assert chosen.debug_token == "mine"
    api = ApiFaults("http://127.0.0.1:1", 1, token=with_faults.debug_token)
    assert api.headers == {debug.TOKEN_HEADER: with_faults.debug_token}
    assert debug_headers(None) == {}
