"""The client's concurrency window: narrowed by the provider's 429s, widened by its answers."""

from __future__ import annotations

import asyncio

import httpx
from llm_helpers import SimServer

from bookgen.service.hooks import Hooks
from bookgen.service.llm.client import LLMClient
from bookgen.service.llm.limit import AdaptiveLimit
from bookgen.service.settings import Settings


async def test_starts_at_its_ceiling_and_queues_past_it() -> None:
    limit = AdaptiveLimit(3)
    for _ in range(3):
        assert await limit.acquire() == 0
    waiter = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    assert not waiter.done() and limit.in_flight == 3
    limit.release()
    await waiter
    assert limit.in_flight == 3


async def test_a_429_narrows_to_nine_tenths_of_what_was_in_flight_once_per_round() -> None:
    seen: list[int] = []
    limit = AdaptiveLimit(64, on_change=seen.append)
    rounds = [await limit.acquire() for _ in range(20)]
    limit.refused(rounds[0])
    assert limit.window == 18  # 9/10 of the 20 in flight, not of the ceiling
    for granted in rounds[1:]:
        limit.refused(granted)  # the rest of the burst's refusals: already answered
    assert limit.window == 18 and limit.narrowings == 1
    for _ in range(10):
        limit.release()
    later = await limit.acquire()  # granted after the narrowing: its 429 counts
    limit.refused(later)
    assert limit.window == 9  # floor(11 * 0.9)
    assert seen == [64, 18, 9]  # the starting window, then each narrowing


async def test_answers_widen_it_only_while_it_holds_requests_back() -> None:
    limit = AdaptiveLimit(10)
    granted = [await limit.acquire() for _ in range(4)]
    limit.refused(granted[0])
    assert limit.window == 3
    limit.release()
    limit.succeeded()  # 3 in flight of a window of 3: full
    assert limit.window == 4
    limit.release()
    limit.succeeded()  # 2 of 4: the window did not bind
    assert limit.window == 4
    for _ in range(20):
        await limit.acquire()
        while limit.in_flight < limit.window:
            await limit.acquire()
        limit.succeeded()
        limit.release()
    assert limit.window == 10  # back to the ceiling, never past it


async def test_a_waiter_cancelled_leaves_no_slot_behind() -> None:
    limit = AdaptiveLimit(1)
    await limit.acquire()
    waiter = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    limit.release()  # granted to the waiter ...
    waiter.cancel()  # ... which is cancelled before it runs
    await asyncio.gather(waiter, return_exceptions=True)
    assert limit.in_flight == 0
    async with asyncio.timeout(1):
        await limit.acquire()
    timed_out = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    timed_out.cancel()
    await asyncio.gather(timed_out, return_exceptions=True)
    limit.release()
    assert limit.in_flight == 0
    assert await limit.acquire() == 0


class FixedLimit(AdaptiveLimit):
    """The window as it was before it learnt: counts the 429s, never narrows."""

    def refused(self, granted_round: int) -> None:
        self.refusals += 1


class WindowHooks(Hooks):
    def __init__(self) -> None:
        self.windows: list[int] = []

    def llm_window(self, size: int) -> None:
        self.windows.append(size)


async def test_a_small_key_is_learnt_against_the_real_sim(sim_server: SimServer) -> None:
    """A key that allows 4 streams, a client whose ceiling is 32: every call ends answered,
    the window settles near the key's limit, and it meets at most two thirds of the refusals a
    fixed 32 meets (measured on the same model in the same run). Each answer at a full window
    probes one above it, so some refusals remain: the price of finding a limit that moves."""
    async with httpx.AsyncClient() as admin:
        r = await admin.patch(
            sim_server.root + "/admin/config",
            json={"max_concurrent_streams": 4, "rpm_limit": 0, "tpm_limit": 0},
        )
        assert r.status_code == 200

    async def run(adaptive: bool) -> tuple[int, list[int], LLMClient]:
        hooks = WindowHooks()
        settings = Settings.model_validate(
            {"llm_max_concurrency": 32, "llm_stream": True, "llm_max_retries": 0}
        )
        client = LLMClient(settings, hooks, base_url=sim_server.base_url)
        if not adaptive:
            client.limit = FixedLimit(32)
        messages = [{"role": "user", "content": "Write about Ada.\nTarget length: 150 words."}]
        async with client:
            results = await asyncio.gather(*(client.chat(messages) for _ in range(40)))
        assert all(r.text for r in results)
        return client.limit.refusals, hooks.windows, client

    fixed, _, _ = await run(adaptive=False)
    learnt, windows, client = await run(adaptive=True)
    print(f"429s: fixed window 32 -> {fixed}, adaptive -> {learnt}; windows {windows}")
    assert windows[0] == 32 and client.limit.narrowings >= 1
    assert max(windows[-20:]) <= 8  # it settled around the key's 4, probing one above at a time
    assert learnt * 3 <= fixed * 2
