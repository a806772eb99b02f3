"""Load helpers for the stress suite: threads of keep-alive clients, checked answers, timings."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from bookgen.acceptance.clients import client_headers
from bookgen.acceptance.server import ServeProcess, SimProcess

ROOT = Path(__file__).resolve().parents[2]
# Names of the submitting clients, one per submission (`itertools.count` is thread safe).
_submitters = itertools.count(1)


def _load_checks() -> ModuleType:
    """loadtests/checks.py: the same body checks the Locust users apply."""
    spec = importlib.util.spec_from_file_location(
        "bookgen_loadtest_checks", ROOT / "loadtests" / "checks.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checks = _load_checks()


def p95_target_ms() -> float:
    """The strictest route group's p95 target (thresholds generated from slo.yaml)."""
    path = ROOT / "loadtests" / "thresholds.json"
    if path.is_file():
        return min(float(v) for v in json.loads(path.read_text())["p95_ms"].values())
    from bookgen.slo.spec import load_spec

    spec = load_spec(ROOT / "slo.yaml")
    latency = spec.slo(spec.targets.api_latency.slo).latency
    assert latency is not None
    return float(latency.le) * 1000.0


@dataclass
class Running:
    server: ServeProcess
    sim: SimProcess

    @property
    def api(self) -> str:
        return self.server.url


@dataclass
class Sample:
    group: str
    started: float
    seconds: float
    status: int
    problem: str | None


@dataclass
class Outcome:
    samples: list[Sample] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sample: Sample) -> None:
        with self.lock:
            self.samples.append(sample)

    def problems(self) -> list[str]:
        return [f"{s.group}: {s.problem}" for s in self.samples if s.problem]

    def server_errors(self) -> int:
        return sum(s.status >= 500 or s.status == 0 for s in self.samples)

    def p(self, q: float, group: str | None = None, since: float = 0, until: float = 1e18) -> float:
        times = sorted(
            s.seconds
            for s in self.samples
            if (group is None or s.group == group) and since <= s.started < until
        )
        if not times:
            return math.nan
        return times[max(0, math.ceil(q * len(times)) - 1)] * 1000.0

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        span = max(s.started + s.seconds for s in self.samples) - min(
            s.started for s in self.samples
        )
        return len(self.samples) / span if span > 0 else 0.0


Request = Callable[[httpx.Client], tuple[str, httpx.Response, str | None]]


def health(c: httpx.Client) -> tuple[str, httpx.Response, str | None]:
    r = c.get("/health")
    return "health", r, checks.check_health(r.status_code, _json(r))


def status(c: httpx.Client) -> tuple[str, httpx.Response, str | None]:
    r = c.get("/api/v1/status")
    return "status", r, checks.check_status(r.status_code, _json(r))


def listing(c: httpx.Client) -> tuple[str, httpx.Response, str | None]:
    r = c.get("/api/v1/biographies", params={"page_size": 20})
    return "list", r, checks.check_list(r.status_code, _json(r))


def sources(c: httpx.Client) -> tuple[str, httpx.Response, str | None]:
    body = {"sources": [{"title": "Ada's Algorithm", "source_type": "book"}]}
    r = c.post("/api/v1/sources/validate", json=body)
    return "sources", r, checks.check_sources(r.status_code, _json(r), 1)


def metrics(c: httpx.Client) -> tuple[str, httpx.Response, str | None]:
    r = c.get("/metrics")
    return "metrics", r, checks.check_metrics(r.status_code, r.text)


def job_status(job_id: str) -> Request:
    def call(c: httpx.Client) -> tuple[str, httpx.Response, str | None]:
        r = c.get(f"/api/v1/biographies/{job_id}/status")
        return "job-status", r, checks.check_job_status(r.status_code, _json(r), job_id)

    return call


def submit(c: httpx.Client, chapters: int = 1, words: int = 1000) -> httpx.Response:
    return c.post(
        "/api/v1/biographies/generate",
        json={"character": "Ada Lovelace", "chapters": chapters, "total_words": words},
        # A client of its own per book: the server trusts the suite as its proxy, and the
        # rate limit is per client address.
        headers=client_headers(f"stress-{next(_submitters)}"),
    )


def _json(r: httpx.Response) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


def hammer(
    api: str,
    mix: list[Request],
    threads: int,
    seconds: float,
    max_requests: int,
    rate_per_thread: float | None = None,
) -> Outcome:
    """`threads` clients pick from `mix` until `seconds` pass or `max_requests` are sent."""
    outcome = Outcome()
    deadline = time.monotonic() + seconds
    budget = [max_requests]
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        pace = 1.0 / rate_per_thread if rate_per_thread else 0.0
        next_at = time.monotonic()
        headers = client_headers(f"hammer-{seed}")
        with httpx.Client(base_url=api, timeout=10.0, headers=headers) as client:
            while time.monotonic() < deadline:
                with lock:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                if pace:
                    next_at += pace
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                call = rnd.choice(mix)
                t0 = time.perf_counter()
                started = time.monotonic()
                try:
                    group, response, problem = call(client)
                    code = response.status_code
                except httpx.HTTPError as exc:
                    group, code, problem = getattr(call, "__name__", "?"), 0, repr(exc)
                outcome.add(Sample(group, started, time.perf_counter() - t0, code, problem))

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=seconds + 30)
    return outcome


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(value)
    return total
