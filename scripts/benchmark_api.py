"""The API under load while books are written: p95 per route group, then the capacity knee.

    python scripts/benchmark_api.py                       # both, against its own `bookgen serve`
    python scripts/benchmark_api.py --no-search --duration 30
    python scripts/benchmark_api.py --host http://127.0.0.1:8000   # a running API (any tier)

Starts the simulated model and `bookgen serve` (SQLite) on free 127.0.0.1 ports, keeps
`--books` books being written, drives the BookGen mix with `--connections` requests always in
flight (closed loop) and prints each route group's p95 against slo.yaml's bound; then climbs an
open-loop offered rate until p95 or errors break and prints the knee. Writes
`reports/benchmark-api-<time>/benchmark.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bookgen.acceptance import loadgen
from bookgen.acceptance.capacity import (
    Books,
    Target,
    format_groups,
    latency_bound_ms,
    measure,
    search,
    serve_target,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="measure this API instead of starting one")
    parser.add_argument("--books", type=int, default=32)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=1, help="closed-loop runs")
    parser.add_argument("--no-search", action="store_true")
    parser.add_argument("--step-rps", type=float, default=250.0)
    parser.add_argument("--step-time", type=float, default=10.0)
    parser.add_argument("--nice", type=int, default=0, help="niceness of the generator process")
    parser.add_argument("--database-url", help="store of the server it starts (default SQLite)")
    parser.add_argument("--report-dir", type=Path)
    args = parser.parse_args()
    bound = latency_bound_ms()
    folder = args.report_dir or Path("reports") / f"benchmark-api-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {"p95_bound_ms": bound}
    with ExitStack() as stack:
        if args.host:
            keeper = stack.enter_context(Books(args.host, args.books))
            keeper.wait_running()
            target = Target(args.host, [], keeper, f"{args.host}, {args.books} books kept going")
        else:
            run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-api-")))
            target = stack.enter_context(
                serve_target(run_dir, args.books, database_url=args.database_url)
            )
        print(f"target: {target.description}", flush=True)
        results["target"] = target.description
        runs = []
        for index in range(args.repeat):
            plan = loadgen.Plan(
                target.url, args.duration, args.connections, warmup_s=2.0, seed=100 + index
            )
            report = measure(target, plan, nice=args.nice)
            runs.append(report)
            print(f"\nrun {index + 1}: closed loop, {args.connections} in flight", flush=True)
            print("\n".join(format_groups(report, bound)), flush=True)
        results["closed_loop"] = runs
        if not args.no_search:
            found = search(
                target, bound, args.step_rps, args.step_rps, args.step_time, nice=args.nice
            )
            results["capacity"] = found
            knee, breach = found["knee"], found["breach"]
            print(
                "KNEE: "
                + (
                    f"{knee['rps']:.0f} req/s served at {knee['offered_rps']:.0f} offered, "
                    f"worst-group p95 {knee['worst_group_p95_ms']:.0f} ms, {knee['errors']} errors"
                    if knee
                    else "none (the first step broke)"
                )
                + (f"; next step broke: {breach['breach']}" if breach else ""),
                flush=True,
            )
    (folder / "benchmark.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"report: {folder / 'benchmark.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
