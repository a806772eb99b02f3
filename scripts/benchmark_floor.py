"""What one API process can serve at best on this machine: the framework's floor beside ours.

    python scripts/benchmark_floor.py [--duration 10] [--connections 32]

Drives, one after the other with `wrk` (Debian's; one thread, keep-alive, `--connections` in
flight), for `--duration` seconds each:
- a bare FastAPI app in uvicorn (same server settings as `bookgen serve`: httptools, uvloop, no
  access log) with one route returning the body of our `/health`: the cheapest request the
  framework can answer, with nothing of ours in it;
- `bookgen serve` (SQLite, no books being written) on `/health` (our middleware, telemetry and
  access log, no store) and on `/api/v1/status` (a store read behind a one-second cache).
Prints req/s, the server's CPU share and its CPU time per request. The capacity goal per API
process (slo.yaml's figure is in the performance suite) is a budget of CPU per request:
3,000 req/s is 333 us of one core for each request of the mix, all of it included. Figures, not
assertions: the machine is shared with the generator.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil

from bookgen.acceptance.server import ServeProcess
from bookgen.stack.ports import free_port

GOAL_RPS = 3000.0


def serve_bare(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "healthy", "timestamp": "now", "version": "0"})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def wait_up(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


def drive(url: str, pids: list[int], duration: float, connections: int) -> dict[str, float]:
    processes = [psutil.Process(pid) for pid in pids]

    def cpu() -> float:
        return sum(p.cpu_times().user + p.cpu_times().system for p in processes)

    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration:.0f}s", url]
    subprocess.run([*argv[:-2], "-d2s", url], check=True, capture_output=True)  # warm up
    cpu0, t0 = cpu(), time.monotonic()
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    cpu_s, elapsed = cpu() - cpu0, time.monotonic() - t0
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    rps = float(found.group(1)) if found else 0.0
    return {
        "rps": rps,
        "server_cpu_share": cpu_s / elapsed,
        "cpu_us_per_request": 1e6 * cpu_s / (rps * elapsed) if rps else float("nan"),
        "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk; scripts/setup.sh does it)")
        return 2
    rows: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        port = free_port()
        bare = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(port)])
        stack.callback(bare.wait, 10)
        stack.callback(bare.terminate)
        url = f"http://127.0.0.1:{port}/health"
        wait_up(url)
        rows["bare FastAPI /health"] = drive(url, [bare.pid], args.duration, args.connections)
        bare.terminate()
        run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-floor-")))
        server = stack.enter_context(
            ServeProcess(run_dir, 1, {"BOOKGEN_RATE_LIMIT": "10000000/minute"})
        )
        for name, path in (("bookgen /health", "/health"), ("bookgen status", "/api/v1/status")):
            rows[name] = drive(server.url + path, server.pids(), args.duration, args.connections)
    budget_us = 1e6 / GOAL_RPS
    print(f"\n{'target':<24}{'req/s':>9}{'server CPU':>12}{'CPU us/req':>12}{'non-2xx':>9}")
    for name, row in rows.items():
        print(
            f"{name:<24}{row['rps']:>9.0f}{row['server_cpu_share']:>11.0%}"
            f"{row['cpu_us_per_request']:>12.0f}{row['non_2xx']:>9.0f}"
        )
    print(f"budget of {GOAL_RPS:.0f} req/s on one core: {budget_us:.0f} us of CPU per request")
    if args.json:
        args.json.write_text(json.dumps({"goal_rps": GOAL_RPS, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
