"""The client's retry semantics, deadlines, charging of failed attempts and the circuit breaker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence

import httpx
import pytest
from llm_helpers import RecordingHooks, Sleeps, make_client, scripted

from bookgen.service.hooks import Hooks
from bookgen.service.llm import spend
from bookgen.service.llm.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from bookgen.service.llm.client import LLMClient, StreamWatch
from bookgen.service.llm.errors import LLMConfigError, LLMError
from bookgen.service.llm.provider import OPENROUTER_BASE_URL, resolve_provider
from bookgen.service.pipeline.outline import OutlineStream
from bookgen.service.settings import Settings

MESSAGES = [{"role": "user", "content": "Write about Ada Lovelace.\nTarget length: 120 words."}]
SSE = {"content-type": "text/event-stream"}


def ok_body(text: str = "Hello there.") -> dict[str, object]:
    return {
        "model": "bookgen-sim",
        "choices": [{"message": {"content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3},
    }


def sse(pieces: Sequence[str], *, finish: str | None = "stop", done: bool = True) -> bytes:
    lines = [
        "data: " + json.dumps({"model": "bookgen-sim", "choices": [{"delta": {"content": p}}]})
        for p in pieces
    ]
    if finish is not None:
        lines.append("data: " + json.dumps({"choices": [{"delta": {}, "finish_reason": finish}]}))
    if done:
        lines.append("data: [DONE]")
    return ("\n\n".join(lines) + "\n\n").encode()


def client_for(
    transport: httpx.AsyncBaseTransport,
    hooks: Hooks,
    sleeps: Sleeps | None = None,
    **overrides: object,
) -> LLMClient:
    """`make_client` with a low backoff cap, so a Retry-After above it is told from a backoff."""
    fields: dict[str, object] = {"llm_backoff_max_s": 2.0, "llm_retry_after_max_s": 60.0}
    fields.update(overrides)
    return make_client(transport, hooks, sleeps, seed=3, **fields)


# --- Retry-After ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_waited_out_in_full_not_cut_to_the_backoff_cap(
    status: int, hooks: RecordingHooks
) -> None:
    transport, seen = scripted(
        [httpx.Response(status, headers={"Retry-After": "45"}), httpx.Response(200, json=ok_body())]
    )
    sleeps = Sleeps()
    client = client_for(transport, hooks, sleeps, llm_backoff_max_s=2.0)
    assert (await client.chat(MESSAGES)).text == "Hello there."
    assert len(seen) == 2
    assert len(sleeps.delays) == 1 and 45.0 <= sleeps.delays[0] <= 45.0 * 1.1
    await client.aclose()


async def test_retry_after_over_the_cap_ends_the_call_with_the_wait_attached(
    hooks: RecordingHooks,
) -> None:
    transport, seen = scripted([httpx.Response(503, headers={"Retry-After": "120"})] * 3)
    sleeps = Sleeps()
    client = client_for(transport, hooks, sleeps, llm_retry_after_max_s=30.0)
    with pytest.raises(LLMError) as info:
        await client.chat(MESSAGES)
    assert info.value.retryable and info.value.retry_after == 120.0
    assert len(seen) == 1 and sleeps.delays == []
    await client.aclose()


async def test_paced_429s_do_not_use_up_the_retries(hooks: RecordingHooks) -> None:
    """A binding tokens-per-minute quota answers 429 with a short Retry-After again and again:
    the call waits each one out and completes, however many it takes."""
    paced = httpx.Response(429, headers={"Retry-After": "0.6"})
    transport, seen = scripted([paced] * 12 + [httpx.Response(200, json=ok_body())])
    sleeps = Sleeps()
    client = client_for(transport, hooks, sleeps, llm_max_retries=2)
    assert (await client.chat(MESSAGES)).text == "Hello there."
    assert len(seen) == 13
    assert all(0.6 <= d <= 0.66 for d in sleeps.delays)
    assert hooks.retries == ["rate_limited"] * 12
    await client.aclose()


# --- which statuses are retried -----------------------------------------------------------


@pytest.mark.parametrize(("status", "reason"), [(408, "timeout"), (409, "server_error")])
async def test_408_and_409_are_retried(status: int, reason: str, hooks: RecordingHooks) -> None:
    transport, seen = scripted([httpx.Response(status), httpx.Response(200, json=ok_body())])
    client = client_for(transport, hooks)
    assert (await client.chat(MESSAGES)).text == "Hello there."
    assert len(seen) == 2 and hooks.retries == [reason]
    await client.aclose()


@pytest.mark.parametrize("status", [400, 404, 413, 422])
async def test_other_4xx_fail_at_once(status: int, hooks: RecordingHooks) -> None:
    transport, seen = scripted([httpx.Response(status)] * 3)
    sleeps = Sleeps()
    client = client_for(transport, hooks, sleeps)
    with pytest.raises(LLMError) as info:
        await client.chat(MESSAGES)
    assert not info.value.retryable and len(seen) == 1 and sleeps.delays == []
    await client.aclose()


# --- deadlines ----------------------------------------------------------------------------


async def test_the_call_deadline_bounds_all_attempts_and_waits(hooks: RecordingHooks) -> None:
    calls: list[int] = []

    async def hanging(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        await asyncio.sleep(30)
        return httpx.Response(200, json=ok_body())

    client = client_for(
        httpx.MockTransport(hanging),
        hooks,
        llm_attempt_deadline_s=20.0,
        llm_call_deadline_s=0.3,
        llm_max_retries=10,
    )
    started = time.monotonic()
    with pytest.raises(LLMError) as info:
        await client.chat(MESSAGES)
    # Far below one attempt's own 20 s deadline: the call's 0.3 s ended it, with no retry.
    assert time.monotonic() - started < 10.0
    assert info.value.error_type == "timeout" and info.value.retryable
    assert len(calls) == 1
    assert [c.error_type for c in hooks.calls] == ["timeout"]
    await client.aclose()


# --- streams cut short ----------------------------------------------------------------------


async def test_a_stream_ending_without_done_or_finish_is_retried(hooks: RecordingHooks) -> None:
    cut = httpx.Response(200, headers=SSE, content=sse(["Ada ", "was "], finish=None, done=False))
    whole = httpx.Response(200, headers=SSE, content=sse(["Ada ", "was ", "here."]))
    transport, seen = scripted([cut, whole])
    client = client_for(transport, hooks, llm_stream=True)
    result = await client.chat(MESSAGES)
    assert result.text == "Ada was here." and len(seen) == 2
    assert [c.error_type for c in hooks.calls] == ["incomplete_stream", None]
    assert hooks.retries == ["server_error"]
    await client.aclose()


async def test_a_finish_reason_without_done_is_a_whole_answer(hooks: RecordingHooks) -> None:
    ended = httpx.Response(200, headers=SSE, content=sse(["Ada ", "was "], done=False))
    transport, seen = scripted([ended])
    client = client_for(transport, hooks, llm_stream=True)
    result = await client.chat(MESSAGES)
    assert (result.text, result.finish_reason, len(seen)) == ("Ada was ", "stop", 1)
    await client.aclose()


async def test_a_cut_outline_stream_is_never_padded_into_chapters(hooks: RecordingHooks) -> None:
    entries = [{"title": f"Part {i}", "synopsis": f"Synopsis {i}."} for i in range(1, 4)]
    text = json.dumps({"chapters": entries})
    cut = httpx.Response(200, headers=SSE, content=sse([text[:60]], finish=None, done=False))
    transport, seen = scripted([cut, cut])
    client = client_for(transport, hooks, llm_stream=True, llm_max_retries=1)
    heard: list[int] = []
    watch: StreamWatch = OutlineStream(3, lambda number, entry: heard.append(number))
    with pytest.raises(LLMError) as info:
        await client.chat(MESSAGES, watch=watch)
    assert info.value.error_type == "incomplete_stream" and info.value.retryable
    assert len(seen) == 2
    assert set(heard) == {1}  # only the entry that arrived whole (once per attempt)
    await client.aclose()


# --- what failed attempts cost --------------------------------------------------------------


async def test_failed_attempts_are_charged_in_the_hooks_and_the_result(
    hooks: RecordingHooks,
) -> None:
    cut = httpx.Response(
        200, headers=SSE, content=sse(["one two three four"], finish=None, done=False)
    )
    whole = httpx.Response(200, headers=SSE, content=sse(["Ada ", "was ", "here."]))
    transport, _ = scripted([httpx.Response(503), cut, whole])
    client = client_for(transport, hooks, llm_stream=True)
    result = await client.chat(MESSAGES)
    refused, broken, good = hooks.calls
    assert refused.error_type == "503" and not refused.input_tokens and not refused.cost_usd
    assert broken.error_type == "incomplete_stream"
    assert broken.input_tokens and broken.input_tokens > 0
    assert broken.output_tokens == 6  # four words streamed before the cut
    assert broken.cost_usd and broken.cost_usd > 0
    assert good.error_type is None and good.output_tokens is not None
    assert good.input_tokens is not None and good.cost_usd is not None
    # The stored section carries what every attempt cost.
    assert result.output_tokens == good.output_tokens + broken.output_tokens
    assert result.input_tokens == good.input_tokens + broken.input_tokens
    assert result.cost_usd == pytest.approx(good.cost_usd + broken.cost_usd)
    await client.aclose()


async def test_a_call_that_fails_for_good_puts_its_spend_in_the_runs_tally(
    hooks: RecordingHooks,
) -> None:
    cut = httpx.Response(200, headers=SSE, content=sse(["one two three"], finish=None, done=False))
    transport, _ = scripted([cut, cut])
    client = client_for(transport, hooks, llm_stream=True, llm_max_retries=1)
    with spend.tallied() as tally, pytest.raises(LLMError):
        await client.chat(MESSAGES)
    charged = list(hooks.calls)
    assert tally.output_tokens == sum(c.output_tokens or 0 for c in charged) == 8
    assert tally.input_tokens == sum(c.input_tokens or 0 for c in charged) > 0
    assert tally.cost_usd == pytest.approx(sum(c.cost_usd or 0.0 for c in charged))
    assert tally.cost_usd > 0
    await client.aclose()


# --- circuit breaker ------------------------------------------------------------------------


async def test_breaker_opens_holds_calls_and_a_probe_closes_it() -> None:
    states: list[str] = []
    breaker = CircuitBreaker(2, 0.2, on_change=states.append)
    breaker.failure(False)
    assert breaker.state == CLOSED and breaker.accepting()
    breaker.failure(False)
    assert breaker.state == OPEN and not breaker.accepting()
    loop = asyncio.get_running_loop()
    calls = [loop.create_task(breaker.enter(time.monotonic() + 5)) for _ in range(2)]
    done, pending = await asyncio.wait(calls, timeout=2, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1 and done.pop().result() is True  # the probe, after the open window
    assert breaker.state == HALF_OPEN and not breaker.accepting()
    await asyncio.sleep(0.05)
    assert not pending.copy().pop().done()  # one probe at a time
    breaker.success(True)
    assert await asyncio.wait_for(pending.pop(), 1) is False
    assert breaker.state == CLOSED
    assert states == [OPEN, HALF_OPEN, CLOSED]


async def test_a_failed_probe_opens_the_breaker_again() -> None:
    breaker = CircuitBreaker(1, 0.05)
    breaker.failure(False)
    probe = await breaker.enter(time.monotonic() + 5)
    breaker.failure(probe)
    assert breaker.state == OPEN


# --- provider resolution --------------------------------------------------------------------


def test_a_key_alone_means_openrouter() -> None:
    provider = resolve_provider(Settings.model_validate({"llm_api_key": "sk-or-test"}))
    assert (provider.base_url, provider.simulated) == (OPENROUTER_BASE_URL, False)


def test_no_provider_setting_at_all_means_the_simulated_model() -> None:
    provider = resolve_provider(Settings())
    assert provider.simulated and provider.base_url is None


@pytest.mark.parametrize(
    ("fields", "fix"),
    [
        ({"llm_sim": False}, "set BOOKGEN_LLM_API_KEY"),
        ({"llm_provider_name": "openrouter"}, "set BOOKGEN_LLM_API_KEY"),
        ({"llm_sim": True, "llm_api_key": "sk-x"}, "contradicts BOOKGEN_LLM_API_KEY"),
        ({"llm_api_key": ""}, "set but empty"),
        ({"llm_base_url": ""}, "set but empty"),
        ({"llm_base_url": "openrouter.ai/api/v1", "llm_api_key": "k"}, "not an http(s) URL"),
        ({"llm_base_url": "https://openrouter.ai/api/v1"}, "set the key"),
    ],
)
def test_incomplete_or_contradictory_settings_stop_with_the_fix(
    fields: dict[str, object], fix: str
) -> None:
    with pytest.raises(LLMConfigError) as info:
        resolve_provider(Settings.model_validate(fields))
    message = str(info.value)
    assert fix in message and "\n" not in message
    assert "sk-x" not in message
