"""CPU per streamed chunk: BookGen's own LLM client against the official `openai` SDK.

Both read the same SSE body (one word per chunk, as a real provider streams, then the finish
chunk, usage and `[DONE]`) from an in-memory transport, so only parsing and client overhead is
measured, not the network. Prints microseconds of process CPU per chunk (median of the runs).

    python scripts/benchmark_llm_client.py [--chunks 20000] [--runs 5]

The SDK part runs only where `openai` is installed; its transport is `httpx2` (what the SDK's
current releases are built on), BookGen's is `httpx`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import statistics
import time
from typing import Any

import httpx

from bookgen.service.hooks import Hooks
from bookgen.service.llm.client import LLMClient
from bookgen.service.settings import Settings

MESSAGES = [{"role": "user", "content": "Write about Ada Lovelace."}]


def sse_body(chunks: int) -> bytes:
    lines = []
    for i in range(chunks):
        chunk = {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "bookgen-sim",
            "choices": [
                {"index": 0, "delta": {"content": f"word{i % 97} "}, "finish_reason": None}
            ],
        }
        lines.append("data: " + json.dumps(chunk, separators=(",", ":")))
    end = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "bookgen-sim",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    usage = {**end, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": chunks}}
    lines += ["data: " + json.dumps(end), "data: " + json.dumps(usage), "data: [DONE]"]
    return ("\n\n".join(lines) + "\n\n").encode()


async def ours(body: bytes, chunks: int) -> float:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    client = LLMClient(
        Settings(llm_stream=True),
        Hooks(),
        base_url="http://llm.test/v1",
        transport=httpx.MockTransport(handler),
    )
    started = time.process_time()
    result = await client.chat(MESSAGES)
    spent = time.process_time() - started
    await client.aclose()
    assert result.output_tokens == chunks
    return spent


async def sdk(body: bytes, chunks: int) -> float | None:
    try:
        openai: Any = importlib.import_module("openai")
        httpx2: Any = importlib.import_module("httpx2")
    except ImportError:
        return None

    def handler(request: Any) -> Any:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    client = openai.AsyncOpenAI(
        api_key="sk-bench",
        base_url="http://llm.test/v1",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
    )
    started = time.process_time()
    stream = await client.chat.completions.create(
        model="bookgen-sim",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    parts: list[str] = []
    usage = None
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    spent = time.process_time() - started
    await client.close()
    assert usage is not None and usage.completion_tokens == chunks and len(parts) == chunks
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    body = sse_body(args.chunks)
    figures: dict[str, list[float]] = {"bookgen client (httpx)": [], "openai SDK (httpx2)": []}
    for _ in range(args.runs):
        figures["bookgen client (httpx)"].append(asyncio.run(ours(body, args.chunks)))
        spent = asyncio.run(sdk(body, args.chunks))
        if spent is not None:
            figures["openai SDK (httpx2)"].append(spent)
    print(f"{args.chunks} streamed chunks, {args.runs} runs, process CPU per chunk (median):")
    for name, runs in figures.items():
        if not runs:
            print(f"  {name:<24} not installed")
            continue
        per_chunk = statistics.median(runs) / args.chunks * 1e6
        each = ", ".join(f"{r:.3f}s" for r in runs)
        print(f"  {name:<24} {per_chunk:7.1f} us/chunk  (runs: {each})")


if __name__ == "__main__":
    main()
