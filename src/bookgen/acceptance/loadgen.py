"""A lean HTTP/1.1 load generator for the BookGen mix, in a process of its own.

Why not httpx or Locust: at thousands of requests per second on two cores, their per-request
Python cost (hundreds of microseconds) makes the client the bottleneck and its own queueing shows
up as server latency. This one writes pre-built requests on keep-alive sockets (uvloop) and reads
the answers with a minimal parser: tens of microseconds a request, so one core drives well past
what one API process serves, and its CPU is measured and reported with every figure.

Two modes:
- closed loop (`rate=None`): `connections` requests always in flight, each sent when the last
  answer on its connection arrived (the suite: "32 requests in flight");
- open loop (`rate=R`): requests are due on a fixed schedule, R per second spread over the
  connections; latency counts from when a request was *due*, so a server that falls behind
  is charged for the requests it kept waiting (no coordinated omission, as wrk2 does it).

Every answer's status is checked (and the JSON routes' bodies lightly); a wrong status, a
connection error or a timeout is an error of its route group.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import random
import resource
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

BIOGRAPHIES = "/api/v1/biographies"
SOURCES_BODY = json.dumps(
    {
        "sources": [
            {
                "url": "https://en.wikipedia.org/wiki/Ada_Lovelace",
                "title": "Ada Lovelace",
                "source_type": "website",
            },
            {"title": "Ada's Algorithm", "author": "James Essinger", "source_type": "book"},
        ],
        "check_accessibility": False,
    }
).encode()

# The BookGen mix: route group -> weight. The read side is BookGenUser's (health, ready, status,
# list, sources), plus the routes a user with a book uses: its status while it is written, the
# download, submitting and cancelling; plus the reads no read cache answers: a deep list page and
# the DOCX of a book that has just finished (its first download, as soon as the book is seen
# completed). /metrics is Prometheus's scrape, not user traffic, and is left out.
MIX: dict[str, float] = {
    "health": 5,
    "ready": 1,
    "status": 3,
    "list": 2,
    "list-deep": 1,
    "job-status": 3,
    "download": 1,
    "download-docx-new": 0.5,
    "sources": 2,
    "generate": 1,
    "cancel": 1,
}
# The SLO's route group of each group of the mix (thresholds.json names).
ROUTE_GROUP = {
    "list-deep": "list",
    "download-docx-new": "download",
}
EXPECTED = {"generate": (202,), "cancel": (200, 409)}
REFRESH_S = 1.0


def route_group(group: str) -> str:
    return ROUTE_GROUP.get(group, group)


@dataclass(frozen=True, slots=True)
class Plan:
    url: str
    duration_s: float
    connections: int = 32
    rate: float | None = None  # None: closed loop
    warmup_s: float = 0.0
    mix: dict[str, float] = field(default_factory=lambda: dict(MIX))
    deep_pages: tuple[int, int] = (40, 150)  # page range of list-deep (page_size 20)
    book: tuple[int, int] = (2, 1000)  # chapters, words of a submitted (then cancelled) book
    # The most of its submitted books the mix holds uncancelled: past it, a "generate" pick
    # cancels one instead (as an empty hand turns "cancel" into "generate"). Picked at equal
    # weights, the two alone would be a random walk whose books, tens of them within a minute,
    # hold the server's job slots and queue ahead of the books being measured.
    held_books: int = 4
    timeout_s: float = 10.0
    seed: int = 1


@dataclass(slots=True)
class GroupStats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    samples: list[str] = field(default_factory=list)

    def error(self, reason: str) -> None:
        self.errors += 1
        if len(self.samples) < 3:
            self.samples.append(reason[:200])


def quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarise(stats: dict[str, GroupStats], elapsed: float) -> dict[str, Any]:
    groups: dict[str, Any] = {}
    everything: list[float] = []
    for name, s in sorted(stats.items()):
        ordered = sorted(s.latencies)
        everything.extend(ordered)
        groups[name] = {
            "count": len(ordered),
            "errors": s.errors,
            "error_samples": s.samples,
            "rps": len(ordered) / elapsed if elapsed > 0 else 0.0,
            "p50_ms": quantile(ordered, 0.50) * 1000,
            "p95_ms": quantile(ordered, 0.95) * 1000,
            "p99_ms": quantile(ordered, 0.99) * 1000,
            "max_ms": (ordered[-1] * 1000) if ordered else math.nan,
            "mean_ms": (sum(ordered) / len(ordered) * 1000) if ordered else math.nan,
        }
    everything.sort()
    return {
        "groups": groups,
        "count": len(everything),
        "errors": sum(s.errors for s in stats.values()),
        "rps": len(everything) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": quantile(everything, 0.50) * 1000,
        "p95_ms": quantile(everything, 0.95) * 1000,
        "p99_ms": quantile(everything, 0.99) * 1000,
        "mean_in_flight": sum(everything) / elapsed if elapsed > 0 else 0.0,  # Little's law
        "worst_group_p95_ms": max(
            (g["p95_ms"] for g in groups.values() if g["count"]), default=math.nan
        ),
    }


class HttpError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection; `request()` returns (status, body)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader = self.reader
        self.writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            end = lower.index(b"\r\n", at + 2)
            size = int(head[at + 17 : end])
            body = await reader.readexactly(size) if size else b""
        elif b"\r\ntransfer-encoding: chunked" in lower:
            parts = []
            while True:
                line = await reader.readuntil(b"\r\n")
                size = int(line.split(b";", 1)[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                parts.append((await reader.readexactly(size + 2))[:-2])
            body = b"".join(parts)
        else:
            body = b""
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def build(method: str, path: str, host: str, body: bytes | None = None, client: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if client:
        lines.append(f"X-Client-Id: {client}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


class Mix:
    """What the next request of each route group is, from what the generator has seen."""

    def __init__(self, plan: Plan, host: str) -> None:
        self.plan, self.host = plan, host
        self.rng = random.Random(plan.seed)
        self.groups = [g for g, w in plan.mix.items() if w > 0]
        self.weights = [plan.mix[g] for g in self.groups]
        self.running: list[str] = []  # jobs being written (job-status)
        self.completed: list[str] = []  # finished books (download)
        self.fresh: deque[str] = deque()  # finished books nobody downloaded as DOCX yet
        self.rendered: set[str] = set()
        self.mine: deque[str] = deque()  # jobs this generator submitted, to cancel
        self.static = {
            "health": build("GET", "/health", host),
            "ready": build("GET", "/ready", host),
            "status": build("GET", "/api/v1/status", host),
            "list": build("GET", f"{BIOGRAPHIES}?page_size=20", host),
            "sources": build("POST", "/api/v1/sources/validate", host, SOURCES_BODY),
        }

    def pick(self) -> str:
        return self.rng.choices(self.groups, self.weights)[0]

    def request(
        self, group: str, measuring: bool = True
    ) -> tuple[str, bytes, Callable[[int, bytes], str | None]]:
        """(group actually sent, request bytes, check of the answer).

        Before the measurement starts (`measuring` false) a new book's DOCX is not used up: the
        books that finished before the run are the run's first new-book DOCX downloads.
        """
        if group == "download-docx-new" and not measuring:
            group = "download"
        if group in self.static:
            return group, self.static[group], _ok(200)
        if group == "list-deep":
            page = self.rng.randint(*self.plan.deep_pages)
            path = f"{BIOGRAPHIES}?page_size=20&page={page}"
            return group, build("GET", path, self.host), _ok(200)
        if group == "job-status" and self.running:
            job = self.rng.choice(self.running)
            return group, build("GET", f"{BIOGRAPHIES}/{job}/status", self.host), _ok(200)
        if group == "download-docx-new" and self.fresh:
            job = self.fresh.popleft()
            self.rendered.add(job)
            path = f"{BIOGRAPHIES}/{job}/download?format=docx"
            return group, build("GET", path, self.host), _docx
        if group in ("download", "download-docx-new") and self.completed:
            job = self.rng.choice(self.completed)
            path = f"{BIOGRAPHIES}/{job}/download"
            return "download", build("GET", path, self.host), _ok(200)
        if group == "generate" and len(self.mine) >= self.plan.held_books:
            group = "cancel"
        if group == "cancel" and self.mine:
            job = self.mine.popleft()
            path = f"{BIOGRAPHIES}/{job}/cancel"
            return group, build("POST", path, self.host), _ok(200, 409)
        if group in ("generate", "cancel"):
            chapters, words = self.plan.book
            body = json.dumps(
                {"character": "Grace Hopper", "chapters": chapters, "total_words": words}
            ).encode()
            raw = build("POST", f"{BIOGRAPHIES}/generate", self.host, body, client=uuid.uuid4().hex)
            return "generate", raw, self._created
        return "status", self.static["status"], _ok(200)  # nothing to read yet

    def _created(self, status: int, body: bytes) -> str | None:
        if status != 202:
            return f"HTTP {status}: {body[:120]!r}"
        self.mine.append(json.loads(body)["job_id"])
        return None

    def learn(self, running: list[str], completed: list[str]) -> None:
        self.running = running or self.running
        for job in completed:
            if job not in self.rendered and job not in self.fresh:
                self.fresh.append(job)
        self.completed = completed or self.completed


def _ok(*codes: int) -> Callable[[int, bytes], str | None]:
    def check(status: int, body: bytes) -> str | None:
        return None if status in codes else f"HTTP {status}: {body[:120]!r}"

    return check


def _docx(status: int, body: bytes) -> str | None:
    if status != 200:
        return f"HTTP {status}: {body[:120]!r}"
    return None if body[:2] == b"PK" else "not a DOCX (zip) body"


async def _refresh(mix: Mix, host: str, port: int, stop: asyncio.Event) -> None:
    """Learn running and completed jobs (not counted: it is the generator's own bookkeeping)."""
    conn = Connection(host, port)
    with contextlib.suppress(asyncio.CancelledError):
        while not stop.is_set():
            try:
                found: dict[str, list[str]] = {}
                for state in ("in_progress", "completed"):
                    path = f"{BIOGRAPHIES}?page_size=100&status={state}"
                    _, body = await conn.request(build("GET", path, host))
                    found[state] = [item["job_id"] for item in json.loads(body)["items"]]
                mix.learn(found["in_progress"], found["completed"])
            except (OSError, ValueError, KeyError, asyncio.IncompleteReadError):
                conn.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REFRESH_S)
    conn.close()


async def _worker(
    index: int,
    plan: Plan,
    mix: Mix,
    stats: dict[str, GroupStats],
    host: str,
    port: int,
    t0: float,
    measure_from: float,
    end: float,
) -> None:
    conn = Connection(host, port)
    interval = plan.connections / plan.rate if plan.rate else 0.0
    due = t0 + (interval * index / plan.connections if plan.rate else 0.0)
    clock = time.perf_counter
    while True:
        now = clock()
        if plan.rate:
            if due >= end:
                break
            if due > now:
                await asyncio.sleep(due - now)
            start = due
            due += interval
        else:
            if now >= end:
                break
            start = now
        group, raw, check = mix.request(mix.pick(), measuring=start >= measure_from)
        reason: str | None
        try:
            async with asyncio.timeout(plan.timeout_s):
                status, body = await conn.request(raw)
            reason = check(status, body)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as error:
            conn.close()
            reason = f"{type(error).__name__}: {error}"
        done = clock()
        if start < measure_from:
            continue
        s = stats.get(group)
        if s is None:
            s = stats[group] = GroupStats()
        s.latencies.append(done - start)
        if reason is not None:
            s.error(reason)
    conn.close()


async def drive(plan: Plan) -> dict[str, Any]:
    parts = urlsplit(plan.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    mix = Mix(plan, f"{host}:{port}")
    stop = asyncio.Event()
    refresher = asyncio.create_task(_refresh(mix, host, port, stop))
    for _ in range(50):  # learn the jobs before the clock starts (bounded)
        if mix.running or mix.completed:
            break
        await asyncio.sleep(0.1)
    stats: dict[str, GroupStats] = {}
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    measure_from = t0 + plan.warmup_s
    end = measure_from + plan.duration_s
    workers = [
        _worker(i, plan, mix, stats, host, port, t0, measure_from, end)
        for i in range(plan.connections)
    ]
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - measure_from
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    stop.set()
    await refresher
    wall = time.perf_counter() - t0
    report = summarise(stats, elapsed)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    report.update(
        {
            "offered_rps": plan.rate,
            "connections": plan.connections,
            "duration_s": elapsed,
            "generator_cpu_s": cpu,
            "generator_cpu_share": cpu / wall if wall > 0 else 0.0,
            "new_docx": len(mix.rendered),
        }
    )
    return report


def _main() -> None:
    """`python -m bookgen.acceptance.loadgen`: a plan (JSON) on stdin, the report (JSON) out."""
    raw = json.loads(sys.stdin.read())
    raw["mix"] = raw.get("mix") or dict(MIX)
    raw["deep_pages"] = tuple(raw["deep_pages"])
    raw["book"] = tuple(raw["book"])
    plan = Plan(**raw)
    try:
        import uvloop

        report = uvloop.run(drive(plan))
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        report = asyncio.run(drive(plan))
    sys.stdout.write(json.dumps(report))


def run(plan: Plan, nice: int = 0) -> dict[str, Any]:
    """Drive `plan` from a child process (niced by `nice`); returns its report."""
    limit = plan.warmup_s + plan.duration_s + plan.timeout_s + 60
    argv = [sys.executable, "-m", "bookgen.acceptance.loadgen"]
    if nice:
        argv = ["nice", "-n", str(nice), *argv]
    process = subprocess.run(
        argv,
        input=json.dumps(dataclasses.asdict(plan)),
        capture_output=True,
        text=True,
        timeout=limit,
        check=False,
    )
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed: {process.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(process.stdout)
    return result


if __name__ == "__main__":
    _main()
