"""A burst of concurrent submissions against one real API process: are refusals cheap?

    python scripts/benchmark_burst.py [--stores sqlite postgres] [--submissions 1000] [--json F]

For each store (a temporary SQLite file; a throw-away database on the PostgreSQL at
127.0.0.1:5432) it starts `bookgen serve` on a free 127.0.0.1 port with API keys required (and
the simulated model as its own process, `bookgen sim-llm`, as a remote provider would be),
makes the keys, then sends `--submissions` POST /generate at once over as many connections:
one flooding principal sends `--flood-share` of them, the rest are spread over `--principals`
others. The per-principal rate limit and the queue cap (`--max-queue`) refuse most of them.

Printed per store, for refusals (429) and admissions (202): p50/p95/max as the client saw them
(queueing in the one server process included) and as the server measured them (its access log:
from the first byte of the request to the response, the figure the 200 ms API target is set
on), the 5xx count, and whether every refusal carried Retry-After. Goals: refusals p95 < 50 ms,
admitted p95 < 200 ms, no 5xx. Figures, not assertions: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bookgen.service.auth import create_key
from bookgen.service.store import Store
from bookgen.stack.ports import free_port
from bookgen.stack.process import Component, bookgen_argv
from throwaway_db import throwaway_database

GENERATE = "/api/v1/biographies/generate"
BODY = {"character": "Ada Lovelace", "chapters": 2, "total_words": 1000}


@dataclass
class Outcome:
    client_ms: dict[int, list[float]] = field(default_factory=dict)
    retry_after_missing: int = 0
    client_cpu_s: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def make_keys(database_url: str, names: list[str]) -> dict[str, str]:
    store = Store.from_url(database_url)
    try:
        await store.prepare_schema(migrate=True)
        return {name: (await create_key(store, name))[0] for name in names}
    finally:
        await store.close()


async def _post(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 request on its own connection: (status, head). Raw streams, not an HTTP
    client library, so the client's own CPU (one process sending 1,000 requests) stays small
    beside the server's."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.read()  # to the end: the server closes (Connection: close)
    finally:
        writer.close()
    return int(head.split(b" ", 2)[1]), head


async def burst(url: str, plan: list[str], keys: dict[str, str], legacy: bool) -> Outcome:
    outcome = Outcome()
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(BODY).encode()

    def who(name: str) -> str:
        # A baseline from before principals told clients apart by a header it trusted.
        return f"X-Client-Id: {name}" if legacy else f"Authorization: Bearer {keys[name]}"

    def request(name: str) -> bytes:
        return (
            f"POST {GENERATE} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"{who(name)}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body

    # Warm up: the burst meets a process that has served reads and stored a job before (its
    # first write opens the writer's connection), as a running service has.
    async with httpx.AsyncClient(base_url=url) as client:
        name, _, value = who("warmup").partition(": ")
        await client.get("/api/v1/biographies", headers={name: value})
        answer = await client.post(GENERATE, json=BODY, headers={name: value})
        assert answer.status_code == 202, answer.text
        await asyncio.sleep(1.0)
    gate = asyncio.Event()
    cpu_before = time.process_time()

    async def one(name: str) -> None:
        payload = request(name)
        await gate.wait()
        started = time.perf_counter()
        try:
            code, head = await _post(host, int(port), payload)
        except (OSError, asyncio.IncompleteReadError) as error:
            outcome.errors[type(error).__name__] += 1
            return
        elapsed = (time.perf_counter() - started) * 1000
        outcome.client_ms.setdefault(code, []).append(elapsed)
        if code == 429 and b"\r\nretry-after:" not in head.lower():
            outcome.retry_after_missing += 1

    tasks = [asyncio.create_task(one(name)) for name in plan]
    await asyncio.sleep(0.2)  # every task is parked at the gate
    gate.set()
    await asyncio.gather(*tasks)
    outcome.client_cpu_s = time.process_time() - cpu_before
    return outcome


def server_durations(log: Path) -> dict[int, list[float]]:
    """Durations (ms) of POST /generate by status, from the server's JSON access log."""
    found: dict[int, list[float]] = {}
    for line in log.read_text(errors="replace").splitlines():
        if '"duration_ms"' not in line or GENERATE not in line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("method") == "POST":
            found.setdefault(int(record["status"]), []).append(float(record["duration_ms"]))
    return found


def run_one(store: str, database_url: str, args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"burst-{store}-"))
    others = [f"user{n:03d}" for n in range(args.principals)]
    names = ["warmup", "flooder", *others]
    legacy = args.baseline_src is not None
    keys = {} if legacy else asyncio.run(make_keys(database_url, names))
    flood = round(args.submissions * args.flood_share)
    plan = ["flooder"] * flood + [others[n % len(others)] for n in range(args.submissions - flood)]
    # The model in its own process, as a provider is in production: its streams for the books
    # admitted during the burst take no CPU from the API process being measured.
    sim_port = free_port()
    sim = Component(
        f"sim-{store}",
        bookgen_argv("sim-llm", "--host", "127.0.0.1", "--port", str(sim_port)),
        workdir / "sim.log",
        f"http://127.0.0.1:{sim_port}/health",
    )
    sim.run(timeout_s=60)
    port = free_port()
    env = {
        "BOOKGEN_LLM_BASE_URL": f"http://127.0.0.1:{sim_port}/v1",
        "BOOKGEN_DATABASE_URL": database_url,
        **({} if legacy else {"BOOKGEN_AUTH": "on"}),
        **({"PYTHONPATH": str(args.baseline_src)} if legacy else {}),
        "BOOKGEN_RATE_LIMIT": args.rate_limit,
        "BOOKGEN_MAX_QUEUE": str(args.max_queue),
        "BOOKGEN_ACCESS_LOG": "true",
        "BOOKGEN_TELEMETRY": "true",
        "OTEL_TRACES_EXPORTER": "none",
    }
    server = Component(
        f"api-{store}",
        bookgen_argv("serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
        workdir / "server.log",
        f"http://127.0.0.1:{port}/health",
        env,
    )
    try:
        server.run(timeout_s=60)
    except BaseException:
        sim.stop(grace_s=5)
        raise
    profiler: subprocess.Popen[bytes] | None = None
    try:
        if args.profile:
            # Collapsed stacks of the server during the burst (py-spy samples from outside).
            out = workdir / "server.folded"
            profiler = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "-p",
                    str(server.pid),
                    "-f",
                    "raw",
                    "-o",
                    str(out),
                    "-r",
                    "200",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
        outcome = asyncio.run(burst(f"http://127.0.0.1:{port}", plan, keys, legacy))
        time.sleep(0.5)  # the access log is written by a thread
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=30)
            print(f"profile: {workdir / 'server.folded'}")
        server.stop(grace_s=10)
        sim.stop(grace_s=5)
    measured = server_durations(workdir / "server.log")
    admitted_c, refused_c = outcome.client_ms.get(202, []), outcome.client_ms.get(429, [])
    admitted_s, refused_s = measured.get(202, []), measured.get(429, [])
    fivexx = sum(len(v) for code, v in outcome.client_ms.items() if code >= 500)
    return {
        "store": store,
        "submissions": len(plan),
        "statuses": {str(k): len(v) for k, v in sorted(outcome.client_ms.items())},
        "transport_errors": dict(outcome.errors),
        "refused_p95_ms_server": round(percentile(refused_s, 0.95), 1),
        "admitted_p95_ms_server": round(percentile(admitted_s, 0.95), 1),
        "refused_p50_ms_server": round(percentile(refused_s, 0.50), 1),
        "admitted_p50_ms_server": round(percentile(admitted_s, 0.50), 1),
        "refused_max_ms_server": round(max(refused_s, default=float("nan")), 1),
        "admitted_max_ms_server": round(max(admitted_s, default=float("nan")), 1),
        "refused_p95_ms_client": round(percentile(refused_c, 0.95), 1),
        "admitted_p95_ms_client": round(percentile(admitted_c, 0.95), 1),
        "refused_p50_ms_client": round(percentile(refused_c, 0.50), 1),
        "admitted_p50_ms_client": round(percentile(admitted_c, 0.50), 1),
        "burst_wall_ms_client": round(max(admitted_c + refused_c, default=0.0), 1),
        "server_mean_ms": round(statistics.fmean(admitted_s + refused_s), 2)
        if admitted_s or refused_s
        else None,
        "status_5xx": fivexx,
        "client_cpu_s": round(outcome.client_cpu_s, 2),
        "every_refusal_has_retry_after": outcome.retry_after_missing == 0,
        "server_log": str(workdir / "server.log"),
    }


def report(row: dict[str, Any]) -> None:
    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    print(f"\n== {row['store']}: {row['submissions']} concurrent submissions")
    print(f"   statuses {row['statuses']}  transport errors {row['transport_errors'] or 0}")
    print(
        f"   refusals  p95 {row['refused_p95_ms_server']:>7} ms server "
        f"(p50 {row['refused_p50_ms_server']}, max {row['refused_max_ms_server']}) "
        f"[goal < 50: {verdict(row['refused_p95_ms_server'] < 50)}];"
        f" client p95 {row['refused_p95_ms_client']} ms"
    )
    print(
        f"   admitted  p95 {row['admitted_p95_ms_server']:>7} ms server "
        f"(p50 {row['admitted_p50_ms_server']}, max {row['admitted_max_ms_server']}) "
        f"[goal < 200: {verdict(row['admitted_p95_ms_server'] < 200)}];"
        f" client p95 {row['admitted_p95_ms_client']} ms"
    )
    print(
        f"   5xx {row['status_5xx']} [{verdict(row['status_5xx'] == 0)}]; every refusal has "
        f"Retry-After: {row['every_refusal_has_retry_after']}; whole burst answered in "
        f"{row['burst_wall_ms_client']} ms (mean server time {row['server_mean_ms']} ms, "
        f"client CPU {row['client_cpu_s']} s)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--submissions", type=int, default=1000)
    parser.add_argument("--principals", type=int, default=40, help="besides the flooder")
    parser.add_argument("--flood-share", type=float, default=0.6)
    parser.add_argument("--rate-limit", default="10/minute", help="per principal")
    parser.add_argument("--max-queue", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--profile", action="store_true", help="py-spy the server (raw stacks)")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="run the server from this `src` folder (e.g. `git archive` of an older commit), "
        "telling principals apart by X-Client-Id as BookGen did before API keys",
    )
    args = parser.parse_args()
    rows = []
    for store in args.stores:
        if store == "sqlite":
            path = Path(tempfile.mkdtemp(prefix="burst-db-")) / "burst.db"
            rows.append(run_one(store, f"sqlite+aiosqlite:///{path}", args))
        else:
            with throwaway_database("bookgen_burst") as url:
                rows.append(run_one(store, url, args))
        report(rows[-1])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
