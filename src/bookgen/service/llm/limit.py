"""How many requests one process has at the provider at once, learnt from the provider's 429s.

A provider's limits (requests and tokens per minute, concurrent streams) belong to the API key,
are shared by every process using it, and are rarely published as a concurrency figure, so a
fixed number per process is wrong both ways: too low and a paid key idles while books wait, too
high and a small key answers most requests with 429. So the window is additive-increase,
multiplicative-decrease, as TCP's congestion window is:

- it starts at the ceiling (`llm_max_concurrency`): a refused request is cheap (not billed, and
  it says when to come back), a slow start would cost every book minutes;
- a 429 narrows it to 9/10 of what was in flight, once per round: the refusals that answer one
  burst count once, and only a request sent after the last narrowing can narrow it again. Gentler
  than TCP's halving because a refusal costs little (one short wait) and a stream limit is met
  exactly: with 3/4 a key of 64 streams ran 104 books/h, with 9/10 106, against 109 for a
  client told the limit;
- a success widens it by one, only while the window was what held requests back, so an idle
  process does not drift back to the ceiling and burst again.

The ceiling stays a hard bound (memory, connections, a provider that queues instead of refusing).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable

DECREASE = 0.9


class AdaptiveLimit:
    """An asyncio semaphore whose size follows the provider's answers; see the module doc."""

    def __init__(self, ceiling: int, *, on_change: Callable[[int], None] | None = None) -> None:
        if ceiling < 1:
            raise ValueError("ceiling must be at least 1")
        self.ceiling = ceiling
        self._window = float(ceiling)
        self._in_flight = 0
        self._round = 0
        self._waiters: deque[asyncio.Future[int]] = deque()
        self._on_change = on_change
        # 429s met, and how many of them narrowed the window; tests and benchmarks read them
        self.refusals = 0
        self.narrowings = 0
        self._changed()  # the starting window is reported too

    @property
    def window(self) -> int:
        return max(1, math.floor(self._window))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def acquire(self) -> int:
        """Wait for a slot; returns the round it was granted in (pass it to `refused`)."""
        if not self._waiters and self._in_flight < self.window:
            self._in_flight += 1
            return self._round
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted as it was cancelled: the slot goes to the next one
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self._in_flight -= 1
        self._grant()

    def succeeded(self) -> None:
        """A request came back answered: widen by one if the window was full."""
        full = self._waiters or self._in_flight >= self.window
        if full and self._window < self.ceiling:
            self._window = min(float(self.ceiling), self._window + 1.0)
            self._changed()

    def refused(self, granted_round: int) -> None:
        """The provider answered 429 to a request granted in `granted_round`."""
        self.refusals += 1
        if granted_round != self._round:
            return  # sent before the last narrowing: that narrowing already answered it
        self._round += 1
        self._window = max(1.0, math.floor(min(self._window, self._in_flight) * DECREASE))
        self.narrowings += 1
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.window)

    def _grant(self) -> None:
        while self._waiters and self._in_flight < self.window:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(self._round)
