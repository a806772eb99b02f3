#!/usr/bin/env python3
"""Telemetry overhead: the same server with BOOKGEN_TELEMETRY on and off, loaded by wrk.

Both servers run at once (real `bookgen serve` processes on free 127.0.0.1 ports, each with its
own SQLite file and the built-in simulated model); wrk runs alternate on/off so background noise
on a shared machine hits both alike. For `/health` and for the job-status route (of a finished
job created first) it prints req/s, p99 and RSS per run, and the on/off throughput ratio.

    python scripts/benchmark_overhead.py [--duration 10] [--rounds 3] [--connections 32]

Exit status 1 with `--gate` when a median ratio is below `--min-ratio` (default 0.85).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bookgen.stack.ports import free_port
from bookgen.stack.process import Component, ComponentError

SERVE = [sys.executable, "-c", "from bookgen.cli import main; main()", "serve"]
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Server:
    name: str
    telemetry: bool
    port: int
    component: Component
    routes: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.component.pid is not None
        return self.component.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        """User + system CPU time of the server process (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(match.group(1)) / 1024 if match else float("nan")


@dataclass
class Run:
    server: str
    route: str
    rps: float
    p99_ms: float
    rss_mb: float
    cpu_us: float  # server CPU per request


def start(name: str, telemetry: bool, workdir: Path, workers: int) -> Server:
    port = free_port()
    env = {
        **os.environ,
        "BOOKGEN_TELEMETRY": "true" if telemetry else "false",
        "BOOKGEN_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / f'{name}.db'}",
        "BOOKGEN_SIM__TOKENS_PER_SECOND": "2000",
        "BOOKGEN_SIM__TIME_TO_FIRST_TOKEN_S": "0",
        "BOOKGEN_RATE_LIMIT": "1000000/minute",
    }
    env.pop("BOOKGEN_LLM_BASE_URL", None)
    command = [*SERVE, "--port", str(port), "--workers", str(workers)]
    log = workdir / f"{name}.log"
    component = Component(
        name, command, log, f"http://127.0.0.1:{port}/health", env, inherit_env=False
    )
    try:
        component.run(timeout_s=60)
    except ComponentError as exc:
        raise SystemExit(str(exc)) from None
    return Server(name, telemetry, port, component)


def stop(server: Server) -> None:
    server.component.stop(grace_s=30)


def finished_job_status_path(server: Server) -> str:
    """Create a small job and wait for it, so the load hits a real row and no job runs meanwhile."""
    body = {"character": "Ada Lovelace", "chapters": 2, "total_words": 1000}
    response = httpx.post(f"{server.base}/api/v1/biographies/generate", json=body, timeout=10)
    response.raise_for_status()
    path = f"/api/v1/biographies/{response.json()['job_id']}/status"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if httpx.get(server.base + path, timeout=10).json()["status"] == "completed":
            return path
        time.sleep(0.2)
    raise SystemExit(f"{server.name}: job did not complete in 120 s")


def wrk(url: str, duration: int, connections: int, threads: int) -> tuple[float, float, int]:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rps is None or p99 is None or total is None:
        raise SystemExit(f"cannot parse wrk output:\n{out}")
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} non-2xx responses\n{out}")
    return float(rps.group(1)), float(p99.group(1)) * UNITS[p99.group(2)], int(total.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="on/off pairs per route")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server")
    parser.add_argument("--min-ratio", type=float, default=0.85)
    parser.add_argument("--gate", action="store_true", help="exit 1 if a ratio is below")
    parser.add_argument(
        "--routes", nargs="+", default=["health", "job-status"], choices=["health", "job-status"]
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian package `wrk`)")

    with tempfile.TemporaryDirectory(prefix="bookgen-overhead-") as tmp:
        servers = [start("on", True, Path(tmp), args.workers)]
        try:
            servers.append(start("off", False, Path(tmp), args.workers))
            for server in servers:
                server.routes = {
                    "health": "/health",
                    "job-status": finished_job_status_path(server),
                }
                for path in server.routes.values():
                    wrk(server.base + path, args.warmup, args.connections, args.threads)
            runs: list[Run] = []
            for route in args.routes:
                for i in range(args.rounds):
                    # alternate which goes first, so drift over time does not favour one side
                    order = servers if i % 2 == 0 else servers[::-1]
                    for server in order:
                        url = server.base + server.routes[route]
                        cpu = server.cpu_s()
                        rps, p99, n = wrk(url, args.duration, args.connections, args.threads)
                        cpu_us = (server.cpu_s() - cpu) / n * 1e6
                        runs.append(Run(server.name, route, rps, p99, server.rss_mb(), cpu_us))
                        print(
                            f"{route:<11} {server.name:<4} round {i + 1}: {rps:9.0f} req/s  "
                            f"p99 {p99:7.2f} ms  RSS {runs[-1].rss_mb:6.1f} MB  "
                            f"CPU {cpu_us:7.1f} us/req",
                            flush=True,
                        )
        finally:
            for server in servers:
                stop(server)
    return report(runs, args)


def report(runs: list[Run], args: argparse.Namespace) -> int:
    """Per route: medians, and the on/off throughput ratio of each interleaved pair.

    The gate uses the median of the per-pair ratios: each pair ran back to back, so load from
    other processes on a shared machine cancels out better than in a ratio of overall medians.
    Server CPU per request (from /proc) is printed too: it barely depends on that outside load.
    """
    print(
        f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.rounds} "
        f"interleaved rounds, {args.workers} worker(s), {os.cpu_count()} CPUs"
    )
    print(
        f"{'route':<11} {'telemetry':<9} {'req/s (median)':>15} {'p99 ms':>8} "
        f"{'RSS MB':>7} {'CPU us/req':>11}"
    )
    failed = False
    for route in args.routes:
        side = {
            name: [r for r in runs if r.route == route and r.server == name]
            for name in ("off", "on")
        }
        for name, mine in side.items():
            print(
                f"{route:<11} {name:<9} {statistics.median(r.rps for r in mine):>15.0f} "
                f"{statistics.median(r.p99_ms for r in mine):>8.2f} "
                f"{max(r.rss_mb for r in mine):>7.1f} "
                f"{statistics.median(r.cpu_us for r in mine):>11.1f}"
            )
        pairs = [on.rps / off.rps for on, off in zip(side["on"], side["off"], strict=True)]
        ratio = statistics.median(pairs)
        of_medians = statistics.median(r.rps for r in side["on"]) / statistics.median(
            r.rps for r in side["off"]
        )
        cpu_ratio = statistics.median(r.cpu_us for r in side["off"]) / statistics.median(
            r.cpu_us for r in side["on"]
        )
        verdict = "ok" if ratio >= args.min_ratio else "BELOW GOAL"
        print(
            f"{route:<11} throughput ratio on/off {ratio:.3f} (median of pairs "
            f"{', '.join(f'{p:.3f}' for p in pairs)}; ratio of medians {of_medians:.3f}); "
            f"CPU-per-request ratio off/on {cpu_ratio:.3f}; goal >= {args.min_ratio}: {verdict}"
        )
        failed |= ratio < args.min_ratio
    return 1 if failed and args.gate else 0


if __name__ == "__main__":
    sys.exit(main())
