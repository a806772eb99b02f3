"""The provider fails closed: the simulated model only when asked for (or nothing is configured),
said at start, in /api/v1/status and in a metric; a key alone means OpenRouter."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from bookgen.cli.serve import serve
from bookgen.instrumentation.hooks import TelemetryHooks
from bookgen.instrumentation.metrics import Metrics
from bookgen.service import app as app_module
from bookgen.service.hooks import Hooks
from bookgen.service.llm.client import LLMClient
from bookgen.service.llm.errors import LLMConfigError
from bookgen.service.llm.provider import OPENROUTER_BASE_URL
from bookgen.service.llm.sim import create_sim_app
from bookgen.service.settings import Settings, get_settings
from service_helpers import FAST_SIM, fast_settings, running_app, wait_for_status

BOOK = {"character": "Ada Lovelace", "chapters": 2, "total_words": 1000}
KEY = "sk-or-v1-test-not-a-real-key"


class Recorder(httpx.AsyncBaseTransport):
    """Answers as the simulated model would, and records where each request went."""

    def __init__(self) -> None:
        self.inner = httpx.ASGITransport(app=create_sim_app(FAST_SIM, seed=1))
        self.urls: list[str] = []
        self.auth: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        self.auth.append(request.headers.get("authorization", ""))
        # OpenRouter's /api/v1/... is the simulated model's /v1/...
        path = request.url.path.removeprefix("/api")
        forwarded = httpx.Request(
            request.method,
            request.url.copy_with(path=path),
            headers=request.headers,
            content=await request.aread(),
        )
        return await self.inner.handle_async_request(forwarded)


async def test_an_api_key_alone_targets_openrouter_and_the_sim_never_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("BOOKGEN_LLM_API_KEY", KEY)
    recorder = Recorder()
    built: list[str] = []

    def client_with_mock(settings: Settings, hooks: Hooks, **kwargs: Any) -> LLMClient:
        built.append(kwargs["base_url"])
        return LLMClient(settings, hooks, transport=recorder, **kwargs)

    async def no_sim(self: object) -> str:
        raise AssertionError("the simulated model must not start")

    monkeypatch.setattr(app_module, "LLMClient", client_with_mock)
    monkeypatch.setattr(app_module.EmbeddedSim, "start", no_sim)
    settings = fast_settings(tmp_path)
    assert settings.llm_api_key is not None  # read from the environment
    caplog.set_level(logging.INFO, logger="bookgen.llm")
    async with running_app(settings) as (app, client):
        assert app.state.sim is None
        status = (await client.get("/api/v1/status")).json()
        assert status["provider"] == {"name": "openrouter", "simulated": False}
        job_id = (await client.post("/api/v1/biographies/generate", json=BOOK)).json()["job_id"]
        body = await wait_for_status(client, job_id, {"completed", "failed"})
    assert body["status"] == "completed", body["error"]
    assert built == [OPENROUTER_BASE_URL]
    assert recorder.urls and all(
        url == f"{OPENROUTER_BASE_URL}/chat/completions" for url in recorder.urls
    )
    assert set(recorder.auth) == {f"Bearer {KEY}"}
    assert "SIMULATED" not in caplog.text and KEY not in caplog.text


async def test_with_no_provider_setting_the_sim_runs_and_says_so_everywhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    hooks = TelemetryHooks(Metrics(registry), trace.NoOpTracer(), models=["bookgen-sim"])
    caplog.set_level(logging.INFO, logger="bookgen.llm")
    async with running_app(fast_settings(tmp_path), hooks) as (app, client):
        assert app.state.sim is not None
        status = (await client.get("/api/v1/status")).json()
    assert status["provider"] == {"name": "bookgen-sim", "simulated": True}
    assert "SIMULATED model (no provider configured" in caplog.text
    labels = {"provider": "bookgen-sim", "simulated": "true"}
    assert registry.get_sample_value("bookgen_llm_provider_info", labels) == 1.0


async def test_a_contradictory_setting_stops_the_app_before_it_starts(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path, llm_sim=True, llm_api_key=KEY)
    with pytest.raises(LLMConfigError, match="contradicts BOOKGEN_LLM_API_KEY"):
        async with running_app(settings):
            pass


@pytest.mark.parametrize(
    ("env", "fix"),
    [
        ({"BOOKGEN_LLM_SIM": "false"}, "set BOOKGEN_LLM_API_KEY (OpenRouter) or"),
        ({"BOOKGEN_LLM_BASE_URL": "https://openrouter.ai/api/v1"}, "set the key"),
        ({"BOOKGEN_LLM_API_KEY": KEY, "BOOKGEN_LLM_SIM": "true"}, "unset the key"),
    ],
)
def test_serve_refuses_to_start_with_one_line_naming_the_fix(
    env: dict[str, str], fix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("BOOKGEN_LLM_SIM", "BOOKGEN_LLM_BASE_URL", "BOOKGEN_LLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(serve, ["--port", "0"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fix in lines[0]
    assert KEY not in result.output
