"""A circuit breaker for the LLM provider, one per client (per process and event loop).

`threshold` retryable failures in a row open it. While it is open no call goes out: calls wait
at `enter()` (they are neither sent nor failed) and the runtimes take no new work. After
`open_s` it is half-open: exactly one call goes through as the probe; its success closes the
breaker and releases every waiting call, its failure opens it for another `open_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class BreakerOpen(Exception):
    """The deadline passed while the breaker stayed open."""


class CircuitBreaker:
    def __init__(
        self,
        threshold: int,
        open_s: float,
        *,
        on_change: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.open_s = open_s
        self._on_change = on_change or (lambda _state: None)
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe = False
        self._changed = asyncio.Event()

    # --- state --------------------------------------------------------------------------
    @property
    def state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if self._clock() - self._opened_at < self.open_s:
            return OPEN
        return HALF_OPEN

    def accepting(self) -> bool:
        """Whether a runtime should take new work now (closed, or a probe is wanted)."""
        state = self.state
        return state == CLOSED or (state == HALF_OPEN and not self._probe)

    def reopens_in(self) -> float:
        """Seconds until the breaker lets a probe through (0 when it would now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.open_s - self._clock())

    async def changed(self, timeout_s: float) -> None:
        """Return when the state changes, when it may have turned half-open, or after
        `timeout_s`, whichever is first."""
        wait = timeout_s
        if self.state == OPEN:
            wait = min(wait, self.reopens_in() + 0.001)
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await changed.wait()

    # --- calls --------------------------------------------------------------------------
    async def enter(self, deadline: float) -> bool:
        """Wait until a call may go out; True when it is the half-open probe. `deadline` is on
        this breaker's clock; past it, `BreakerOpen`."""
        while True:
            state = self.state
            if state == CLOSED:
                return False
            if state == HALF_OPEN and not self._probe:
                self._probe = True
                self._on_change(HALF_OPEN)
                return True
            now = self._clock()
            if now >= deadline:
                raise BreakerOpen
            await self.changed(deadline - now)

    def success(self, probe: bool) -> None:
        """The provider answered (any answer that is not a retryable failure)."""
        self._failures = 0
        if probe:
            self._probe = False
        if self._opened_at is not None:
            self._opened_at = None
            self._on_change(CLOSED)
            self._wake()

    def failure(self, probe: bool) -> None:
        """A retryable failure (5xx, 408, timeout, connection, a stream cut short)."""
        self._failures += 1
        if probe:
            self._probe = False
        if probe or (self._opened_at is None and self._failures >= self.threshold):
            self._opened_at = self._clock()
            self._on_change(OPEN)
            self._wake()

    def neutral(self, probe: bool) -> None:
        """The call ended without telling whether the provider is up (cancelled, or a rate
        limit the provider timed for us): let another call probe."""
        if probe:
            self._probe = False
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
