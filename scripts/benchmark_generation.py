#!/usr/bin/env python
"""Generation benchmark: real books through a real BookGen server and the quota-limited sim.

Starts the simulated model as its own process (`bookgen sim-llm`, with its per-key quotas:
requests and tokens per minute, concurrent streams) and one server process (`uvicorn
bookgen.asgi:build_app --factory`, one worker, a fresh SQLite store in a temp directory) pointed
at it, submits jobs over HTTP and follows them through the status route. Nothing is
extrapolated: every figure is a finished book's server-side `completed_at - created_at` or a
batch's wall time, and the tokens the model generated are the model's own count (its /metrics).

Measures
  1. one book: wall time of one 20-chapter, 51,000-word book;
  2. throughput: completed books per hour with N concurrent jobs on one worker (--jobs N; a batch
     of --books M jobs, M = N by default, all submitted at once, timed until the last one ends);
  3. with --api-only instead: latency of every API route against the started server, idle and while
     N books are being written.
Each generation figure is printed beside the bound the model itself sets, the largest of
  - tokens per minute: tokens needed / tpm_limit (tokens needed = the prompts sent plus the
    completion tokens the books keep: the least the quota must let through),
  - requests per minute: requests sent / rpm_limit,
  - concurrent streams: completion tokens / (max_concurrent_streams x stream rate),
  - the critical path: outline, then the longest section, at the stream rate (every section
    starting the moment its outline entry has streamed in, no slot limit),
with the ratio measured / bound (1.0 is the bound itself), and the token efficiency: completion
tokens kept in the books / completion tokens the model generated (retries, length continuations
and trims included; a stream we end early counts what it sent). It also prints the pipeline's
schedule bound (the pipeline's own order on its configured slots at exactly the stream rate),
which tells a scheduling limit (our configuration) from an overhead one.

Goals come from slo.yaml (`targets.generation_benchmark`: `bound_ratio_max`,
`token_efficiency_min`, required by the spec), and the book-time and throughput targets from the
same file, never from constants here.

Usage
  python scripts/benchmark_generation.py                 # full run, several minutes
  python scripts/benchmark_generation.py --quick         # 10x stream rate, smaller batch: ~1 min
  python scripts/benchmark_generation.py --jobs 8 --save bench.json
  python scripts/benchmark_generation.py --api-only
Extra server settings: --set KEY=VALUE (a BOOKGEN_ setting, e.g. --set llm_max_concurrency=256;
sim__* settings go to the model too, e.g. --set sim__tpm_limit=200000).
The machine may be shared: the script prints the load average and the server's CPU use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from bookgen.acceptance.generation import book_shape, critical_path, schedule_bound
from bookgen.acceptance.project import find_project
from bookgen.acceptance.server import SimProcess
from bookgen.service.llm.sim import completion_tokens
from bookgen.service.settings import Settings
from bookgen.stack.ports import free_port
from bookgen.stack.process import Component

GENERATE = "/api/v1/biographies/generate"


# --- the server under test ------------------------------------------------------------------


@contextlib.contextmanager
def patched_environ(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Server:
    """One BookGen server process (one worker) with the built-in simulated model."""

    def __init__(self, overrides: dict[str, str], workdir: Path, app: str, llm_url: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKGEN_")}
        env.update(
            {
                "BOOKGEN_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
                # One client submits every book (limits count per client address): no limit.
                "BOOKGEN_RATE_LIMIT": "100000/minute",
                "BOOKGEN_MAX_QUEUE": "1000",
                "BOOKGEN_LLM_BASE_URL": llm_url,
            }
        )
        env.update({f"BOOKGEN_{k.upper()}": v for k, v in overrides.items()})
        self.env = env
        with patched_environ(env):
            self.settings = Settings()
        self.component = Component(
            "server",
            [
                sys.executable,
                "-m",
                "uvicorn",
                app,
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            workdir / "server.log",
            f"{self.url}/ready",
            env,
            inherit_env=False,
        )
        self.component.start()
        assert self.component.pid is not None
        self.pid = self.component.pid
        self.ps = psutil.Process(self.pid)

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        await asyncio.to_thread(self.component.wait_ready, timeout_s)

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss_mb(self) -> float:
        return float(self.ps.memory_info().rss) / 1e6

    def stop(self) -> None:
        self.component.stop(grace_s=20)


# --- bounds -----------------------------------------------------------------------------------


# --- jobs over HTTP ----------------------------------------------------------------------------


@dataclass
class JobResult:
    job_id: str
    status: str
    seconds: float  # completed_at - created_at (server clock)
    output_tokens: int
    input_tokens: int
    words: int
    cost_usd: float


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def submit(client: httpx.AsyncClient, chapters: int, words: int, name: str) -> str:
    body = {"character": name, "chapters": chapters, "total_words": words}
    for _ in range(20):
        r = await client.post(GENERATE, json=body)
        if r.status_code == 202:
            job_id: str = r.json()["job_id"]
            return job_id
        if r.status_code != 429:
            raise RuntimeError(f"submit failed: {r.status_code} {r.text[:200]}")
        await asyncio.sleep(float(r.headers.get("retry-after", "1")))
    raise RuntimeError("submit kept being refused")


async def follow(
    client: httpx.AsyncClient, job_id: str, timeout_s: float, poll_s: float = 1.0
) -> JobResult:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = await client.get(f"/api/v1/biographies/{job_id}/status")
        r.raise_for_status()
        data = r.json()
        if data["status"] in ("completed", "failed", "cancelled"):
            seconds = (_ts(data["completed_at"]) - _ts(data["created_at"])).total_seconds()
            if data["status"] != "completed":
                print(f"  job {job_id[:8]} ended {data['status']}: {data.get('error')}")
            return JobResult(
                job_id,
                data["status"],
                seconds,
                int(data["tokens"]["output"]),
                int(data["tokens"]["input"]),
                int(data.get("words_written") or 0),
                float(data.get("cost_usd") or 0.0),
            )
        await asyncio.sleep(poll_s)
    raise TimeoutError(f"job {job_id} not finished within {timeout_s:.0f}s")


@dataclass
class Phase:
    wall_s: float
    server_cpu_s: float
    load_before: float
    load_after: float
    server_rss_mb: float

    @property
    def server_cores(self) -> float:
        return self.server_cpu_s / self.wall_s if self.wall_s else 0.0


@dataclass
class Figures:
    name: str
    measured: float
    bound: float
    ratio: float
    unit: str
    goal: str
    met: bool
    detail: dict[str, Any] = field(default_factory=dict)


async def run_books(
    server: Server, jobs: int, chapters: int, words: int, timeout_s: float
) -> tuple[list[JobResult], Phase]:
    load0 = os.getloadavg()[0]
    cpu0 = server.cpu_seconds()
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=server.url, timeout=30.0) as client:
        ids = [await submit(client, chapters, words, f"Benchmark Person {i}") for i in range(jobs)]
        results = await asyncio.gather(*(follow(client, j, timeout_s) for j in ids))
    wall = time.monotonic() - started
    phase = Phase(wall, server.cpu_seconds() - cpu0, load0, os.getloadavg()[0], server.rss_mb())
    return list(results), phase


# --- goals, the model's own counters, the quota's bounds ------------------------------------


@dataclass(frozen=True)
class Goals:
    """From slo.yaml: the benchmark's goals and the two targets they sit beside."""

    bound_ratio_max: float
    token_efficiency_min: float
    book_time_s: float
    min_books_per_hour: float
    source: str


def load_goals(slo: Path | None = None) -> Goals:
    """`targets.generation_benchmark` of slo.yaml, and the book-time and throughput targets."""
    from bookgen.slo.spec import load_spec

    path = slo or find_project().slo
    targets = load_spec(path).targets
    return Goals(
        targets.generation_benchmark.bound_ratio_max,
        targets.generation_benchmark.token_efficiency_min,
        targets.book_time.max_seconds,
        targets.throughput.min_per_hour,
        str(path),
    )


def sim_counters(url: str) -> dict[str, float]:
    """The model's counters from its /metrics: tokens emitted, requests by status, 429s by limit."""
    text = httpx.get(f"{url}/metrics", timeout=10.0).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith("bookgen_sim_"):
            continue
        name, _, value = line.rpartition(" ")
        if name.endswith(("_created", "_created}")) or "_created{" in name:
            continue
        out[name] = float(value)
    return out


def counter_delta(before: dict[str, float], after: dict[str, float], prefix: str) -> float:
    return sum(v - before.get(k, 0.0) for k, v in after.items() if k.startswith(prefix))


@dataclass
class Usage:
    """What a phase asked of the model, from the books' status and the model's counters."""

    kept_tokens: int  # completion tokens of the words the books kept
    outline_tokens: int  # nominal outline completions (needed, not kept in the book text)
    input_tokens: int  # prompts sent (status route), retries included
    generated_tokens: float  # completion tokens the model emitted (its own counter)
    requests: float  # chat requests the model answered or refused
    refused: dict[str, float]  # 429s by the quota limit hit

    @property
    def needed_tokens(self) -> int:
        return self.input_tokens + self.kept_tokens + self.outline_tokens

    @property
    def efficiency(self) -> float:
        return self.kept_tokens / self.generated_tokens if self.generated_tokens else 0.0


def usage(
    results: list[JobResult], before: dict[str, float], after: dict[str, float], outline: int
) -> Usage:
    refused = {
        limit: counter_delta(before, after, f'bookgen_sim_rate_limited_total{{limit="{limit}"}}')
        for limit in ("requests", "tokens", "streams")
    }
    return Usage(
        kept_tokens=sum(completion_tokens(r.words) for r in results),
        outline_tokens=outline * len(results),
        input_tokens=sum(r.input_tokens for r in results),
        generated_tokens=counter_delta(before, after, "bookgen_sim_tokens_emitted_total"),
        requests=counter_delta(before, after, "bookgen_sim_requests_total"),
        refused=refused,
    )


def quota_bounds(
    s: Settings, use: Usage, critical_path_s: float, books: int, planned_completion: int = 0
) -> dict[str, float]:
    """Seconds each limit of the model needs at least for the work (0 where a limit is off).

    The completion tokens are those the books kept, or the planned book shapes' when more (a
    failed book kept nothing, but its work was still asked for)."""
    q = s.sim
    completion = max(use.kept_tokens + use.outline_tokens, planned_completion)
    needed = use.input_tokens + completion
    return {
        "tokens per minute": 60.0 * needed / q.tpm_limit if q.tpm_limit else 0.0,
        "requests per minute": 60.0 * use.requests / q.rpm_limit if q.rpm_limit else 0.0,
        "concurrent streams": (
            completion / (q.max_concurrent_streams * q.tokens_per_second)
            if q.max_concurrent_streams
            else 0.0
        ),
        # Every book's critical path runs at once: a batch is never shorter than one book's.
        "critical path": critical_path_s if books else 0.0,
    }


def judge(
    name: str,
    measured_s: float,
    bounds: dict[str, float],
    use: Usage,
    goals: Goals,
    unit_rate: tuple[int, int] | None = None,
) -> Figures:
    """measured vs the largest bound (time), efficiency vs its goal; printed and returned.

    `unit_rate` = (books completed, books asked for) turns the figures into books per hour; a
    batch with a failed book has no ratio (inf): it did not do the work the bound is for."""
    binding = max(bounds, key=lambda k: bounds[k])
    bound_s = bounds[binding]
    complete = unit_rate is None or unit_rate[0] == unit_rate[1]
    ratio = measured_s / bound_s if bound_s and complete else math.inf
    ratio_ok = ratio <= goals.bound_ratio_max
    eff_ok = use.efficiency >= goals.token_efficiency_min
    ratio_goal = f"<= {goals.bound_ratio_max:g}"
    eff_goal = f">= {goals.token_efficiency_min:g}"
    if unit_rate is None:
        measured, bound, unit = measured_s, bound_s, "s"
    else:
        done, asked = unit_rate
        measured, bound, unit = done / measured_s * 3600, asked / bound_s * 3600, "books/h"
    f = Figures(
        name,
        measured,
        bound,
        ratio,
        unit,
        f"measured/bound {ratio_goal}, token efficiency {eff_goal}",
        ratio_ok and eff_ok,
        {
            "bounds_s": {k: round(v, 1) for k, v in bounds.items()},
            "binding_limit": binding,
            "token_efficiency": round(use.efficiency, 4),
            "tokens": asdict(use),
        },
    )
    print(
        f"  [{'OK ' if ratio_ok else 'MISS'}] {name}: {measured:.1f} {unit}, bound "
        f"{bound:.1f} {unit} ({binding}), measured/bound {ratio:.2f} (goal {ratio_goal})"
    )
    for limit, seconds in bounds.items():
        print(f"         bound by {limit:<20} {seconds:8.1f} s")
    print(
        f"  [{'OK ' if eff_ok else 'MISS'}] token efficiency {use.efficiency:.3f} "
        f"(goal {eff_goal}): {use.kept_tokens} completion tokens kept in the books of "
        f"{use.generated_tokens:.0f} generated; {use.requests:.0f} model requests, refused by "
        + ", ".join(f"{k} {v:.0f}" for k, v in use.refused.items())
    )
    return f


async def bench_one_book(
    server: Server, sim_url: str, chapters: int, words: int, rate: float, goals: Goals
) -> Figures:
    s = server.settings
    print(f"\n== one book: {chapters} chapters, {words} words, {rate:g} tokens/s per stream")
    before = sim_counters(sim_url)
    results, phase = await run_books(server, 1, chapters, words, timeout_s=1800)
    use = usage(results, before, sim_counters(sim_url), book_shape(chapters, words)[0])
    book = results[0]
    path = critical_path(s, chapters, words, rate)
    outline_t, sections = book_shape(chapters, words)
    bounds = quota_bounds(s, use, path, 1, outline_t + sum(sections))
    f = judge(
        "one book wall time",
        book.seconds,
        bounds,
        use,
        goals,
        None if book.status == "completed" else (0, 1),
    )
    sched = schedule_bound(
        outline_t,
        sections,
        jobs=1,
        job_slots=1,
        chapter_slots=s.chapter_concurrency,
        llm_slots=s.llm_max_concurrency,
        rate=rate,
        ttft=s.sim.time_to_first_token_s + s.sim.latency_s,
    )
    book_ok = book.status == "completed" and book.seconds < goals.book_time_s
    f.met = f.met and book_ok
    f.detail.update(
        {
            "status": book.status,
            "book_time_target_s": goals.book_time_s,
            "output_tokens_status_route": book.output_tokens,
            "input_tokens": book.input_tokens,
            "words_written": book.words,
            "cost_usd": book.cost_usd,
            "pipeline_schedule_bound_s": round(sched, 1),
            "client_wall_s": round(phase.wall_s, 1),
            "server_cpu_cores": round(phase.server_cores, 3),
            "server_rss_mb": round(phase.server_rss_mb, 1),
            "load1_before_after": [phase.load_before, phase.load_after],
        }
    )
    print(
        f"  [{'OK ' if book_ok else 'MISS'}] book time {book.seconds:.1f} s against the "
        f"slo.yaml target < {goals.book_time_s:g} s ({book.status}); words {book.words}, "
        f"pipeline schedule bound {sched:.1f} s on its {s.chapter_concurrency} chapter slots "
        f"and {s.llm_max_concurrency} client streams (measured / schedule bound "
        f"{book.seconds / sched:.2f})"
    )
    print(
        f"  server CPU {phase.server_cores:.2f} cores, RSS {phase.server_rss_mb:.0f} MB, "
        f"load1 {phase.load_before:.2f} -> {phase.load_after:.2f}"
    )
    return f


async def bench_throughput(
    server: Server,
    sim_url: str,
    jobs: int,
    books: int,
    chapters: int,
    words: int,
    rate: float,
    goals: Goals,
) -> Figures:
    s = server.settings
    print(
        f"\n== throughput: {books} books of {chapters} chapters / {words} words, "
        f"{jobs} concurrent jobs on one worker, {rate:g} tokens/s per stream"
    )
    before = sim_counters(sim_url)
    results, phase = await run_books(server, books, chapters, words, timeout_s=3600)
    use = usage(results, before, sim_counters(sim_url), book_shape(chapters, words)[0])
    done = [r for r in results if r.status == "completed"]
    path = critical_path(s, chapters, words, rate)
    outline_t, sections = book_shape(chapters, words)
    f = judge(
        f"books/hour with {jobs} concurrent jobs",
        phase.wall_s,
        quota_bounds(s, use, path, books, books * (outline_t + sum(sections))),
        use,
        goals,
        unit_rate=(len(done), books),
    )
    per_hour = len(done) / phase.wall_s * 3600
    rate_ok = len(done) == books and per_hour >= goals.min_books_per_hour
    f.met = f.met and rate_ok
    sched_s = schedule_bound(
        outline_t,
        sections,
        jobs=books,
        job_slots=s.job_concurrency,
        chapter_slots=s.chapter_concurrency,
        llm_slots=s.llm_max_concurrency,
        rate=rate,
        ttft=s.sim.time_to_first_token_s + s.sim.latency_s,
    )
    f.detail.update(
        {
            "books": books,
            "completed": len(done),
            "batch_wall_s": round(phase.wall_s, 1),
            "pipeline_schedule_bound_wall_s": round(sched_s, 1),
            "book_seconds": [round(r.seconds, 1) for r in results],
            "job_concurrency": s.job_concurrency,
            "chapter_concurrency": s.chapter_concurrency,
            "llm_max_concurrency": s.llm_max_concurrency,
            "server_cpu_cores": round(phase.server_cores, 3),
            "server_rss_mb": round(phase.server_rss_mb, 1),
            "load1_before_after": [phase.load_before, phase.load_after],
        }
    )
    secs = [r.seconds for r in results]
    print(
        f"  [{'OK ' if rate_ok else 'MISS'}] {per_hour:.1f} books/h completed against the "
        f"slo.yaml target >= {goals.min_books_per_hour:g}; batch {phase.wall_s:.1f} s, book "
        f"times {min(secs):.0f}-{max(secs):.0f} s"
    )
    print(
        f"  pipeline schedule bound {sched_s:.1f} s = {books / sched_s * 3600:.1f} books/h "
        f"(this batch as the pipeline orders its calls on {s.job_concurrency} job slots and "
        f"{s.llm_max_concurrency} client streams, zero overhead); measured / schedule bound = "
        f"{phase.wall_s / sched_s:.2f}"
    )
    print(
        f"  server CPU {phase.server_cores:.2f} cores, RSS {phase.server_rss_mb:.0f} MB, "
        f"load1 {phase.load_before:.2f} -> {phase.load_after:.2f}"
    )
    return f


# --- API latencies -----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def route_latencies(
    client: httpx.AsyncClient, job_id: str, requests: int
) -> dict[str, dict[str, float]]:
    source = {
        "title": "Sketch of the Analytical Engine",
        "author": "L. F. Menabrea",
        "url": "https://en.wikipedia.org/wiki/Ada_Lovelace",
        "source_type": "article",
    }
    routes: dict[str, tuple[str, str, Any, set[int]]] = {
        "health": ("GET", "/health", None, {200}),
        "ready": ("GET", "/ready", None, {200}),
        "status": ("GET", "/api/v1/status", None, {200}),
        "job-status": ("GET", f"/api/v1/biographies/{job_id}/status", None, {200}),
        "download": ("GET", f"/api/v1/biographies/{job_id}/download", None, {200}),
        "list": ("GET", "/api/v1/biographies?limit=20", None, {200}),
        "sources": (
            "POST",
            "/api/v1/sources/validate",
            {"sources": [source] * 3, "check_accessibility": False},
            {200},
        ),
        "metrics": ("GET", "/metrics", None, {200}),
    }
    out: dict[str, dict[str, float]] = {}
    for name, (method, path, body, ok) in routes.items():
        times: list[float] = []
        failures = 0
        for _ in range(requests):
            t0 = time.perf_counter()
            r = await client.request(method, path, json=body)
            times.append((time.perf_counter() - t0) * 1000)
            failures += r.status_code not in ok
        out[name] = _summary(times, failures)
    # generate + cancel in pairs, so the queue does not fill with benchmark jobs
    gen: list[float] = []
    cancel: list[float] = []
    failures = 0
    for i in range(max(5, requests // 5)):
        t0 = time.perf_counter()
        r = await client.post(
            GENERATE, json={"character": f"Latency {i}", "chapters": 1, "total_words": 1000}
        )
        gen.append((time.perf_counter() - t0) * 1000)
        failures += r.status_code != 202
        if r.status_code == 202:
            t0 = time.perf_counter()
            c = await client.post(f"/api/v1/biographies/{r.json()['job_id']}/cancel")
            cancel.append((time.perf_counter() - t0) * 1000)
            failures += c.status_code >= 500
    out["generate"] = _summary(gen, failures)
    out["cancel"] = _summary(cancel, 0)
    return out


def _summary(times: list[float], failures: int) -> dict[str, float]:
    return {
        "n": len(times),
        "failures": failures,
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(pct(times, 0.95), 2),
        "p99_ms": round(pct(times, 0.99), 2),
        "max_ms": round(max(times), 2),
    }


def print_latencies(title: str, table: dict[str, dict[str, float]]) -> None:
    print(f"\n== API latency, {title}")
    print(
        f"  {'route':<11} {'n':>5} {'fail':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8}"
    )
    for name, row in table.items():
        print(
            f"  {name:<11} {row['n']:>5.0f} {row['failures']:>5.0f} {row['p50_ms']:>8.2f} "
            f"{row['p95_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['max_ms']:>8.2f}"
        )


async def bench_api(server: Server, jobs: int, requests: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30.0) as client:
        small = await submit(client, 1, 1000, "Latency Reference")
        await follow(client, small, timeout_s=600, poll_s=0.5)
        idle = await route_latencies(client, small, requests)
        print_latencies("idle server", idle)
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        busy_ids = [await submit(client, 20, 51_000, f"Busy Person {i}") for i in range(jobs)]
        await asyncio.sleep(3.0)  # past the outlines, into the chapters
        busy = await route_latencies(client, small, requests)
        cores = (server.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        print_latencies(
            f"while {jobs} books are being written (server CPU {cores:.2f} cores)", busy
        )
        for job_id in busy_ids:
            await client.post(f"/api/v1/biographies/{job_id}/cancel")
    return {"idle": idle, "busy": busy, "busy_jobs": jobs, "busy_server_cpu_cores": cores}


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--quick",
        action="store_true",
        help="10x stream rate and a batch of min(N, 4) books: a smoke run (~1 min)",
    )
    p.add_argument("--api-only", action="store_true", help="only API route latencies")
    p.add_argument("--save", type=Path, help="write the figures as JSON here")
    p.add_argument("--jobs", type=int, default=8, help="concurrent jobs on the worker (8)")
    p.add_argument("--books", type=int, default=None, help="books in the batch (= --jobs)")
    p.add_argument("--chapters", type=int, default=20)
    p.add_argument("--words", type=int, default=51_000)
    p.add_argument(
        "--tokens-per-second",
        type=float,
        default=None,
        help="sim stream rate (40; 400 with --quick or --api-only)",
    )
    p.add_argument("--requests", type=int, default=100, help="per route with --api-only")
    p.add_argument("--slo", type=Path, help="the SLO spec with the goals (default: the project's)")
    p.add_argument("--skip-book", action="store_true", help="skip the one-book measurement")
    p.add_argument("--skip-throughput", action="store_true", help="skip the books/hour one")
    p.add_argument(
        "--app",
        default="bookgen.asgi:build_app",
        help="ASGI factory (bookgen.service.app:create_app for no telemetry)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra BOOKGEN_ setting for the server, e.g. chapter_concurrency=22",
    )
    return p.parse_args(argv)


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rate = args.tokens_per_second or (400.0 if args.quick or args.api_only else 40.0)
    books = args.books or (min(args.jobs, 4) if args.quick else args.jobs)
    overrides = {"sim__tokens_per_second": f"{rate:g}", "job_concurrency": str(args.jobs)}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key.strip().lower()] = value.strip()
    report: dict[str, Any] = {
        "command": " ".join(
            [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]
        ),
        "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load1_at_start": os.getloadavg()[0],
        },
        "tokens_per_second": rate,
        "server_overrides": overrides,
        "app": args.app,
    }
    print(
        f"BookGen generation benchmark - {report['started_at']}, {os.cpu_count()} CPUs, "
        f"load1 {os.getloadavg()[0]:.2f} (shared machine: figures include its noise)"
    )
    goals = load_goals(args.slo)
    print(
        f"goals from {goals.source}: measured/bound <= {goals.bound_ratio_max:g}, token "
        f"efficiency >= {goals.token_efficiency_min:g}, book < {goals.book_time_s:g} s, "
        f">= {goals.min_books_per_hour:g} books/h"
    )
    report["goals"] = asdict(goals)
    failed = False
    sim_env = {f"BOOKGEN_{k.upper()}": v for k, v in overrides.items() if k.startswith("sim__")}
    with tempfile.TemporaryDirectory(prefix="bookgen-bench-") as tmp:
        sim = SimProcess(Path(tmp) / "sim", env=sim_env)
        sim.start()
        server = Server(overrides, Path(tmp), args.app, f"{sim.url}/v1")
        try:
            await server.wait_ready()
            s = server.settings
            q = s.sim
            print(
                f"server {server.url} pid {server.pid}: job_concurrency "
                f"{s.job_concurrency}, chapter_concurrency {s.chapter_concurrency}, "
                f"llm_max_concurrency {s.llm_max_concurrency}; model {sim.url}: "
                f"{q.tokens_per_second:g} tokens/s per stream, ttft {q.time_to_first_token_s}s, "
                f"jitter {q.jitter}, length error {q.length_error}, quotas per key: "
                f"{q.rpm_limit} requests/min, {q.tpm_limit} tokens/min, "
                f"{q.max_concurrent_streams} concurrent streams"
            )
            report["settings"] = {
                "job_concurrency": s.job_concurrency,
                "chapter_concurrency": s.chapter_concurrency,
                "llm_max_concurrency": s.llm_max_concurrency,
                "llm_stream": s.llm_stream,
                "sim": q.model_dump(),
            }
            if args.api_only:
                report["api"] = await bench_api(server, args.jobs, args.requests)
            else:
                figures: list[Figures] = []
                if not args.skip_book:
                    figures.append(
                        await bench_one_book(
                            server, sim.url, args.chapters, args.words, rate, goals
                        )
                    )
                if not args.skip_throughput:
                    figures.append(
                        await bench_throughput(
                            server, sim.url, args.jobs, books, args.chapters, args.words, rate,
                            goals,
                        )
                    )  # fmt: skip
                report["figures"] = [asdict(f) for f in figures]
                failed = not all(f.met for f in figures)
                print(
                    "\nGENERATION BENCHMARK "
                    + ("PASS" if not failed else "MISS")
                    + ": "
                    + "; ".join(
                        f"{f.name} {f.measured:.1f} {f.unit} vs bound {f.bound:.1f} "
                        f"(x{f.ratio:.2f}), token efficiency {f.detail['token_efficiency']:.3f}"
                        for f in figures
                    )
                )
        except BaseException:
            print(f"server log: {tmp}/server.log (kept below)")
            with contextlib.suppress(OSError):
                print((Path(tmp) / "server.log").read_text()[-4000:])
            raise
        finally:
            server.stop()
            sim.stop()
    report["finished_at"] = datetime.now().astimezone().isoformat(timespec="seconds")
    if args.save:
        args.save.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nsaved {args.save}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
