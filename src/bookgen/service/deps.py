"""Dependencies of the routes, as `Annotated` aliases, and the per-client submission limiter.

The dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in a worker
thread, a thread hop per dependency per request on the hottest routes.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Annotated

from fastapi import Depends, Request
from limits import parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from bookgen.service.hooks import Hooks
from bookgen.service.jobs import Executor
from bookgen.service.settings import Settings
from bookgen.service.store import Store

CLIENT_HEADER = "X-Client-Id"
STORAGE_WARNING_INTERVAL_S = 60.0

logger = logging.getLogger("bookgen.ratelimit")


class SubmissionLimiter:
    """Per-client limit on job submissions: the `limits` library, moving window.

    The storage is a `limits` async storage URI. `async+memory://` counts per process, so N
    workers allow N times the rate; `async+redis://host:6379` makes every worker and host count
    against one limit. If the shared storage fails, submissions go ahead (the limit protects
    the service; an outage of its storage must not become an outage of the service) and a
    warning is logged at most once a minute.
    """

    def __init__(self, rate: str, storage_uri: str = "async+memory://") -> None:
        self.item = parse(rate)
        options = {"implementation": "redispy"} if "redis" in storage_uri.split(":", 1)[0] else {}
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage_uri, **options))
        self._warned_at = -math.inf

    async def retry_after(self, client: str) -> int | None:
        """None if the submission may go ahead, else seconds until it may."""
        try:
            if await self.limiter.hit(self.item, client):
                return None
            stats = await self.limiter.get_window_stats(self.item, client)
        except Exception as error:  # any storage failure: fail open
            now = time.monotonic()
            if now - self._warned_at >= STORAGE_WARNING_INTERVAL_S:
                self._warned_at = now
                logger.warning(
                    "rate-limit storage failed; submissions are not limited",
                    extra={"error_type": type(error).__name__},
                )
            return None
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


async def _runtime(request: Request) -> Executor:
    runtime: Executor = request.app.state.runtime
    return runtime


async def _hooks(request: Request) -> Hooks:
    hooks: Hooks = request.app.state.hooks
    return hooks


async def _limiter(request: Request) -> SubmissionLimiter:
    limiter: SubmissionLimiter = request.app.state.submission_limiter
    return limiter


SettingsDep = Annotated[Settings, Depends(_settings)]
StoreDep = Annotated[Store, Depends(_store)]
RuntimeDep = Annotated[Executor, Depends(_runtime)]
HooksDep = Annotated[Hooks, Depends(_hooks)]
LimiterDep = Annotated[SubmissionLimiter, Depends(_limiter)]
ClientKeyDep = Annotated[str, Depends(client_key)]
