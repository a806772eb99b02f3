"""The read caches of the hot routes: an entry is served only while its version is current."""

from __future__ import annotations

import pytest

from bookgen.service import readcache
from bookgen.service.readcache import ReadCache


def test_an_entry_is_served_only_at_the_version_it_was_read_at() -> None:
    cache = ReadCache(8, ttl_s=60)
    cache.put("k", 3, b"body")
    assert cache.get("k", 3) == b"body"
    assert cache.get("k", 4) is None  # a local write moved the version
    assert cache.get("other", 3) is None


def test_entries_expire_unless_kept_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(readcache.time, "monotonic", lambda: now[0])
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
