"""What the routes use of the app: its services, the caller's key, the submission limiter.

The app-wide services (settings, store, runtime, ...) are read from `app.state` by plain calls,
not declared as dependencies: FastAPI resolves every dependency on every request, which cost
more CPU than the lookup it wraps (~20 µs each, five of them on a submission). A dependency is
kept where it decides something: the caller's principal (a 401 comes before body validation).
Dependencies are `async def` on purpose: FastAPI runs a plain `def` one in a worker thread.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from typing import Annotated

from fastapi import Depends, Request
from limits import parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from bookgen.service.admission import Admission
from bookgen.service.auth import Principal, current_principal
from bookgen.service.hooks import Hooks
from bookgen.service.jobs import Executor
from bookgen.service.settings import Settings
from bookgen.service.store import Store

STORAGE_WARNING_INTERVAL_S = 60.0

logger = logging.getLogger("bookgen.ratelimit")


class LocalMovingWindow:
    """A moving-window limit counted in this process: at most `limit` hits per `window_s`.

    Plain synchronous code on the event loop (no lock, no await): a hit costs microseconds.
    Each key keeps at most `limit` timestamps; idle keys are swept when there are many.
    """

    SWEEP_AT = 10_000

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, collections.deque[float]] = {}
        self._sweep_at = self.SWEEP_AT

    def hit(self, key: str) -> int | None:
        """None if allowed (and counted), else whole seconds until it would be."""
        now = time.monotonic()
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self._sweep_at:
                self._sweep(now)
            hits = self._hits[key] = collections.deque(maxlen=max(1, self.limit))
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if len(hits) < self.limit:
            hits.append(now)
            return None
        return max(1, math.ceil(hits[0] + self.window_s - now))

    def _sweep(self, now: float) -> None:
        cutoff = now - self.window_s
        self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > cutoff}
        self._sweep_at = max(self.SWEEP_AT, 2 * len(self._hits))


class SubmissionLimiter:
    """Per-principal limit on job submissions: the `limits` library, moving window.

    The storage is a `limits` async storage URI. `async+memory://` counts per process, so N
    workers allow N times the rate; `async+redis://host:6379` makes every worker and host count
    against one limit. If the shared storage fails, submissions go ahead (the limit protects
    the service; an outage of its storage must not become an outage of the service) and a
    warning is logged at most once a minute.
    """

    def __init__(self, rate: str, storage_uri: str = "async+memory://") -> None:
        self.item = parse(rate)
        scheme = storage_uri.split(":", 1)[0]
        # In one process the window is kept here: `limits`' memory storage holds a key's lock
        # across a thread hop while it expires entries, so under a burst every hit on a busy
        # key waited for a thread (refusals took hundreds of ms).
        self.local = LocalMovingWindow(self.item.amount, self.item.get_expiry())
        self.limiter: MovingWindowRateLimiter | None = None
        if scheme not in ("memory", "async+memory"):
            options = {"implementation": "redispy"} if "redis" in scheme else {}
            self.limiter = MovingWindowRateLimiter(storage_from_string(storage_uri, **options))
        self._warned_at = -math.inf

    async def retry_after(self, client: str) -> int | None:
        """None if the submission may go ahead, else seconds until it may."""
        if self.limiter is None:
            return self.local.hit(client)
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
    """What the limits count against: the caller's principal (a key's name, or without auth
    its address after trusted proxy hops), never a header the client may choose."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        principal = await current_principal(request)
    return principal.name


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def runtime_of(request: Request) -> Executor:
    runtime: Executor = request.app.state.runtime
    return runtime


def hooks_of(request: Request) -> Hooks:
    hooks: Hooks = request.app.state.hooks
    return hooks


def limiter_of(request: Request) -> SubmissionLimiter:
    limiter: SubmissionLimiter = request.app.state.submission_limiter
    return limiter


def admission_of(request: Request) -> Admission:
    admission: Admission = request.app.state.admission
    return admission


ClientKeyDep = Annotated[str, Depends(client_key)]
