"""Books per hour with 1, 2 and 3 workers, the scaling efficiency, and RSS per worker.

    python scripts/benchmark_workers.py [--workers 1 2 3] [--books-per-worker 4] [--json FILE]

Each round starts a fresh tier on this machine (a private Redis, a throw-away PostgreSQL
database, the simulated model, one API process, N `bookgen worker`s at 32 slots each), submits
`books-per-worker x N` books at once and times them from the first submission to the last
completion. Printed: books/h per round, the scaling efficiency books/h(N) / (N x books/h(1)),
the largest RSS of any worker and the most sections it held at once. The simulated model serves
every stream from one process: `sim CPU` says how busy it was, since a saturated model (or a
saturated machine: 2 cores here) limits the fleet rather than the workers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bookgen.acceptance.fleet import Fleet, Host
from bookgen.stack.ports import free_port
from bookgen.stack.services import redis_server, redis_url
from throwaway_db import throwaway_database

RUNNING = re.compile(r"^bookgen_worker_sections_running (\S+)$", re.M)


class Sampler(threading.Thread):
    """Max RSS and max sections running per worker; CPU seconds of the model process."""

    def __init__(self, fleet: Fleet) -> None:
        super().__init__(daemon=True)
        self.fleet = fleet
        self.rss = 0
        self.running = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.5):
            for worker in self.fleet.workers:
                try:
                    process = psutil.Process(worker.component.pid)
                    self.rss = max(self.rss, process.memory_info().rss)
                    text = httpx.get(worker.metrics_url, timeout=1).text
                except (psutil.Error, httpx.HTTPError, TypeError):
                    continue
                match = RUNNING.search(text)
                if match:
                    self.running = max(self.running, float(match.group(1)))


def round_for(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    cleanup = contextlib.ExitStack()
    database = cleanup.enter_context(throwaway_database("bookgen_bench"))
    run_dir = Path(tempfile.mkdtemp(prefix=f"bench-workers-{workers}-"))
    port = free_port()
    redis = redis_server(run_dir, "127.0.0.1", port).run(timeout_s=20)
    fleet = Fleet(
        run_dir / "fleet",
        redis_url("127.0.0.1", port),
        database,
        env={"BOOKGEN_ACCESS_LOG": "false", "BOOKGEN_RATE_LIMIT": "10000/minute"},
        tokens_per_second=args.tokens_per_second,
    )
    try:
        fleet.start([Host("local")] * workers)
        assert fleet.sim is not None and fleet.sim.pid is not None
        sim = psutil.Process(fleet.sim.pid)
        sim_cpu = sum(sim.cpu_times()[:2])
        sampler = Sampler(fleet)
        sampler.start()
        books = args.books_per_worker * workers
        started = time.monotonic()
        ids = fleet.submit(books, args.chapters, args.total_words)
        statuses = fleet.wait_finished(ids, timeout_s=args.timeout)
        elapsed = time.monotonic() - started
        sampler.done.set()
        sim_busy = (sum(sim.cpu_times()[:2]) - sim_cpu) / elapsed
        completed = sum(s == "completed" for s in statuses.values())
        return {
            "workers": workers,
            "books": books,
            "completed": completed,
            "seconds": round(elapsed, 1),
            "books_per_hour": round(completed / elapsed * 3600, 1),
            "worker_rss_max_mb": round(sampler.rss / 2**20, 1),
            "max_sections_running_per_worker": sampler.running,
            "sim_cpu_share": round(sim_busy, 2),
        }
    finally:
        fleet.stop()
        redis.stop(grace_s=2)
        cleanup.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--books-per-worker", type=int, default=4)
    parser.add_argument("--chapters", type=int, default=8)
    parser.add_argument("--total-words", type=int, default=8000)
    parser.add_argument("--tokens-per-second", type=float, default=40.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rows = [round_for(n, args) for n in args.workers]
    base = next((r["books_per_hour"] for r in rows if r["workers"] == 1), None)
    print(
        f"\n{args.books_per_worker} books per worker, {args.chapters} chapters, "
        f"{args.total_words} words, {args.tokens_per_second:g} tokens/s per stream, 32 slots"
    )
    print(
        f"{'workers':>7} {'books':>6} {'s':>7} {'books/h':>8} {'efficiency':>10} "
        f"{'RSS max MB':>10} {'max running':>11} {'sim CPU':>7}"
    )
    for row in rows:
        efficiency = row["books_per_hour"] / (row["workers"] * base) if base else float("nan")
        row["scaling_efficiency"] = round(efficiency, 3)
        print(
            f"{row['workers']:>7} {row['completed']:>3}/{row['books']:<2} {row['seconds']:>7} "
            f"{row['books_per_hour']:>8} {efficiency:>10.3f} {row['worker_rss_max_mb']:>10} "
            f"{row['max_sections_running_per_worker']:>11g} {row['sim_cpu_share']:>7}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["completed"] == r["books"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
