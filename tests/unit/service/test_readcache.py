"""The read caches of the hot routes: an entry is served only while its version is current."""

from __future__ import annotations

import asyncio

import pytest

from bookgen.service.readcache import ReadCache


def test_an_entry_is_served_only_at_the_version_it_was_read_at() -> None:
    cache = ReadCache(8, ttl_s=60)
    cache.put("k", 3, b"body")
    assert cache.get("k", 3) == b"body"
    assert cache.get("k", 4) is None  # a local write moved the version
    assert cache.get("other", 3) is None


def test_entries_expire_unless_kept_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("bookgen.service.readcache.time.monotonic", lambda: now[0])
    cache = ReadCache(8, ttl_s=1.0)
    cache.put("young", 1, b"a")
    cache.put("finished", 1, b"b", forever=True)
    now[0] += 0.5
    assert cache.get("young", 1) == b"a"
    now[0] += 0.6  # another process may have written by now
    assert cache.get("young", 1) is None
    assert cache.get("finished", 1) == b"b"


def test_the_least_recently_used_entry_goes_first() -> None:
    cache = ReadCache(2, ttl_s=60)
    cache.put("a", 0, b"a")
    cache.put("b", 0, b"b")
    assert cache.get("a", 0) == b"a"
    cache.put("c", 0, b"c")
    assert len(cache) == 2
    assert cache.get("b", 0) is None
    assert cache.get("a", 0) == b"a" and cache.get("c", 0) == b"c"


async def test_concurrent_misses_share_one_read_and_failures_are_not_shared() -> None:
    cache = ReadCache(8, ttl_s=60)
    reads: list[str] = []
    gate = asyncio.Event()

    async def read() -> tuple[bytes, bool]:
        reads.append("read")
        await gate.wait()
        return b"body", False

    waiting = [asyncio.create_task(cache.fetch("k", 1, read, lambda: 1)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*waiting) == [b"body"] * 5
    assert reads == ["read"] and cache.get("k", 1) == b"body"

    failures = 0

    async def failing() -> tuple[bytes, bool]:
        nonlocal failures
        failures += 1
        await asyncio.sleep(0)
        raise LookupError("store down")

    results = await asyncio.gather(
        *(cache.fetch("f", 1, failing, lambda: 1) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, LookupError) for r in results) and failures == 3


async def test_a_read_overtaken_by_a_local_write_is_not_kept() -> None:
    cache = ReadCache(8, ttl_s=60)
    version = [1]

    async def read() -> tuple[bytes, bool]:
        version[0] += 1  # a write commits while we read
        return b"old", False

    assert await cache.fetch("k", 1, read, lambda: version[0]) == b"old"
    assert cache.get("k", 1) is None and cache.get("k", 2) is None
