"""Response bodies of the hottest read routes, kept while the store says they are current.

An entry carries the store version it was read at (`Store.version` for lists,
`Store.job_version(id)` for one job) and an expiry. The store bumps those versions after every
local write commits, so a process never serves its own stale writes; what other processes write
(several workers on one database) shows here once the entry expires, within `ttl_s`.
A reader stores what it read only if the version did not move while it was reading, and
concurrent misses for one key at one version share one read (no stampede when an entry expires).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable

LIST_TTL_S = 1.0
JOB_TTL_S = 1.0
LIST_ENTRIES = 256
JOB_ENTRIES = 4096


class ReadCache:
    """A bounded LRU of bodies, each valid while its version stamp is current and it is young."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._entries: OrderedDict[Hashable, tuple[int, float, bytes]] = OrderedDict()
        self._reading: dict[tuple[Hashable, int], asyncio.Future[bytes]] = {}

    async def fetch(
        self,
        key: Hashable,
        version: int,
        read: Callable[[], Awaitable[tuple[bytes, bool]]],
        current: Callable[[], int],
    ) -> bytes:
        """The body for `key` at `version`: cached, or from a read already under way, or read.

        `read()` returns (body, keep forever); `current()` is the version now.
        """
        body = self.get(key, version)
        if body is not None:
            return body
        flight = self._reading.get((key, version))
        if flight is not None:
            try:
                return await asyncio.shield(flight)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not flight.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The reader failed or went away: read for ourselves, below.
        flight = asyncio.get_running_loop().create_future()
        self._reading[(key, version)] = flight
        try:
            body, forever = await read()
        except BaseException:
            flight.cancel()
            raise
        finally:
            if self._reading.get((key, version)) is flight:
                del self._reading[(key, version)]
        flight.set_result(body)
        if current() == version:  # nothing was written here while we read
            self.put(key, version, body, forever=forever)
        return body

    def get(self, key: Hashable, version: int) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != version or time.monotonic() >= entry[1]:
            return None
        self._entries.move_to_end(key)
        return entry[2]

    def put(self, key: Hashable, version: int, body: bytes, *, forever: bool = False) -> None:
        expires = math.inf if forever else time.monotonic() + self.ttl_s
        self._entries[key] = (version, expires, body)
        self._entries.move_to_end(key)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class ReadCaches:
    """One per store (built with it in the lifespan): list pages and job statuses."""

    def __init__(self) -> None:
        self.pages = ReadCache(LIST_ENTRIES, LIST_TTL_S)
        self.jobs = ReadCache(JOB_ENTRIES, JOB_TTL_S)
