"""The in-process moving window and the in-memory admission counts."""

from __future__ import annotations

import pytest

from bookgen.service.admission import ANONYMOUS, OTHERS, Admission
from bookgen.service.auth import Principal
from bookgen.service.deps import LocalMovingWindow


def test_moving_window_allows_the_limit_then_says_when(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("bookgen.service.deps.time.monotonic", lambda: now[0])
    window = LocalMovingWindow(3, 60.0)
    hits = []
    for _ in range(3):
        hits.append(window.hit("a"))
        now[0] += 10.0
    assert hits == [None, None, None]
    assert window.hit("a") == 30  # the first hit (t=1000) leaves the window at t=1060
    assert window.hit("b") is None, "another key has its own window"
    now[0] = 1059.5
    assert window.hit("a") == 1
    now[0] = 1060.5  # the first hit left the window: one more is allowed, then refused again
    assert window.hit("a") is None
    assert window.hit("a") == 10


def test_moving_window_sweeps_idle_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr("bookgen.service.deps.time.monotonic", lambda: now[0])
    window = LocalMovingWindow(1, 10.0)
    window.SWEEP_AT = 4
    window._sweep_at = 4
    for n in range(4):
        window.hit(f"k{n}")
    now[0] = 100.0
    window.hit("fresh")
    assert set(window._hits) == {"fresh"}


class _Store:
    async def active_by_owner(self) -> dict[str | None, int]:
        return {"alice": 2}

    async def spend_by_owner(self) -> dict[str | None, float]:
        return {"alice": 2.0, "bob": 1.0, "ip:127.0.0.1": 0.5, None: 0.25}


async def test_admission_counts_what_it_admits_until_the_store_says() -> None:
    queued = [0]
    admission = Admission(_Store(), 3, lambda: queued[0], 1.0)  # type: ignore[arg-type]
    await admission.refresh(spend=True)
    alice = Principal("alice", quota=3)
    assert admission.check(alice) is None
    with admission.admitting("alice"):
        refusal = admission.check(alice)
        assert refusal is not None and refusal.reason == "quota"
    refusal = admission.check(alice)
    assert refusal is not None and refusal.reason == "quota", "stored, counted until refresh"
    await admission.refresh()
    assert admission.active("alice") == 2
    queued[0] = 3
    refusal = admission.check(Principal("carol"))
    assert refusal is not None and refusal.reason == "queue_full" and refusal.retry_after > 0
    spend = admission.spend_by_principal()
    assert spend == {"alice": 2.0, "bob": 1.0, OTHERS: 0.0, ANONYMOUS: 0.75}


async def test_a_failed_submission_frees_its_place() -> None:
    admission = Admission(_Store(), 10, lambda: 0, 1.0)  # type: ignore[arg-type]
    await admission.refresh()
    with pytest.raises(RuntimeError), admission.admitting("alice"):
        raise RuntimeError("store down")
    assert admission.active("alice") == 2
