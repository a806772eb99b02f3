"""LLMClient: retry semantics with scripted transports, the happy path against the real sim."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from llm_helpers import RecordingHooks, SimServer, Sleeps, make_client, scripted
from pydantic import SecretStr

from bookgen.service.hooks import Hooks
from bookgen.service.llm.client import (
    OPENROUTER_BASE_URL,
    LLMClient,
    compute_cost,
    parse_retry_after,
)
from bookgen.service.llm.errors import LLMConfigError, LLMError
from bookgen.service.llm.sim import create_sim_app
from bookgen.service.settings import Settings, SimSettings

SECRET = "sk-or-v1-0123456789abcdefTOPSECRETkey"
MESSAGES = [{"role": "user", "content": "Write about Ada Lovelace.\nTarget length: 120 words."}]


def ok_body(
    text: str = "Hello there.", model: str = "bookgen-sim", usage: bool = True
) -> dict[str, object]:
    body: dict[str, object] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
    return body


# --- retries ------------------------------------------------------------------------------


async def test_429_retry_after_seconds_is_honoured(hooks: RecordingHooks) -> None:
    transport, seen = scripted(
        [
            httpx.Response(429, headers={"Retry-After": "2"}, json={"error": {"message": "slow"}}),
            httpx.Response(200, json=ok_body()),
        ]
    )
    sleeps = Sleeps()
    client = make_client(transport, hooks, sleeps)
    result = await client.chat(MESSAGES)
    assert result.text == "Hello there."
    assert len(seen) == 2
    assert len(sleeps.delays) == 1
    assert 2.0 <= sleeps.delays[0] <= 2.2
    assert hooks.retries == ["rate_limited"]
    assert [c.error_type for c in hooks.calls] == ["429", None]
    assert [c.attempt for c in hooks.calls] == [1, 2]
    await client.aclose()


async def test_429_retry_after_http_date_is_honoured(hooks: RecordingHooks) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    transport, _ = scripted(
        [httpx.Response(429, headers={"Retry-After": when}), httpx.Response(200, json=ok_body())]
    )
    sleeps = Sleeps()
    client = make_client(transport, hooks, sleeps)
    await client.chat(MESSAGES)
    assert 3.0 <= sleeps.delays[0] <= 5.6
    await client.aclose()


async def test_retry_after_over_the_cap_gives_up_at_once(hooks: RecordingHooks) -> None:
    transport, seen = scripted(
        [httpx.Response(429, headers={"Retry-After": "600"}), httpx.Response(200, json=ok_body())]
    )
    sleeps = Sleeps()
    client = make_client(transport, hooks, sleeps, llm_retry_after_max_s=60.0)
    with pytest.raises(LLMError) as info:
        await client.chat(MESSAGES)
    # Not shortened to fit a cap: the book's own retry waits the full 600 s with its slot free.
    assert info.value.retryable and info.value.retry_after == 600.0
    assert sleeps.delays == [] and len(seen) == 1
    await client.aclose()


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.25") == 0.25
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    date = format_datetime(now + timedelta(seconds=10), usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(10.0)
    past = format_datetime(now - timedelta(seconds=10), usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


async def test_500_is_retried_until_exhausted_then_raises_last(hooks: RecordingHooks) -> None:
    transport, seen = scripted([httpx.Response(500, json={"error": {"message": "boom"}})] * 4)
    sleeps = Sleeps()
    client = make_client(transport, hooks, sleeps, llm_max_retries=3)
    with pytest.raises(LLMError) as info:
        await client.chat(MESSAGES)
    assert info.value.status == 500
    assert info.value.retryable
    assert len(seen) == 4
    assert hooks.retries == ["server_error"] * 3
    assert [c.error_type for c in hooks.calls] == ["500"] * 4
    assert all(isinstance(e, LLMError) for e in hooks.exceptions)
    await client.aclose()


async def test_backoff_is_exponential_with_full_jitter(hooks: RecordingHooks) -> None:
    transport, _ = scripted([httpx.Response(503)] * 6 + [httpx.Response(200, json=ok_body())])
    sleeps = Sleeps()
    client = make_client(
        transport, hooks, sleeps, llm_max_retries=6, llm_backoff_base_s=1.0, llm_backoff_max_s=8.0
    )
    await client.chat(MESSAGES)
    ceilings = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert len(sleeps.delays) == 6
    for delay, ceiling in zip(sleeps.delays, ceilings, strict=True):
        assert 0.0 <= delay <= ceiling
    assert len(set(sleeps.delays)) > 1  # jittered, not a constant
    await client.aclose()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_other_4xx_are_not_retried(status: int, hooks: RecordingHooks) -> None:
    transport, seen = scripted([httpx.Response(status, json={"error": {"message": "no"}})] * 3)
    sleeps = Sleeps()
    client = make_client(transport, hooks, sleeps)
    with pytest.raises(LLMError) as info:
        await client.chat(MESSAGES)
    assert info.value.status == status
    assert not info.value.retryable
    assert len(seen) == 1
    assert sleeps.delays == []
    assert hooks.retries == []
    assert hooks.calls[0].error_type == str(status)
    await client.aclose()


async def test_timeout_is_retried(hooks: RecordingHooks) -> None:
    transport, seen = scripted([httpx.ReadTimeout("slow"), httpx.Response(200, json=ok_body())])
    client = make_client(transport, hooks)
    result = await client.chat(MESSAGES)
    assert result.text == "Hello there."
    assert len(seen) == 2
    assert hooks.retries == ["timeout"]
    assert hooks.calls[0].error_type == "timeout"
    await client.aclose()


async def test_connection_error_is_retried_then_raised(hooks: RecordingHooks) -> None:
    transport, seen = scripted([httpx.ConnectError("refused")] * 2)
    client = make_client(transport, hooks, llm_max_retries=1)
    with pytest.raises(LLMError) as info:
        await client.chat(MESSAGES)
    assert info.value.retryable
    assert info.value.error_type == "ConnectError"
    assert hooks.retries == ["connection"]
    assert [c.error_type for c in hooks.calls] == ["ConnectError", "ConnectError"]
    assert len(seen) == 2
    await client.aclose()


async def test_real_timeout_against_hanging_sim(
    sim_server: SimServer, hooks: RecordingHooks
) -> None:
    async with httpx.AsyncClient(base_url=sim_server.root) as admin:
        r = await admin.patch("/admin/config", json={"timeout_rate": 1.0, "hang_s": 5.0})
        assert r.status_code == 200
    settings = Settings(llm_timeout_s=0.3, llm_max_retries=1, llm_stream=False)
    sleeps = Sleeps()
    client = LLMClient(settings, hooks, base_url=sim_server.base_url, sleep=sleeps)
    started = time.perf_counter()
    with pytest.raises(LLMError) as info:
        await client.chat(MESSAGES)
    assert info.value.error_type == "timeout"
    assert info.value.retryable
    assert time.perf_counter() - started < 2.0
    assert hooks.retries == ["timeout"]
    assert [c.error_type for c in hooks.calls] == ["timeout", "timeout"]
    await client.aclose()


async def test_a_trickling_stream_ends_at_the_attempt_deadline(
    sim_server: SimServer, hooks: RecordingHooks
) -> None:
    # Every read arrives well inside httpx's timeout, so only the call's own deadline ends it.
    async with httpx.AsyncClient(base_url=sim_server.root) as admin:
        r = await admin.patch("/admin/config", json={"tokens_per_second": 5.0})
        assert r.status_code == 200
    settings = Settings(llm_timeout_s=5.0, llm_attempt_deadline_s=0.5, llm_max_retries=0)
    client = LLMClient(settings, hooks, base_url=sim_server.base_url)
    started = time.perf_counter()
    with pytest.raises(LLMError) as info:
        await client.chat(MESSAGES, max_tokens=500, stream=True)
    assert info.value.error_type == "timeout" and info.value.retryable
    assert "deadline" in str(info.value)
    assert 0.4 < time.perf_counter() - started < 2.0
    assert [c.error_type for c in hooks.calls] == ["timeout"]
    await client.aclose()


async def test_error_object_in_200_body_is_an_error(hooks: RecordingHooks) -> None:
    body = {"error": {"message": "upstream overloaded", "code": 502}}
    transport, _ = scripted([httpx.Response(200, json=body), httpx.Response(200, json=ok_body())])
    client = make_client(transport, hooks)
    result = await client.chat(MESSAGES)
    assert result.text == "Hello there."
    assert hooks.retries == ["server_error"]
    assert hooks.calls[0].error_type == "502"
    await client.aclose()


# --- concurrency --------------------------------------------------------------------------


async def test_semaphore_limits_concurrent_requests(hooks: RecordingHooks) -> None:
    state = {"now": 0, "peak": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(0.02)
        state["now"] -= 1
        return httpx.Response(200, json=ok_body())

    client = make_client(httpx.MockTransport(handler), hooks, llm_max_concurrency=3)
    await asyncio.gather(*(client.chat(MESSAGES) for _ in range(12)))
    assert state["peak"] == 3
    assert client.max_in_flight == 3
    assert client.in_flight == 0
    await client.aclose()


# --- usage and cost -----------------------------------------------------------------------


async def test_cost_from_price_table(hooks: RecordingHooks) -> None:
    transport, _ = scripted([httpx.Response(200, json=ok_body(model="openai/gpt-4o"))])
    client = make_client(transport, hooks)
    result = await client.chat(MESSAGES, model="openai/gpt-4o")
    assert (result.input_tokens, result.output_tokens) == (1000, 500)
    assert result.cost_usd == pytest.approx((1000 * 2.50 + 500 * 10.00) / 1e6)
    call = hooks.calls[0]
    assert call.cost_usd == pytest.approx(result.cost_usd)
    assert (call.input_tokens, call.output_tokens) == (1000, 500)
    assert call.response_model == "openai/gpt-4o"
    assert call.finish_reason == "stop"
    assert call.error_type is None
    await client.aclose()


async def test_unknown_model_costs_nothing(hooks: RecordingHooks) -> None:
    transport, _ = scripted([httpx.Response(200, json=ok_body(model="someone/unknown"))])
    client = make_client(transport, hooks)
    result = await client.chat(MESSAGES, model="someone/unknown")
    assert result.cost_usd == 0.0
    assert compute_cost(Settings(), "nope", 10, 10) == 0.0
    await client.aclose()


async def test_usage_estimated_when_missing(hooks: RecordingHooks) -> None:
    text = "one two three four five six."
    transport, _ = scripted([httpx.Response(200, json=ok_body(text=text, usage=False))])
    client = make_client(transport, hooks)
    result = await client.chat(MESSAGES)
    assert result.output_tokens == 8  # 6 words x 4/3
    assert result.input_tokens > 0
    await client.aclose()


# --- secrets and content ------------------------------------------------------------------


async def test_api_key_sent_as_bearer_but_never_logged_or_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    seen_auth: list[str] = []
    echo = {"error": {"message": f"Invalid key {SECRET} (Bearer {SECRET})"}}

    def handler(request: httpx.Request) -> httpx.Response:
        seen_auth.append(request.headers["authorization"])
        if len(seen_auth) == 1:
            return httpx.Response(500, json=echo)
        return httpx.Response(401, json=echo)

    hooks = RecordingHooks(capture=True)
    client = make_client(httpx.MockTransport(handler), hooks, llm_api_key=SecretStr(SECRET))
    with pytest.raises(LLMError) as info:
        await client.chat(MESSAGES)
    assert seen_auth == [f"Bearer {SECRET}"] * 2
    assert info.value.status == 401
    texts = [caplog.text, str(info.value), repr(info.value), repr(client)]
    texts += [str(c) for c in hooks.calls]
    for text in texts:
        assert SECRET not in text
        assert "TOPSECRET" not in text
    await client.aclose()


async def test_secret_absent_from_500_message_too() -> None:
    echo = {"error": {"message": f"bad upstream for {SECRET}"}}
    transport, _ = scripted([httpx.Response(500, json=echo)])
    client = make_client(transport, Hooks(), llm_api_key=SecretStr(SECRET), llm_max_retries=0)
    with pytest.raises(LLMError) as info:
        await client.chat(MESSAGES)
    assert "TOPSECRET" not in str(info.value) and "TOPSECRET" not in repr(info.value)
    await client.aclose()


@pytest.mark.parametrize("capture", [False, True])
async def test_content_copied_only_when_capture_enabled(capture: bool) -> None:
    hooks = RecordingHooks(capture=capture)
    transport, _ = scripted([httpx.Response(200, json=ok_body())])
    client = make_client(transport, hooks)
    await client.chat(MESSAGES)
    call = hooks.calls[0]
    if capture:
        assert call.prompt is not None and "Ada Lovelace" in call.prompt
        assert call.completion == "Hello there."
    else:
        assert call.prompt is None and call.completion is None
    await client.aclose()


# --- base URL, ping -----------------------------------------------------------------------


def test_base_url_resolution() -> None:
    with pytest.raises(LLMConfigError):
        LLMClient(Settings(llm_base_url=None, llm_api_key=None), Hooks())
    client = LLMClient(Settings(llm_base_url=None, llm_api_key=SecretStr(SECRET)), Hooks())
    assert client.base_url == OPENROUTER_BASE_URL
    assert SECRET not in repr(client)
    other = LLMClient(Settings(llm_base_url="http://127.0.0.1:9/v1/"), Hooks())
    assert other.base_url == "http://127.0.0.1:9/v1"
    given = LLMClient(Settings(), Hooks(), base_url="http://127.0.0.1:1/v1")
    assert given.base_url == "http://127.0.0.1:1/v1"


async def test_ping() -> None:
    app = create_sim_app(SimSettings())
    good = LLMClient(
        Settings(), Hooks(), base_url="http://sim/v1", transport=httpx.ASGITransport(app=app)
    )
    assert await good.ping()
    await good.aclose()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    bad = LLMClient(
        Settings(), Hooks(), base_url="http://sim/v1", transport=httpx.MockTransport(refuse)
    )
    assert not await bad.ping()
    await bad.aclose()


# --- against the simulated model ----------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_against_sim_asgi(stream: bool, hooks: RecordingHooks) -> None:
    app = create_sim_app(
        SimSettings(tokens_per_second=5000, time_to_first_token_s=0.0, length_error=0.0)
    )
    client = LLMClient(
        Settings(), hooks, base_url="http://sim/v1", transport=httpx.ASGITransport(app=app)
    )
    result = await client.chat(MESSAGES, stream=stream)
    assert len(result.text.split()) == 120
    assert result.output_tokens == 160
    assert result.finish_reason == "stop"
    assert result.model == "bookgen-sim"
    assert result.cost_usd == pytest.approx(
        (result.input_tokens * 0.15 + result.output_tokens * 0.60) / 1e6
    )
    assert hooks.calls[0].stream is stream
    await client.aclose()


async def test_streaming_records_time_to_first_chunk(
    sim_server: SimServer, hooks: RecordingHooks
) -> None:
    """Real HTTP and real streaming: 200 words at 400 tokens/s take ~0.67 s after a 0.2 s TTFT."""
    client = LLMClient(Settings(llm_stream=True), hooks, base_url=sim_server.base_url)
    messages = [{"role": "user", "content": "Target length: 200 words."}]
    started = time.perf_counter()
    result = await client.chat(messages)
    total = time.perf_counter() - started
    ttfc = hooks.calls[0].time_to_first_chunk_s
    assert ttfc is not None
    assert 0.15 <= ttfc <= 0.6
    assert total >= ttfc + 0.4  # the rest arrives over time, not in one lump
    assert len(result.text.split()) == 200
    assert result.output_tokens == 267
    assert hooks.calls[0].output_tokens == 267
    assert await client.ping()
    await client.aclose()


async def test_rate_limited_sim_recovers_through_retries(
    sim_server: SimServer, hooks: RecordingHooks
) -> None:
    async with httpx.AsyncClient(base_url=sim_server.root) as admin:
        r = await admin.patch("/admin/config", json={"rate_limit_rate": 1.0, "retry_after_s": 0.05})
        assert r.status_code == 200
        sleeps: list[float] = []

        async def sleep(delay: float) -> None:
            sleeps.append(delay)
            await admin.patch("/admin/config", json={"rate_limit_rate": 0.0})

        client = LLMClient(
            Settings(llm_stream=True), hooks, base_url=sim_server.base_url, sleep=sleep
        )
        result = await client.chat([{"role": "user", "content": "Target length: 20 words."}])
        assert len(result.text.split()) == 20
        assert hooks.retries == ["rate_limited"]
        assert 0.05 <= sleeps[0] <= 0.056
        await client.aclose()


async def test_cancelled_call_is_marked(hooks: RecordingHooks) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return httpx.Response(200, json=ok_body())

    client = make_client(httpx.MockTransport(handler), hooks)
    task = asyncio.create_task(client.chat(MESSAGES))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hooks.calls[0].error_type == "cancelled"
    assert client.in_flight == 0
    await client.aclose()


async def test_stream_request_answered_with_plain_json(hooks: RecordingHooks) -> None:
    transport, _ = scripted([httpx.Response(200, json=ok_body())])
    client = make_client(transport, hooks, llm_stream=True)
    result = await client.chat(MESSAGES)
    assert result.text == "Hello there."
    assert result.output_tokens == 500
    assert hooks.calls[0].time_to_first_chunk_s is not None
    await client.aclose()


async def test_sse_error_chunk_raises(hooks: RecordingHooks) -> None:
    good = 'data: {"choices":[{"index":0,"delta":{"content":"Hi."}}]}\n\n'
    bad = 'data: {"error":{"message":"overloaded","code":503}}\n\n'
    sse = {"content-type": "text/event-stream"}
    transport, seen = scripted(
        [
            httpx.Response(200, headers=sse, content=(good + bad).encode()),
            httpx.Response(200, headers=sse, content=(good + "data: [DONE]\n\n").encode()),
        ]
    )
    client = make_client(transport, hooks, llm_stream=True)
    result = await client.chat(MESSAGES)
    assert result.text == "Hi."
    assert len(seen) == 2
    assert hooks.retries == ["server_error"]
    assert hooks.calls[0].error_type == "503"
    await client.aclose()
