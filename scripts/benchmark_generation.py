#!/usr/bin/env python
"""Generation benchmark: real books through a real BookGen server and its simulated model.

Starts one server process (`uvicorn bookgen.asgi:build_app --factory`, i.e. one worker with its
in-process simulated model on a free 127.0.0.1 port, a fresh SQLite store in a temp directory),
submits jobs over HTTP and follows them through the status route. Nothing is extrapolated: every
figure is a finished book's server-side `completed_at - created_at` or a batch's wall time.

Measures
  1. one book: wall time of one 20-chapter, 51,000-word book at 40 tokens/s per stream;
  2. throughput: completed books per hour with N concurrent jobs on one worker (--jobs N; a batch
     of --books M jobs, M = N by default, all submitted at once, timed until the last one ends);
  3. with --api-only instead: latency of every API route against the started server, idle and while
     N books are being written.
Each generation figure is printed beside its theoretical bound,
    tokens needed / (stream rate x concurrency),
with tokens needed = the output tokens the jobs really consumed (from the status route), and
concurrency = the streams the configuration allows at once: one book
min(chapter_concurrency, chapters + 2, llm_max_concurrency); N books
min(N x min(chapter_concurrency, chapters + 2), llm_max_concurrency). The ratio is bound /
measured for times, measured / bound for rates. It also prints the pipeline's schedule bound: the
makespan of the pipeline's own order (introduction and epilogue beside the outline, each chapter
once its streamed outline entry is in, on `chapter_concurrency` slots) at exactly the stream rate
(what the current pipeline could reach with zero overhead), which tells a scheduling limit from an
overhead one.

Goals (issue 2): one book <= 180 s, >= 60 books/h per worker, every ratio >= 0.8.

Usage
  python scripts/benchmark_generation.py                 # full run, a few minutes
  python scripts/benchmark_generation.py --quick         # 10x stream rate, smaller batch: ~1 min
  python scripts/benchmark_generation.py --jobs 8 --save bench.json
  python scripts/benchmark_generation.py --api-only
Extra server settings: --set KEY=VALUE (a BOOKGEN_ setting, e.g. --set chapter_concurrency=22).
The machine may be shared: the script prints the load average and the server's CPU use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import itertools
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from bookgen.service.llm.sim import ChatRequest, completion_tokens, compose
from bookgen.service.pipeline import prompts
from bookgen.service.pipeline.prompts import BookSpec
from bookgen.service.settings import Settings
from bookgen.stack.ports import free_port
from bookgen.stack.process import Component

GOAL_BOOK_S = 180.0
GOAL_BOOKS_PER_HOUR = 60.0
GOAL_RATIO = 0.8
CLIENT_ID = "benchmark-generation"
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

    def __init__(self, overrides: dict[str, str], workdir: Path, app: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOOKGEN_")}
        env.update(
            {
                "BOOKGEN_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'bench.db'}",
                "BOOKGEN_RATE_LIMIT": "100000/minute",
                "BOOKGEN_MAX_QUEUE": "1000",
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


def nominal_tokens(words: int) -> int:
    return math.ceil(words * 4 / 3)


def book_shape(chapters: int, total_words: int) -> tuple[int, list[int]]:
    """(outline tokens, section tokens in plan order) the simulated model emits for this book:
    the outline from the sim's answer to the pipeline's real outline prompt."""
    spec = BookSpec("bench", "Ada Lovelace", chapters, total_words, "bookgen-sim")
    text, _ = compose(ChatRequest.model_validate({"messages": prompts.outline(spec)}))
    outline = completion_tokens(len(text.split()))
    frame = nominal_tokens(spec.frame_words)
    sections = [frame] + [nominal_tokens(spec.words_per_chapter)] * chapters + [frame]
    return outline, sections


def schedule_bound(
    outline_tokens: int,
    sections: list[int],
    *,
    jobs: int,
    job_slots: int,
    chapter_slots: int,
    llm_slots: int,
    rate: float,
    ttft: float,
) -> float:
    """Makespan of `jobs` books submitted together, with the work ordered as the pipeline orders
    it, at exactly the stream rate and zero overhead: `job_slots` jobs run at once; each starts
    its outline, introduction and epilogue together; chapter k is released when its entry of the
    streamed outline has arrived (k/n of the way through) and runs on one of `chapter_slots`;
    every call waits for one of `llm_slots` streams, first come first served."""
    chapters = len(sections) - 2  # sections = [introduction, chapter 1..n, epilogue]
    events: list[tuple[float, int, str, int, int]] = []  # (time, order, kind, job, index)
    order = itertools.count()
    waiting: deque[tuple[int, int]] = deque()  # (job, section index or -1 for the outline)
    released: list[deque[int]] = [deque() for _ in range(jobs)]
    busy = [0] * jobs
    left = [len(sections) + 1] * jobs
    free = llm_slots
    started = 0
    now = 0.0

    def start_next_job() -> None:
        nonlocal started
        waiting.extend([(started, -1), (started, 0), (started, len(sections) - 1)])
        started += 1

    def take_chapter_slots(job: int) -> None:
        while released[job] and busy[job] < chapter_slots:
            busy[job] += 1
            waiting.append((job, released[job].popleft()))

    for _ in range(min(jobs, job_slots)):
        start_next_job()
    while True:
        while free and waiting:
            job, index = waiting.popleft()
            free -= 1
            tokens = outline_tokens if index < 0 else sections[index]
            heapq.heappush(events, (now + ttft + tokens / rate, next(order), "end", job, index))
            if index < 0:
                for k in range(1, chapters + 1):
                    at = now + ttft + outline_tokens * k / chapters / rate
                    heapq.heappush(events, (at, next(order), "entry", job, k))
        if not events:
            return now
        now, _, kind, job, index = heapq.heappop(events)
        if kind == "entry":
            released[job].append(index)
            take_chapter_slots(job)
            continue
        free += 1
        if 1 <= index <= chapters:
            busy[job] -= 1
            take_chapter_slots(job)
        left[job] -= 1
        if left[job] == 0 and started < jobs:
            start_next_job()


def book_streams(s: Settings, chapters: int) -> int:
    return min(s.chapter_concurrency, chapters + 2, s.llm_max_concurrency)


def batch_streams(s: Settings, chapters: int, books: int) -> int:
    per_job = min(s.chapter_concurrency, chapters + 2)
    return min(min(books, s.job_concurrency) * per_job, s.llm_max_concurrency)


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
    headers = {"X-Client-Id": CLIENT_ID}
    async with httpx.AsyncClient(base_url=server.url, timeout=30.0, headers=headers) as client:
        ids = [await submit(client, chapters, words, f"Benchmark Person {i}") for i in range(jobs)]
        results = await asyncio.gather(*(follow(client, j, timeout_s) for j in ids))
    wall = time.monotonic() - started
    phase = Phase(wall, server.cpu_seconds() - cpu0, load0, os.getloadavg()[0], server.rss_mb())
    return list(results), phase


def print_figures(f: Figures) -> None:
    mark = "OK " if f.met else "MISS"
    print(
        f"  [{mark}] {f.name}: {f.measured:.1f} {f.unit}  bound {f.bound:.1f} {f.unit}  "
        f"ratio {f.ratio:.2f}  (goal {f.goal})"
    )


async def bench_one_book(server: Server, chapters: int, words: int, rate: float) -> Figures:
    s = server.settings
    print(f"\n== one book: {chapters} chapters, {words} words, {rate:g} tokens/s per stream")
    results, phase = await run_books(server, 1, chapters, words, timeout_s=1800)
    book = results[0]
    streams = book_streams(s, chapters)
    bound = book.output_tokens / (rate * streams)
    outline_t, sections = book_shape(chapters, words)
    ttft = s.sim.time_to_first_token_s + s.sim.latency_s
    sched = schedule_bound(
        outline_t,
        sections,
        jobs=1,
        job_slots=1,
        chapter_slots=s.chapter_concurrency,
        llm_slots=s.llm_max_concurrency,
        rate=rate,
        ttft=ttft,
    )
    many = len(sections)
    ideal = schedule_bound(
        outline_t,
        sections,
        jobs=1,
        job_slots=1,
        chapter_slots=many,
        llm_slots=many,
        rate=rate,
        ttft=ttft,
    )
    f = Figures(
        "one book wall time",
        book.seconds,
        bound,
        bound / book.seconds if book.seconds else 0.0,
        "s",
        f"<= {GOAL_BOOK_S:.0f} s, ratio >= {GOAL_RATIO}",
        book.status == "completed"
        and book.seconds <= GOAL_BOOK_S
        and bound / book.seconds >= GOAL_RATIO,
        {
            "status": book.status,
            "output_tokens": book.output_tokens,
            "input_tokens": book.input_tokens,
            "words_written": book.words,
            "cost_usd": book.cost_usd,
            "streams": streams,
            "pipeline_schedule_bound_s": round(sched, 1),
            "schedule_bound_all_sections_parallel_s": round(ideal, 1),
            "outline_tokens_nominal": outline_t,
            "section_tokens_nominal": sections,
            "client_wall_s": round(phase.wall_s, 1),
            "server_cpu_cores": round(phase.server_cores, 3),
            "server_rss_mb": round(phase.server_rss_mb, 1),
            "load1_before_after": [phase.load_before, phase.load_after],
        },
    )
    print_figures(f)
    print(
        f"  tokens out {book.output_tokens} (in {book.input_tokens}), words {book.words}, "
        f"{streams} streams; pipeline schedule bound {sched:.1f} s "
        f"(chapters as their outline entries stream in, on "
        f"{min(s.chapter_concurrency, s.llm_max_concurrency)} slots), "
        f"{ideal:.1f} s with every section at once; "
        f"measured / schedule bound = {book.seconds / sched:.2f}"
    )
    print(
        f"  server CPU {phase.server_cores:.2f} cores, RSS {phase.server_rss_mb:.0f} MB, "
        f"load1 {phase.load_before:.2f} -> {phase.load_after:.2f}"
    )
    return f


async def bench_throughput(
    server: Server, jobs: int, books: int, chapters: int, words: int, rate: float
) -> Figures:
    s = server.settings
    print(
        f"\n== throughput: {books} books of {chapters} chapters / {words} words, "
        f"{jobs} concurrent jobs on one worker, {rate:g} tokens/s per stream"
    )
    results, phase = await run_books(server, books, chapters, words, timeout_s=3600)
    done = [r for r in results if r.status == "completed"]
    per_hour = len(done) / phase.wall_s * 3600
    tokens = sum(r.output_tokens for r in results)
    streams = batch_streams(s, chapters, books)
    bound_s = tokens / (rate * streams)
    bound = books / bound_s * 3600
    ratio = per_hour / bound if bound else 0.0
    outline_t, sections = book_shape(chapters, words)
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
    f = Figures(
        f"books/hour with {jobs} concurrent jobs",
        per_hour,
        bound,
        ratio,
        "books/h",
        f">= {GOAL_BOOKS_PER_HOUR:.0f} books/h, ratio >= {GOAL_RATIO}",
        len(done) == books and per_hour >= GOAL_BOOKS_PER_HOUR and ratio >= GOAL_RATIO,
        {
            "books": books,
            "completed": len(done),
            "batch_wall_s": round(phase.wall_s, 1),
            "bound_wall_s": round(bound_s, 1),
            "pipeline_schedule_bound_wall_s": round(sched_s, 1),
            "pipeline_schedule_books_per_hour": round(books / sched_s * 3600, 1),
            "book_seconds": [round(r.seconds, 1) for r in results],
            "output_tokens": tokens,
            "streams": streams,
            "job_concurrency": s.job_concurrency,
            "chapter_concurrency": s.chapter_concurrency,
            "llm_max_concurrency": s.llm_max_concurrency,
            "server_cpu_cores": round(phase.server_cores, 3),
            "server_rss_mb": round(phase.server_rss_mb, 1),
            "load1_before_after": [phase.load_before, phase.load_after],
        },
    )
    print_figures(f)
    secs = [r.seconds for r in results]
    print(
        f"  batch {phase.wall_s:.1f} s (bound {bound_s:.1f} s at {streams} streams), "
        f"book times {min(secs):.0f}-{max(secs):.0f} s, tokens out {tokens}"
    )
    print(
        f"  pipeline schedule bound {sched_s:.1f} s = {books / sched_s * 3600:.1f} books/h "
        f"(this batch, as the pipeline orders its calls, zero overhead); "
        f"measured / schedule bound = {phase.wall_s / sched_s:.2f}"
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
    headers = {"X-Client-Id": CLIENT_ID}
    async with httpx.AsyncClient(base_url=server.url, timeout=30.0, headers=headers) as client:
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
    with tempfile.TemporaryDirectory(prefix="bookgen-bench-") as tmp:
        server = Server(overrides, Path(tmp), args.app)
        try:
            await server.wait_ready()
            s = server.settings
            print(
                f"server {server.url} pid {server.pid}: job_concurrency "
                f"{s.job_concurrency}, chapter_concurrency {s.chapter_concurrency}, "
                f"llm_max_concurrency {s.llm_max_concurrency}, sim ttft "
                f"{s.sim.time_to_first_token_s}s jitter {s.sim.jitter}"
            )
            report["settings"] = {
                "job_concurrency": s.job_concurrency,
                "chapter_concurrency": s.chapter_concurrency,
                "llm_max_concurrency": s.llm_max_concurrency,
                "llm_stream": s.llm_stream,
                "sim": s.sim.model_dump(),
            }
            if args.api_only:
                report["api"] = await bench_api(server, args.jobs, args.requests)
            else:
                figures: list[Figures] = []
                if not args.skip_book:
                    figures.append(await bench_one_book(server, args.chapters, args.words, rate))
                if not args.skip_throughput:
                    figures.append(
                        await bench_throughput(
                            server, args.jobs, books, args.chapters, args.words, rate
                        )
                    )
                report["figures"] = [asdict(f) for f in figures]
                if rate != 40.0:
                    print(
                        f"\nnote: stream rate {rate:g} tokens/s, not 40: the absolute goals "
                        "apply to 40 tokens/s; compare the ratios."
                    )
        except BaseException:
            print(f"server log: {tmp}/server.log (kept below)")
            with contextlib.suppress(OSError):
                print((Path(tmp) / "server.log").read_text()[-4000:])
            raise
        finally:
            server.stop()
    report["finished_at"] = datetime.now().astimezone().isoformat(timespec="seconds")
    if args.save:
        args.save.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nsaved {args.save}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
