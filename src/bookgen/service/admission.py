"""Admission of submissions, decided in memory so that refusing stays cheap under overload.

A submission is refused when the queue is full or its principal already has its cap of queued +
running books. Both figures are kept in this process and reconciled with the store every
`admission_refresh_s`: the queue length from the executor's snapshot (refreshed by its own
poll), active books per owner from one grouped query. Between two reconciliations the process
adds what it admitted itself, including submissions still being written, so a burst cannot all
pass the check before the first of them is stored. Refusals therefore never wait for the store's
write path (a single writer on SQLite), and admitted submissions do not queue behind them.

What other processes admit shows here at the next reconciliation, so with N API processes a cap
may be overshot by what the others admit within one interval; the store stays the authority.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bookgen.service.auth import Principal
from bookgen.service.store import Store

logger = logging.getLogger("bookgen.admission")

QUOTA_RETRY_AFTER_S = 30
QUEUE_FULL_RETRY_AFTER_S = 30
# Spend per principal changes as books are written; a minute-scale figure is enough for a gauge
# and keeps the full-table sum off the database's back.
SPEND_REFRESH_S = 15.0
# Label values of the spend gauge: key names (admin-managed, so bounded), at most this many;
# the rest and the keyless callers are summed into two catch-all values no key name can take.
SPEND_PRINCIPALS = 100
ANONYMOUS = "(anonymous)"
OTHERS = "(other)"


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # queue_full | quota
    detail: str
    retry_after: int


class Admission:
    def __init__(
        self, store: Store, max_queue: int, queued: Callable[[], int], refresh_s: float
    ) -> None:
        self.store = store
        self.max_queue = max_queue
        self._queued = queued  # jobs waiting, as the executor last counted them (with its own)
        self.refresh_s = refresh_s
        self._base: dict[str | None, int] = {}  # active books per owner at the last refresh
        self._since: Counter[str] = Counter()  # admitted and stored here since then
        self._writing: Counter[str] = Counter()  # admitted, being stored
        self._spend: dict[str | None, float] = {}
        self._spend_due = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        try:
            await self.refresh()
        except Exception:
            logger.warning("admission counts could not be read; retrying", exc_info=True)
        self._task = asyncio.create_task(self._loop(), name="bookgen-admission")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except Exception:
                logger.warning("admission refresh failed", exc_info=True)

    async def refresh(self, *, spend: bool = False) -> None:
        """Reconcile with the store; the spend figures too when due (or `spend`)."""
        base = await self.store.active_by_owner()
        # Forgetting local admissions only now may miss one stored while the query ran
        # (counted low until the next refresh); clearing before would count it twice.
        self._base, self._since = base, Counter()
        loop = asyncio.get_running_loop()
        if spend or loop.time() >= self._spend_due:
            self._spend_due = loop.time() + SPEND_REFRESH_S
            self._spend = await self.store.spend_by_owner()

    def active(self, owner: str) -> int:
        return self._base.get(owner, 0) + self._since[owner] + self._writing[owner]

    def check(self, principal: Principal) -> Refusal | None:
        """Why a submission by `principal` is refused now, or None (sync: no store access)."""
        waiting = self._queued() + self._writing.total()
        if waiting >= self.max_queue:
            detail = f"job queue is full ({self.max_queue} pending)"
            return Refusal("queue_full", detail, QUEUE_FULL_RETRY_AFTER_S)
        cap = principal.quota
        if cap is not None and self.active(principal.name) >= cap:
            detail = f"{cap} books queued or running is this caller's quota; wait for one to end"
            return Refusal("quota", detail, QUOTA_RETRY_AFTER_S)
        return None

    @contextlib.contextmanager
    def admitting(self, owner: str) -> Iterator[None]:
        """Count a submission while it is stored (call right after a `check` that passed)."""
        self._writing[owner] += 1
        stored = False
        try:
            yield
            stored = True
        finally:
            self._writing[owner] -= 1
            if self._writing[owner] <= 0:
                del self._writing[owner]
            if stored:
                self._since[owner] += 1

    def spend_by_principal(self) -> dict[str, float]:
        """USD spent per principal, for the spend gauge: bounded label values."""
        named: dict[str, float] = {}
        anonymous = 0.0
        for owner, usd in self._spend.items():
            if owner is None or owner.startswith("ip:"):
                anonymous += usd
            else:
                named[owner] = usd
        top = sorted(named.items(), key=lambda item: (-item[1], item[0]))
        result = dict(top[:SPEND_PRINCIPALS])
        result[OTHERS] = sum(usd for _, usd in top[SPEND_PRINCIPALS:])
        result[ANONYMOUS] = anonymous
        return result
