"""Every API route benchmarked against a real server; each asserts its p95 against the target."""

from __future__ import annotations

import math
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from perf_support import RESULTS, target_p95_ms

pytestmark = pytest.mark.performance
ROUNDS = 200


def p95(data: list[float]) -> float:
    ordered = sorted(data)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def measure(
    benchmark: Any,
    group: str,
    call: Callable[..., httpx.Response],
    expect: int,
    check: Callable[[httpx.Response], bool] = lambda r: True,
    rounds: int = ROUNDS,
    setup: Callable[[], tuple[tuple[Any, ...], dict[str, Any]]] | None = None,
) -> None:
    """Benchmark `call`, check every answer, and assert p95 < the group's target."""
    bad: list[str] = []
    timings: list[float] = []

    def checked(*args: Any) -> None:
        t0 = time.perf_counter()
        response = call(*args)
        timings.append(time.perf_counter() - t0)
        if response.status_code != expect or not check(response):
            bad.append(f"{response.status_code} {response.text[:100]}")

    benchmark.group = "api"
    if setup is None:
        benchmark.pedantic(checked, rounds=rounds, iterations=1, warmup_rounds=5)
    else:
        benchmark.pedantic(checked, setup=setup, rounds=rounds, warmup_rounds=0)
    if benchmark.disabled:  # --benchmark-disable (or xdist): measure the rounds ourselves
        for _ in range(rounds):
            args, _kwargs = setup() if setup is not None else ((), {})
            checked(*args)
    data = timings[-rounds:]
    figures: dict[str, Any] = {
        "group": group,
        "rounds": len(data),
        "mean": statistics.fmean(data) * 1000,
        "p50": statistics.median(data) * 1000,
        "p95": p95(data) * 1000,
        "max": max(data) * 1000,
        "target": target_p95_ms(group),
    }
    benchmark.extra_info.update({"p95_ms": figures["p95"], "target_ms": figures["target"]})
    RESULTS.append(figures)
    assert not bad, f"{group}: {len(bad)} wrong answers, first: {bad[0]}"
    assert figures["p95"] < figures["target"], f"{group}: {figures}"


def test_health(benchmark: Any, http: httpx.Client) -> None:
    measure(
        benchmark, "health", lambda: http.get("/health"), 200,
        lambda r: r.json()["status"] == "healthy",
    )  # fmt: skip


def test_ready(benchmark: Any, http: httpx.Client) -> None:
    measure(benchmark, "ready", lambda: http.get("/ready"), 200)


def test_status(benchmark: Any, http: httpx.Client) -> None:
    measure(
        benchmark, "status", lambda: http.get("/api/v1/status"), 200,
        lambda r: r.json()["status"] == "operational",
    )  # fmt: skip


def test_generate(benchmark: Any, http: httpx.Client) -> None:
    def submit() -> httpx.Response:
        return http.post(
            "/api/v1/biographies/generate",
            json={"character": "Grace Hopper", "chapters": 1, "total_words": 1000},
            headers={"X-Client-Id": uuid.uuid4().hex},
        )

    measure(benchmark, "generate", submit, 202, lambda r: "job_id" in r.json(), rounds=60)


def test_job_status(benchmark: Any, http: httpx.Client, finished_job: str) -> None:
    measure(
        benchmark, "job-status",
        lambda: http.get(f"/api/v1/biographies/{finished_job}/status"), 200,
        lambda r: r.json()["job_id"] == finished_job,
    )  # fmt: skip


def test_download(benchmark: Any, http: httpx.Client, finished_job: str) -> None:
    measure(
        benchmark, "download",
        lambda: http.get(f"/api/v1/biographies/{finished_job}/download"), 200,
        lambda r: r.headers["content-type"].startswith("text/plain") and len(r.text) > 1000,
    )  # fmt: skip


def test_list(benchmark: Any, http: httpx.Client, finished_job: str) -> None:
    measure(
        benchmark, "list", lambda: http.get("/api/v1/biographies", params={"page_size": 20}), 200,
        lambda r: isinstance(r.json()["items"], list),
    )  # fmt: skip


def test_cancel(benchmark: Any, http: httpx.Client) -> None:
    def new_job() -> tuple[tuple[Any, ...], dict[str, Any]]:
        response = http.post(
            "/api/v1/biographies/generate",
            json={"character": "Emmy Noether", "chapters": 1, "total_words": 1000},
            headers={"X-Client-Id": uuid.uuid4().hex},
        )
        return (response.json()["job_id"],), {}

    measure(
        benchmark, "cancel",
        lambda job_id: http.post(f"/api/v1/biographies/{job_id}/cancel"),
        200, lambda r: r.json()["status"] == "cancelled", rounds=40, setup=new_job,
    )  # fmt: skip


def test_sources(benchmark: Any, http: httpx.Client) -> None:
    body = {
        "sources": [
            {
                "url": "https://en.wikipedia.org/wiki/Ada_Lovelace",
                "title": "Ada",
                "source_type": "web",
            },
            {"title": "Ada's Algorithm", "author": "James Essinger", "source_type": "book"},
        ],
        "check_accessibility": False,
    }
    measure(
        benchmark, "sources", lambda: http.post("/api/v1/sources/validate", json=body), 200,
        lambda r: r.json()["total_sources"] == 2,
    )  # fmt: skip


def test_metrics(benchmark: Any, http: httpx.Client) -> None:
    measure(
        benchmark, "metrics", lambda: http.get("/metrics"), 200,
        lambda r: "bookgen_http_requests_total" in r.text, rounds=100,
    )  # fmt: skip
