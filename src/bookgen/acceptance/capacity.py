"""Capacity: the highest request rate one API process sustains on the BookGen mix while books are
really being written, and the latency of every route group at a fixed concurrency.

The load comes from `bookgen.acceptance.loadgen` (its own process, pre-built requests on
keep-alive sockets, CPU measured); the books from the simulated model at its normal speed,
`generations` of them kept in progress the whole time. The search climbs the offered rate step by
step, open loop, and stops only when a step's p95 (of the worst route group, counted from when
each request was due) reaches the latency bound of slo.yaml or a request fails: that step is the
breach, the one before it the knee.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from bookgen.acceptance import loadgen
from bookgen.acceptance.project import Project, find_project
from bookgen.acceptance.server import ServeProcess, SimProcess

CHARACTERS = ("Ada Lovelace", "Alan Turing", "Grace Hopper", "Marie Curie")
BIOGRAPHIES = "/api/v1/biographies"
MAX_STEPS = 400  # a loop bound, far above any rate one process reaches; p95 ends the search


def latency_bound_ms(project: Project | None = None) -> float:
    """The API p95 bound from slo.yaml (the strictest route group of the generated thresholds)."""
    project = project or find_project()
    thresholds = json.loads(project.thresholds.read_text())
    return min(float(v) for v in thresholds["p95_ms"].values())


def capacity_goal_rps(project: Project | None = None) -> float:
    """The knee the capacity search aims for, per API process (slo.yaml's capacity_benchmark)."""
    from bookgen.slo.spec import load_spec

    project = project or find_project()
    return float(load_spec(project.slo).targets.capacity_benchmark.rps_per_process_min)


def knee_verdict(knee_rps: float, goal_rps: float) -> str:
    """The knee against its goal, said plainly whichever way it falls."""
    verdict = "met" if knee_rps >= goal_rps else "NOT MET"
    return (
        f"goal >= {goal_rps:.0f} req/s per API process (slo.yaml capacity_benchmark): "
        f"{verdict}, knee / goal = {knee_rps / goal_rps:.2f}"
    )


class Books:
    """Keeps `count` books being written on `host`: submits one for each that finishes.

    Two list reads per `interval_s` (the jobs in progress, the jobs waiting) tell which of its
    own books are still going; what other clients submit or cancel does not change how many it
    keeps. Small books by default, so they keep finishing (and new DOCX files are rendered)
    during a measurement.
    """

    def __init__(
        self, host: str, count: int, chapters: int = 2, words: int = 2000, interval_s: float = 0.5
    ) -> None:
        self.host = host
        self.count = count
        self.body = {"chapters": chapters, "total_words": words}
        self.interval_s = interval_s
        self.jobs: dict[str, str] = {}
        self.submitted = 0
        self.completed = 0
        self.failed = 0
        self.running_samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="books", daemon=True)

    def _submit(self, client: httpx.Client) -> None:
        # Eight lengths from half to 1.4 times the asked one, chapters as asked: a book's chapters
        # are written side by side, so its time follows its words per chapter, and books started
        # together must not end together (sizes with the same words per chapter did: all of
        # them within a few seconds, the kept count dipping by a third once a generation).
        step = self.submitted % 8
        body = {
            "character": CHARACTERS[self.submitted % len(CHARACTERS)],
            "chapters": self.body["chapters"],
            "total_words": max(1000, self.body["total_words"] * (step + 4) // 8),
        }
        headers = {"X-Client-Id": f"books-{uuid.uuid4().hex[:12]}"}
        response = client.post(f"{BIOGRAPHIES}/generate", json=body, headers=headers)
        if response.status_code == 202:
            self.submitted += 1
            self.jobs[str(response.json()["job_id"])] = "pending"

    def _loop(self) -> None:
        with httpx.Client(base_url=self.host, timeout=10.0) as client:
            for _ in range(1_000_000):  # bounded; each pass waits interval_s
                if self._stop.is_set():
                    return
                try:
                    seen = {state: self._ids(client, state) for state in ("in_progress", "pending")}
                    for job_id in list(self.jobs):
                        if job_id in seen["in_progress"]:
                            self.jobs[job_id] = "in_progress"
                        elif job_id in seen["pending"]:
                            self.jobs[job_id] = "pending"
                        else:  # finished: how?
                            path = f"{BIOGRAPHIES}/{job_id}/status"
                            state = client.get(path).json()["status"]
                            if state in ("completed", "failed", "cancelled"):
                                del self.jobs[job_id]
                                self.completed += state == "completed"
                                self.failed += state != "completed"
                    for _ in range(self.count - len(self.jobs)):
                        self._submit(client)
                    self.running_samples.append(
                        sum(1 for s in self.jobs.values() if s == "in_progress")
                    )
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                self._stop.wait(self.interval_s)

    @staticmethod
    def _ids(client: httpx.Client, state: str) -> set[str]:
        params: dict[str, str | int] = {"status": state, "page_size": 100}
        page = client.get(BIOGRAPHIES, params=params).json()
        return {str(item["job_id"]) for item in page["items"]}

    def __enter__(self) -> Books:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        with httpx.Client(base_url=self.host, timeout=10.0) as client:
            for job_id in list(self.jobs):  # leave a shared server idle
                with suppress(httpx.HTTPError):
                    client.post(f"{BIOGRAPHIES}/{job_id}/cancel")

    def wait_running(self, timeout_s: float = 90.0) -> int:
        """Wait until `count` books are in progress (or the timeout); returns how many are."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.running_samples and self.running_samples[-1] >= self.count:
                break
            self._stop.wait(0.5)
        return self.running_samples[-1] if self.running_samples else 0

    def wait_completed(self, books: int, timeout_s: float = 300.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.completed < books:
            self._stop.wait(0.5)
        return self.completed


def seed_jobs(url: str, count: int, connections: int = 16) -> None:
    """`count` jobs in the store through the API (submitted, then cancelled): a deep job list."""

    async def one(conn: loadgen.Connection, host: str, n: int) -> None:
        body = json.dumps({"character": "Seed", "chapters": 1, "total_words": 1000}).encode()
        for _ in range(n):
            raw = loadgen.build(
                "POST", f"{BIOGRAPHIES}/generate", host, body, client=uuid.uuid4().hex
            )
            status, answer = await conn.request(raw)
            if status != 202:
                raise RuntimeError(f"seeding: HTTP {status} {answer[:200]!r}")
            job = json.loads(answer)["job_id"]
            status, answer = await conn.request(
                loadgen.build("POST", f"{BIOGRAPHIES}/{job}/cancel", host)
            )
            if status not in (200, 409):
                raise RuntimeError(f"seeding: HTTP {status} {answer[:200]!r}")
        conn.close()

    async def main() -> None:
        parts = httpx.URL(url)
        host, port = parts.host, parts.port or 80
        share = math.ceil(count / connections)
        await asyncio.gather(
            *(
                one(loadgen.Connection(host, port), f"{host}:{port}", share)
                for _ in range(connections)
            )
        )

    asyncio.run(main())


def warm_docx(url: str) -> None:
    """One DOCX download: the process's first starts its renderer (a second or so, once)."""
    with httpx.Client(base_url=url, timeout=30.0) as client:
        page = client.get(BIOGRAPHIES, params={"status": "completed", "page_size": 1}).json()
        for item in page["items"]:
            client.get(f"{BIOGRAPHIES}/{item['job_id']}/download", params={"format": "docx"})


@dataclass
class Target:
    """A running API (with books being written) to measure, and what runs it."""

    url: str
    pids: list[int] = field(default_factory=list)
    books: Books | None = None
    description: str = ""
    llm_url: str = ""
    books_cpu_share: float | None = None  # the API process's CPU with the books and no requests

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pids)


@contextmanager
def serve_target(
    run_dir: Path,
    books: int = 32,
    chapters: int = 2,
    words: int = 2000,
    seed: int = 2500,
    env: dict[str, str] | None = None,
    database_url: str | None = None,
) -> Iterator[Target]:
    """`bookgen serve` (one process, SQLite unless `database_url`) with `books` being written.

    The simulated model runs in its own process at its default speed, so the API process does what
    it does for users: admits, reads, and drives the books' LLM streams and store writes.
    """
    with ExitStack() as stack:
        sim = stack.enter_context(SimProcess(run_dir / "sim"))
        server_env = {
            # Every simulated user comes from 127.0.0.1, which is one principal without API
            # keys: the per-client submission limit (a policy, not a capacity) would count them
            # all as one client.
            "BOOKGEN_RATE_LIMIT": "10000000/minute",
            # Slots for the kept books, and a few for what the mix submits (and soon cancels).
            "BOOKGEN_JOB_CONCURRENCY": str(books + 8),
            "BOOKGEN_MAX_QUEUE": str(max(1000, books * 4)),
            **({"BOOKGEN_DATABASE_URL": database_url} if database_url else {}),
            **(env or {}),
        }
        server = stack.enter_context(
            ServeProcess(run_dir / "serve", 1, server_env, llm_url=f"{sim.url}/v1")
        )
        if seed:
            seed_jobs(server.url, seed)
        keeper = stack.enter_context(Books(server.url, books, chapters, words))
        keeper.wait_running()
        if books:
            keeper.wait_completed(3)  # finished books to download
            warm_docx(server.url)
        cpu0, t0 = cpu_seconds(server.pids()), time.monotonic()
        time.sleep(5.0)
        idle = (cpu_seconds(server.pids()) - cpu0) / (time.monotonic() - t0)
        yield Target(
            server.url,
            server.pids(),
            keeper,
            f"bookgen serve, 1 process, {books} books of {chapters} chapters/{words} words "
            "being written by the in-process runtime, simulated model (own process) at its "
            "default speed, "
            + ("SQLite" if not database_url or database_url.startswith("sqlite") else "PostgreSQL"),
            sim.url,
            idle,
        )


def measure(
    target: Target, plan: loadgen.Plan, nice: int = 0
) -> dict[str, Any]:  # one load run, with the server's CPU and the books in progress
    cpu0, t0 = target.cpu_seconds(), time.monotonic()
    first = len(target.books.running_samples) if target.books else 0
    report = loadgen.run(plan, nice=nice)
    wall = time.monotonic() - t0
    report["server_cpu_share"] = (target.cpu_seconds() - cpu0) / wall if target.pids else None
    report["books_alone_cpu_share"] = target.books_cpu_share
    if target.books is not None:
        during = target.books.running_samples[first:] or [0]
        report["books_running_min"] = min(during)
        report["books_running_median"] = sorted(during)[len(during) // 2]
        report["books_running_mean"] = sum(during) / len(during)
        report["books_running_max"] = max(during)
        report["books_completed"] = target.books.completed
    return report


def format_groups(report: dict[str, Any], bound_ms: float) -> list[str]:
    lines = [
        f"{'route group':<18} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'errors':>6}  p95 < {bound_ms:g} ms"
    ]
    for name, g in report["groups"].items():
        verdict = "PASS" if g["p95_ms"] < bound_ms and not g["errors"] else "FAIL"
        lines.append(
            f"{name:<18} {g['count']:>8} {g['rps']:>7.1f} {g['p50_ms']:>7.1f} {g['p95_ms']:>7.1f} "
            f"{g['p99_ms']:>7.1f} {g['max_ms']:>7.1f} {g['errors']:>6}  {verdict}"
        )
    lines.append(
        f"{'all':<18} {report['count']:>8} {report['rps']:>7.1f} {report['p50_ms']:>7.1f} "
        f"{report['p95_ms']:>7.1f} {report['p99_ms']:>7.1f} {'':>7} {report['errors']:>6}"
    )
    server = report.get("server_cpu_share")
    lines.append(
        f"in flight {report['connections']} connections (mean {report['mean_in_flight']:.1f}); "
        f"generator CPU {report['generator_cpu_share']:.0%} of a core; server CPU "
        + (f"{server:.0%} of a core" if server is not None else "not measured")
        + (
            f"; books in progress {report['books_running_min']}..{report['books_running_max']}"
            f" (mean {report['books_running_mean']:.1f})"
            if "books_running_min" in report
            else ""
        )
        + f"; first downloads of new books' DOCX {report['new_docx']}"
    )
    if report.get("books_alone_cpu_share") is not None:
        lines.append(
            f"the books alone (no requests) used {report['books_alone_cpu_share']:.0%} of a core "
            "of the API process"
        )
    return lines


def step_breach(step: dict[str, Any], bound_ms: float) -> str:
    """Why a step breaks the capacity criterion ("" when it holds)."""
    if step["errors"]:
        bad = {n: g["error_samples"][:1] for n, g in step["groups"].items() if g["errors"]}
        return f"{step['errors']} errors {bad}"
    worst = max(step["groups"].items(), key=lambda kv: kv[1]["p95_ms"])
    if worst[1]["p95_ms"] >= bound_ms:
        return f"p95 {worst[1]['p95_ms']:.0f} ms ({worst[0]}) >= {bound_ms:g} ms"
    return ""


def search(
    target: Target,
    bound_ms: float,
    start_rps: float = 250.0,
    step_rps: float = 250.0,
    step_time_s: float = 10.0,
    warmup_s: float = 2.0,
    nice: int = 0,
    echo: bool = True,
) -> dict[str, Any]:
    """Climb the offered rate until a step breaks p95 or has errors; returns steps and knee."""
    steps: list[dict[str, Any]] = []
    knee: dict[str, Any] | None = None
    breach: dict[str, Any] | None = None
    for index in range(MAX_STEPS):
        rate = start_rps + index * step_rps
        connections = max(64, min(2048, int(rate * 0.25)))  # room for 250 ms of requests
        plan = loadgen.Plan(
            target.url, step_time_s, connections, rate=rate, warmup_s=warmup_s, seed=index
        )
        step = measure(target, plan, nice=nice)
        step["breach"] = step_breach(step, bound_ms)
        steps.append(step)
        if echo:
            print(
                f"capacity step: offered {rate:6.0f} req/s  served {step['rps']:7.1f}  "
                f"p95 {step['p95_ms']:6.1f} ms  worst-group p95 {step['worst_group_p95_ms']:6.1f}"
                f" ms  errors {step['errors']}  generator CPU {step['generator_cpu_share']:.0%}"
                f"  server CPU {step['server_cpu_share'] or 0:.0%}  "
                + (f"BREACH: {step['breach']}" if step["breach"] else "ok"),
                flush=True,
            )
        if step["breach"]:
            breach = step
            break
        knee = step
    return {
        "p95_bound_ms": bound_ms,
        "steps": steps,
        "knee": knee,
        "breach": breach,
        "capacity_rps": knee["rps"] if knee else 0.0,
    }


def run_capacity(
    report_dir: Path,
    host: str | None = None,
    generations: int = 32,
    max_users: int = 0,
    step_users: int = 10,
    step_time_s: float = 10.0,
    user_rate: float = 20.0,
    p95_ms: float | None = None,
    processes: int = 0,
    settle_s: float = 10.0,
    database_url: str | None = None,
    project: Project | None = None,
    nice: int = 0,
) -> dict[str, Any]:
    """Run the capacity search; returns the capacity report (also written as capacity.json).

    The offered rate starts at and climbs by `step_users * user_rate` req/s (the Locust-era
    options, kept for the CLI); `max_users` and `processes` are not used: only p95 or errors end
    the search, and the generator is one process.
    """
    del max_users, processes
    report_dir = report_dir.expanduser().resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    bound = p95_ms if p95_ms is not None else latency_bound_ms(project)
    rate_step = max(1.0, step_users * user_rate)
    with ExitStack() as stack:
        if host is None:
            target = stack.enter_context(
                serve_target(report_dir, generations, database_url=database_url)
            )
        else:
            keeper = stack.enter_context(Books(host, generations))
            keeper.wait_running()
            target = Target(host, [], keeper, f"{host} with {generations} books kept in progress")
        print(f"capacity: {target.description}", flush=True)
        time.sleep(settle_s)  # past the burst of outlines and first sections
        result = search(target, bound, rate_step, rate_step, step_time_s, nice=nice)
    report = {
        **result,
        "target": target.description,
        "generations_target": generations,
        "generations_running_min": min(
            (s["books_running_min"] for s in result["steps"]), default=0
        ),
        "generations_running_max": max(
            (s["books_running_max"] for s in result["steps"]), default=0
        ),
        "breaking_step": _cli_step(result["breach"], bound) if result["breach"] else None,
    }
    report["steps"] = [_cli_step(s, bound) for s in result["steps"]]
    (report_dir / "capacity.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def _cli_step(step: dict[str, Any], bound_ms: float) -> dict[str, Any]:
    """A step in the shape `bookgen loadtest --profile capacity` prints."""
    return {
        **step,
        "users": step["connections"],
        "offered_rps": step["offered_rps"],
        "p95_ms": step["worst_group_p95_ms"],
        "failures": step["errors"],
        "ok": not step["breach"],
        "sustained": step["rps"] >= 0.9 * (step["offered_rps"] or 0),
    }


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total
