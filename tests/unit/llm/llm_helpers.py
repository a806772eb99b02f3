"""Helpers for the LLM tests: a recording Hooks and a real sim server (fixtures in conftest)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import httpx
import pytest
import uvicorn

from bookgen.service.hooks import Hooks, LLMCall
from bookgen.service.llm.client import LLMClient
from bookgen.service.llm.sim import create_sim_app
from bookgen.service.settings import Settings, SimSettings


class RecordingHooks(Hooks):
    def __init__(self, capture: bool = False) -> None:
        self.calls: list[LLMCall] = []
        self.retries: list[str] = []
        self.exceptions: list[BaseException | None] = []
        self._capture = capture

    @contextmanager
    def llm_call(self, call: LLMCall) -> Iterator[LLMCall]:
        try:
            yield call
        except BaseException as exc:
            self.exceptions.append(exc)
            self.calls.append(replace(call))
            raise
        self.exceptions.append(None)
        self.calls.append(replace(call))

    def llm_retry(self, reason: str) -> None:
        self.retries.append(reason)

    @property
    def capture_content(self) -> bool:
        return self._capture


@pytest.fixture
def hooks() -> RecordingHooks:
    return RecordingHooks()


@dataclass
class SimServer:
    base_url: str  # ends in /v1
    root: str
    app_state: object


@pytest.fixture
async def sim_server() -> AsyncIterator[SimServer]:
    """The simulated model on a real uvicorn server, 127.0.0.1 and a free port."""
    app = create_sim_app(
        SimSettings(tokens_per_second=400, time_to_first_token_s=0.2, jitter=0.0, length_error=0.0),
        seed=1,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started, "sim server did not start"
    try:
        yield SimServer(f"http://127.0.0.1:{port}/v1", f"http://127.0.0.1:{port}", app.state)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        sock.close()


# --- a client on a scripted transport, its sleeps recorded ------------------------------


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def scripted(script: Sequence[httpx.Response | Exception]) -> tuple[httpx.MockTransport, list[int]]:
    seen: list[int] = []
    responses = list(script)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        item = responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return httpx.MockTransport(handler), seen


def make_client(
    transport: httpx.AsyncBaseTransport,
    hooks: Hooks,
    sleeps: Sleeps | None = None,
    *,
    seed: int = 7,
    **overrides: object,
) -> LLMClient:
    fields: dict[str, object] = {
        "llm_max_retries": 3,
        "llm_backoff_base_s": 0.5,
        "llm_backoff_max_s": 30.0,
        "llm_stream": False,
    }
    fields.update(overrides)
    settings = Settings.model_validate(fields)
    return LLMClient(
        settings,
        hooks,
        base_url="http://llm.test/v1",
        transport=transport,
        sleep=sleeps or Sleeps(),
        rng=random.Random(seed),
    )
