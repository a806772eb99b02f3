"""Dependencies of the routes, as `Annotated` aliases, and the per-client submission limiter.

The dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker
thread, a thread hop per dependency per request on the hottest routes.
"""

from __future__ import annotations

import math
import time
from typing import Annotated

from fastapi import Depends, Request
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from bookgen.service.hooks import Hooks
from bookgen.service.jobs import JobRuntime
from bookgen.service.settings import Settings
from bookgen.service.store import Store

CLIENT_HEADER = "X-Client-Id"


class SubmissionLimiter:
    """Per-client limit on job submissions (the `limits` library, moving window, in memory)."""

    def __init__(self, rate: str) -> None:
        self.item = parse(rate)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def retry_after(self, client: str) -> int | None:
        """None if the submission may go ahead, else seconds until it may."""
        if self.limiter.hit(self.item, client):
            return None
        stats = self.limiter.get_window_stats(self.item, client)
        return max(1, math.ceil(stats.reset_time - time.time()))


async def client_key(request: Request) -> str:
    header = request.headers.get(CLIENT_HEADER)
    if header:
        return "id:" + header[:128]
    return "ip:" + (request.client.host if request.client else "unknown")


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def _runtime(request: Request) -> JobRuntime:
    runtime: JobRuntime = request.app.state.runtime
    return runtime


async def _hooks(request: Request) -> Hooks:
    hooks: Hooks = request.app.state.hooks
    return hooks


async def _limiter(request: Request) -> SubmissionLimiter:
    limiter: SubmissionLimiter = request.app.state.submission_limiter
    return limiter


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[Store, Depends(_store)]
RuntimeDep = Annotated[JobRuntime, Depends(_runtime)]
HooksDep = Annotated[Hooks, Depends(_hooks)]
LimiterDep = Annotated[SubmissionLimiter, Depends(_limiter)]
ClientKeyDep = Annotated[str, Depends(client_key)]
