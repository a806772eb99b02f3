"""The simulated model: prose, prompt conventions, OpenAI-compatible shapes, knobs, metrics."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from fastapi import FastAPI

from bookgen.cli.simllm import sim_llm
from bookgen.service.llm.prose import outline_json, prose
from bookgen.service.llm.sim import Quotas, create_sim_app
from bookgen.service.settings import Settings, SimSettings

FAST = SimSettings(
    tokens_per_second=20_000, time_to_first_token_s=0.0, jitter=0.0, length_error=0.0
)


def ask(words: int | None = None, extra: str = "Write about Ada Lovelace.") -> dict[str, Any]:
    content = extra + (f"\nTarget length: {words} words." if words is not None else "")
    return {
        "model": "bookgen-sim",
        "messages": [
            {"role": "system", "content": "You are a biographer."},
            {"role": "user", "content": content},
        ],
    }


@pytest.fixture
def app() -> FastAPI:
    return create_sim_app(FAST, seed=11)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as client:
        yield client


async def complete(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def text_of(data: dict[str, Any]) -> str:
    return str(data["choices"][0]["message"]["content"])


# --- prose --------------------------------------------------------------------------------


@pytest.mark.parametrize("words", [1, 3, 7, 50, 300, 1000, 2550])
def test_prose_has_exact_word_count_and_ends_sentences(words: int) -> None:
    text = prose(1234, words)
    assert len(text.split()) == words
    assert text.endswith(".")
    if words >= 300:
        assert "\n\n" in text  # paragraphs
        sentences = re.split(r"(?<=\.)\s+", text)
        assert len(sentences) >= words // 20
        assert all(s[0].isupper() for s in sentences)


def test_prose_is_deterministic_and_seed_dependent() -> None:
    assert prose(5, 200) == prose(5, 200)
    assert prose(5, 200) != prose(6, 200)


# --- chat completions ---------------------------------------------------------------------


@pytest.mark.parametrize("target", [80, 300, 1200, 2550])
async def test_word_count_within_5_percent_of_target(http: httpx.AsyncClient, target: int) -> None:
    data = await complete(http, ask(target))
    words = len(text_of(data).split())
    assert abs(words - target) <= 0.05 * target
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] == -(-words * 4 // 3)


async def test_length_error_strays_within_its_bound_deterministically() -> None:
    app = create_sim_app(FAST.model_copy(update={"length_error": 0.2}), seed=11)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as client:
        counts = []
        for topic in ("Ada", "Babbage", "Somerville", "Byron", "Faraday", "Herschel"):
            body = ask(1000, extra=f"Write about {topic}.")
            first = len(text_of(await complete(client, body)).split())
            assert len(text_of(await complete(client, body)).split()) == first
            counts.append(first)
    assert all(800 <= c <= 1200 for c in counts)
    assert any(abs(c - 1000) > 50 for c in counts), counts  # it really misses, beyond ±5 %


async def test_default_length_without_target(http: httpx.AsyncClient) -> None:
    data = await complete(http, ask(None))
    assert abs(len(text_of(data).split()) - 300) <= 15


async def test_response_shape_is_openai_compatible(http: httpx.AsyncClient) -> None:
    data = await complete(http, ask(40))
    assert data["object"] == "chat.completion"
    assert data["id"].startswith("chatcmpl-")
    assert isinstance(data["created"], int)
    assert data["model"] == "bookgen-sim"
    assert data["choices"][0]["message"]["role"] == "assistant"
    usage = data["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] > 0


async def test_max_tokens_honoured(http: httpx.AsyncClient) -> None:
    data = await complete(http, {**ask(1000), "max_tokens": 200})
    words = len(text_of(data).split())
    assert words == 150  # 200 tokens x 3/4
    assert data["usage"]["completion_tokens"] <= 200
    assert data["choices"][0]["finish_reason"] == "length"


async def test_deterministic_for_a_prompt(http: httpx.AsyncClient) -> None:
    a = text_of(await complete(http, ask(200)))
    b = text_of(await complete(http, ask(200)))
    c = text_of(await complete(http, ask(200, extra="Write about Marie Curie.")))
    assert a == b
    assert a != c


async def test_json_outline(http: httpx.AsyncClient) -> None:
    body = ask(None, extra="Plan the book.\nChapters: 7.\nReturn a JSON outline.")
    outline = json.loads(text_of(await complete(http, body)))
    assert len(outline["chapters"]) == 7
    for item in outline["chapters"]:
        assert item["title"] and item["synopsis"].endswith(".")
    assert json.loads(outline_json(3, 2)) == json.loads(outline_json(3, 2))


async def test_numbered_line_outline(http: httpx.AsyncClient) -> None:
    body = ask(
        100, extra="Plan it.\nReturn exactly 4 lines, one per chapter, `N. Title: synopsis`."
    )
    lines = text_of(await complete(http, body)).splitlines()
    assert [line.split(".")[0] for line in lines] == ["1", "2", "3", "4"]
    assert all(re.match(r"^\d+\. [^:]+: .+\.$", line) for line in lines)
    assert abs(sum(len(line.split()) for line in lines) - 100) <= 5


async def test_streaming_sse_chunks(http: httpx.AsyncClient) -> None:
    body = {**ask(120), "stream": True, "stream_options": {"include_usage": True}}
    async with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in r.aiter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert len(text.split()) == 120
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 160
    # Same text whether streamed or not.
    assert text == text_of(await complete(http, ask(120)))


async def test_stream_without_usage_option_has_no_usage_chunk(http: httpx.AsyncClient) -> None:
    async with http.stream("POST", "/v1/chat/completions", json={**ask(20), "stream": True}) as r:
        lines = [line async for line in r.aiter_lines() if line.startswith("data: {")]
    assert all("usage" not in json.loads(line[6:]) for line in lines)


async def test_bad_request_is_400(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/chat/completions", json={"messages": []})
    assert r.status_code == 400
    assert "error" in r.json()
    r = await http.post("/v1/chat/completions", content=b"not json")
    assert r.status_code == 400


async def test_models_and_health(http: httpx.AsyncClient) -> None:
    models = (await http.get("/v1/models")).json()
    assert models["object"] == "list"
    assert models["data"][0]["id"] == "bookgen-sim"
    assert (await http.get("/health")).json()["status"] == "healthy"


# --- pacing -------------------------------------------------------------------------------


async def timed(http: httpx.AsyncClient, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    r = await http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200
    return time.perf_counter() - started


async def test_tokens_per_second_sets_duration(http: httpx.AsyncClient) -> None:
    body = ask(150)  # 200 tokens
    fast = await timed(http, body)
    r = await http.patch("/admin/config", json={"tokens_per_second": 400})
    assert r.status_code == 200
    slow = await timed(http, body)
    # 199 words after the first, at 300 words/s: 0.66 s of pacing. The floor is the pacing's own
    # (a sleep is never shorter); the rest is judged against the unpaced call of the same run,
    # not the wall clock: in CI, beside the e2e scenarios, that call once took 0.43 s.
    assert slow >= 0.4
    assert fast < slow / 2
    assert slow - fast <= 0.9


async def test_streaming_rate_is_exact_with_ticks(http: httpx.AsyncClient) -> None:
    await http.patch("/admin/config", json={"tokens_per_second": 800, "jitter": 0.5})
    body = {**ask(400), "stream": True}
    started = time.perf_counter()
    async with http.stream("POST", "/v1/chat/completions", json=body) as r:
        chunks = [line async for line in r.aiter_lines() if line.startswith("data: {")]
    elapsed = time.perf_counter() - started
    assert 0.6 <= elapsed <= 1.0  # 400 words at 600 words/s
    assert 5 <= len(chunks) <= 15  # ~10 chunks per second, several words each


async def test_latency_and_stall_add_time(http: httpx.AsyncClient) -> None:
    base = await timed(http, ask(50))
    await http.patch("/admin/config", json={"latency_s": 0.3})
    assert await timed(http, ask(50)) >= base + 0.25
    await http.patch("/admin/config", json={"latency_s": 0.0, "stall_s": 0.4})
    assert await timed(http, ask(50)) >= base + 0.35


async def test_time_to_first_token(http: httpx.AsyncClient) -> None:
    await http.patch("/admin/config", json={"time_to_first_token_s": 0.3})
    assert await timed(http, ask(10)) >= 0.3


# --- admin knobs and faults ---------------------------------------------------------------


async def test_admin_config_get_and_patch(http: httpx.AsyncClient) -> None:
    before = (await http.get("/admin/config")).json()
    assert before["tokens_per_second"] == 20_000
    assert set(before) >= {
        "tokens_per_second",
        "time_to_first_token_s",
        "jitter",
        "error_rate",
        "rate_limit_rate",
        "retry_after_s",
        "timeout_rate",
        "stall_s",
        "latency_s",
        "hang_s",
    }
    r = await http.patch("/admin/config", json={"jitter": 0.2})
    assert r.status_code == 200 and r.json()["jitter"] == 0.2


@pytest.mark.parametrize(
    "body",
    [
        {"error_rate": 1.5},
        {"tokens_per_second": 0},
        {"jitter": -1},
        {"stall_s": "soon"},
        {"no_such_knob": 1},
        [1, 2],
    ],
)
async def test_admin_config_rejects_bad_values(http: httpx.AsyncClient, body: Any) -> None:
    before = (await http.get("/admin/config")).json()
    r = await http.patch("/admin/config", json=body)
    assert r.status_code == 422
    assert (await http.get("/admin/config")).json() == before


async def test_error_rate_gives_500s(http: httpx.AsyncClient) -> None:
    await http.patch("/admin/config", json={"error_rate": 1.0})
    statuses = {
        (await http.post("/v1/chat/completions", json=ask(5))).status_code for _ in range(5)
    }
    assert statuses == {500}
    await http.patch("/admin/config", json={"error_rate": 0.0})
    assert (await http.post("/v1/chat/completions", json=ask(5))).status_code == 200


async def test_partial_error_rate(http: httpx.AsyncClient) -> None:
    await http.patch("/admin/config", json={"error_rate": 0.5})
    codes = [(await http.post("/v1/chat/completions", json=ask(2))).status_code for _ in range(60)]
    assert 10 <= codes.count(500) <= 50
    assert set(codes) == {200, 500}


async def test_rate_limit_rate_gives_429_with_retry_after(http: httpx.AsyncClient) -> None:
    await http.patch("/admin/config", json={"rate_limit_rate": 1.0, "retry_after_s": 3})
    r = await http.post("/v1/chat/completions", json=ask(5))
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"
    await http.patch("/admin/config", json={"retry_after_s": 0.25})
    r = await http.post("/v1/chat/completions", json=ask(5))
    assert r.headers["retry-after"] == "0.25"


async def test_timeout_rate_hangs_then_504(http: httpx.AsyncClient) -> None:
    await http.patch("/admin/config", json={"timeout_rate": 1.0, "hang_s": 0.3})
    started = time.perf_counter()
    r = await http.post("/v1/chat/completions", json=ask(5))
    assert r.status_code == 504
    assert time.perf_counter() - started >= 0.3


async def test_metrics_count_statuses_and_tokens(app: FastAPI, http: httpx.AsyncClient) -> None:
    await complete(http, ask(30))
    await http.patch("/admin/config", json={"rate_limit_rate": 1.0})
    await http.post("/v1/chat/completions", json=ask(30))
    text = (await http.get("/metrics")).text
    assert 'bookgen_sim_requests_total{status="200"} 1.0' in text
    assert 'bookgen_sim_requests_total{status="429"} 1.0' in text
    assert 'bookgen_sim_requests_total{status="500"} 0.0' in text
    registry = app.state.sim_metrics.registry
    assert registry.get_sample_value("bookgen_sim_tokens_emitted_total") == 40.0


def test_each_app_has_its_own_registry() -> None:
    a = create_sim_app(FAST)
    b = create_sim_app(FAST)
    assert a.state.sim_metrics.registry is not b.state.sim_metrics.registry


def test_cli_help_and_validation() -> None:
    runner = CliRunner()
    result = runner.invoke(sim_llm, ["--help"])
    assert result.exit_code == 0
    for flag in ("--host", "--port", "--tokens-per-second", "--error-rate", "--stall"):
        assert flag in result.output
    bad = runner.invoke(sim_llm, ["--error-rate", "2"])
    assert bad.exit_code != 0


# --- quotas per API key ----------------------------------------------------------------------
def quota_client(settings: SimSettings) -> httpx.AsyncClient:
    app = create_sim_app(settings, seed=3)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")


def key(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {name}"}


async def test_requests_per_minute_per_key_with_openai_headers() -> None:
    async with quota_client(FAST.model_copy(update={"rpm_limit": 3, "tpm_limit": 0})) as http:
        for left in (2, 1, 0):
            r = await http.post("/v1/chat/completions", json=ask(5), headers=key("a"))
            assert r.status_code == 200
            assert r.headers["x-ratelimit-limit-requests"] == "3"
            assert r.headers["x-ratelimit-remaining-requests"] == str(left)
        over = await http.post("/v1/chat/completions", json=ask(5), headers=key("a"))
        assert over.status_code == 429
        assert over.json()["error"]["type"] == "rate_limit_error"
        # One request comes back every 60/3 = 20 s; the headers say when the bucket is full.
        assert 0 < float(over.headers["Retry-After"]) <= 20.0
        assert over.headers["x-ratelimit-remaining-requests"] == "0"
        assert over.headers["x-ratelimit-reset-requests"].endswith("s")
        # Another key has its own quota.
        other = await http.post("/v1/chat/completions", json=ask(5), headers=key("b"))
        assert other.status_code == 200


async def test_tokens_per_minute_charges_prompt_and_completion() -> None:
    settings = FAST.model_copy(update={"rpm_limit": 0, "tpm_limit": 1_000})
    async with quota_client(settings) as http:
        first = await http.post("/v1/chat/completions", json=ask(450), headers=key("a"))
        assert first.status_code == 200
        used = first.json()["usage"]["total_tokens"]
        assert int(first.headers["x-ratelimit-remaining-tokens"]) == 1_000 - used
        second = await http.post("/v1/chat/completions", json=ask(450), headers=key("a"))
        assert second.status_code == 429 and "tokens" in second.json()["error"]["message"]
        # The bucket refills 1,000 per minute: the missing tokens take (used - left) * 60 / 1000 s.
        wait = float(second.headers["Retry-After"])
        assert 0 < wait <= used * 60 / 1_000 + 0.01
        too_big = await http.post("/v1/chat/completions", json=ask(2_000), headers=key("b"))
        assert too_big.status_code == 429 and "too large" in too_big.json()["error"]["message"]


async def test_concurrent_streams_per_key() -> None:
    # The buckets themselves: httpx's ASGI transport reads a whole body before it answers, so
    # two streams cannot be held open at once through it.
    cfg = FAST.model_copy(update={"max_concurrent_streams": 1, "rpm_limit": 0, "tpm_limit": 0})
    quotas = Quotas()
    assert quotas.admit("a", 10, cfg, 0.0).ok
    refused = quotas.admit("a", 10, cfg, 0.0)
    assert not refused.ok and refused.limit == "streams" and refused.retry_after_s == 1.0
    assert quotas.admit("b", 10, cfg, 0.0).ok  # another key, another count
    quotas.release("a")
    assert quotas.admit("a", 10, cfg, 0.0).ok
    # Through HTTP, each answer (streamed or not) gives its stream back when it ends.
    app = create_sim_app(cfg, seed=3)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim"
    ) as http:
        for body in ({**ask(30), "stream": True}, ask(30), ask(30)):
            r = await http.post("/v1/chat/completions", json=body, headers=key("a"))
            assert r.status_code == 200
    assert app.state.sim_quotas.keys["a"].streams == 0


def test_reset_headers_read_like_openais() -> None:
    from bookgen.service.llm.sim import reset_text

    assert reset_text(0.012) == "12ms"
    assert reset_text(1.5) == "1.5s"
    assert reset_text(360.0) == "6m0s"


def test_default_quotas_are_a_paid_tier() -> None:
    defaults = SimSettings()
    assert (defaults.rpm_limit, defaults.tpm_limit) == (5_000, 2_000_000)
    # One process's default ceiling fills the key; several sharing it learn their share.
    assert defaults.max_concurrent_streams == 256 == Settings().llm_max_concurrency
