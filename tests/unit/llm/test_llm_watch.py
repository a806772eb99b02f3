"""A stream watch sees every delta, restarts with each attempt, and can end a reply early."""

from __future__ import annotations

import asyncio

import httpx
from llm_helpers import RecordingHooks, SimServer
from prometheus_client import CollectorRegistry

from bookgen.service.llm.client import LLMClient, estimate_tokens
from bookgen.service.pipeline.length import WordLimit
from bookgen.service.settings import Settings

SSE = {"content-type": "text/event-stream"}


def sse(*pieces: str) -> bytes:
    lines = [f'data: {{"choices":[{{"index":0,"delta":{{"content":"{p}"}}}}]}}\n\n' for p in pieces]
    return ("".join(lines) + "data: [DONE]\n\n").encode()


class Recorder:
    def __init__(self, stop_at: str | None = None) -> None:
        self.begins = 0
        self.deltas: list[str] = []
        self.stop_at = stop_at

    def begin(self) -> None:
        self.begins += 1
        self.deltas = []

    def feed(self, delta: str) -> bool:
        self.deltas.append(delta)
        return delta == self.stop_at


def client_for(
    transport: httpx.AsyncBaseTransport, hooks: RecordingHooks, stream: bool
) -> LLMClient:
    async def no_sleep(_: float) -> None:
        return None

    settings = Settings(llm_stream=stream, llm_max_retries=2)
    return LLMClient(
        settings, hooks, base_url="http://llm.test/v1", transport=transport, sleep=no_sleep
    )


async def test_watch_sees_each_delta_and_restarts_with_a_retry(hooks: RecordingHooks) -> None:
    broken = 'data: {"choices":[{"index":0,"delta":{"content":"Lost "}}]}\n\n'
    broken += 'data: {"error":{"message":"overloaded","code":503}}\n\n'
    replies = [
        httpx.Response(200, headers=SSE, content=broken.encode()),
        httpx.Response(200, headers=SSE, content=sse("One ", "two ", "three.")),
    ]
    transport = httpx.MockTransport(lambda _: replies.pop(0))
    client = client_for(transport, hooks, stream=True)
    watch = Recorder()
    result = await client.chat([{"role": "user", "content": "x"}], watch=watch)
    await client.aclose()
    assert result.text == "One two three."
    assert watch.begins == 2
    assert watch.deltas == ["One ", "two ", "three."]


async def test_watch_ends_the_reply_and_usage_is_estimated(hooks: RecordingHooks) -> None:
    transport = httpx.MockTransport(
        lambda _: httpx.Response(200, headers=SSE, content=sse("One ", "two ", "three ", "four."))
    )
    client = client_for(transport, hooks, stream=True)
    result = await client.chat([{"role": "user", "content": "x"}], watch=Recorder("two "))
    await client.aclose()
    assert result.text == "One two "
    assert result.finish_reason == "client_stop"
    assert result.output_tokens == estimate_tokens("One two ")
    assert hooks.calls[0].finish_reason == "client_stop"


async def test_without_streaming_the_watch_sees_the_whole_text(hooks: RecordingHooks) -> None:
    body = {
        "choices": [{"message": {"content": "All at once."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json=body))
    client = client_for(transport, hooks, stream=False)
    watch = Recorder()
    result = await client.chat([{"role": "user", "content": "x"}], watch=watch)
    await client.aclose()
    assert (result.text, result.output_tokens, result.finish_reason) == ("All at once.", 4, "stop")
    assert watch.deltas == ["All at once."]


async def test_ending_a_real_stream_stops_the_model(
    sim_server: SimServer, hooks: RecordingHooks
) -> None:
    """1,000 words at 400 tokens/s is 1,334 tokens over ~3.3 s; the watch ends it at 100 words,
    and the simulated model, seeing the connection close, emits nothing more."""
    client = LLMClient(Settings(llm_stream=True), hooks, base_url=sim_server.base_url)
    messages = [{"role": "user", "content": "Target length: 1000 words."}]
    result = await client.chat(messages, watch=WordLimit(100))
    await client.aclose()
    assert result.finish_reason == "client_stop"
    assert 101 <= len(result.text.split()) <= 130
    registry: CollectorRegistry = sim_server.app_state.sim_metrics.registry  # type: ignore[attr-defined]
    for _ in range(100):
        if registry.get_sample_value("bookgen_sim_active_requests") == 0:
            break
        await asyncio.sleep(0.05)
    assert registry.get_sample_value("bookgen_sim_active_requests") == 0
    emitted = registry.get_sample_value("bookgen_sim_tokens_emitted_total")
    assert emitted is not None and emitted < 300, emitted
