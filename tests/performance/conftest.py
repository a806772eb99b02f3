"""The API as users run it on one machine, measured while books are really being written.

One `bookgen serve` process (SQLite, the in-process job runtime) against the simulated model in
a process of its own at its default speed (40 tokens/s a stream); 32 books kept in progress the
whole time (one submitted for each that finishes), and 2,500 jobs in the store so that a deep
list page is a real query. The load comes from `bookgen.acceptance.loadgen`, a separate process
that keeps 32 requests in flight on keep-alive connections and times every answer; its own CPU
is reported beside the figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from perf_support import BOOKS, IN_FLIGHT, RESULTS

from bookgen.acceptance import loadgen
from bookgen.acceptance.capacity import (
    Target,
    capacity_goal_rps,
    format_groups,
    knee_verdict,
    measure,
    serve_target,
)
from bookgen.acceptance.project import Project

DURATION_S = 30.0
WARMUP_S = 3.0
SEEDED_JOBS = 2500  # 125 pages of 20: list-deep reads pages 40..120


@pytest.fixture(scope="session")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    run_dir: Path = tmp_path_factory.mktemp("perf-server")
    with serve_target(run_dir, books=BOOKS, seed=SEEDED_JOBS) as running:
        yield running


@pytest.fixture(scope="session")
def under_load(target: Target) -> dict[str, Any]:
    """The BookGen mix, IN_FLIGHT requests always in flight, for DURATION_S."""
    plan = loadgen.Plan(target.url, DURATION_S, IN_FLIGHT, warmup_s=WARMUP_S, deep_pages=(40, 120))
    report = measure(target, plan)
    RESULTS["load"] = report
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from perf_support import ROOT, target_p95_ms

    load = RESULTS.get("load")
    if load:
        terminalreporter.section(
            f"BookGen API: {IN_FLIGHT} requests in flight, {BOOKS} books being written "
            "(bookgen serve, SQLite, one process)"
        )
        for line in format_groups(load, target_p95_ms("health")):
            terminalreporter.write_line(line)
    capacity = RESULTS.get("capacity")
    if capacity:
        terminalreporter.section("BookGen API capacity (open loop, BookGen mix, books written)")
        terminalreporter.write_line(
            f"{'offered':>8} {'served':>8} {'p95 ms':>7} {'worst p95':>9} {'errors':>6} "
            f"{'gen CPU':>7} {'srv CPU':>7}  step"
        )
        for step in capacity["steps"]:
            terminalreporter.write_line(
                f"{step['offered_rps']:>8.0f} {step['rps']:>8.1f} {step['p95_ms']:>7.1f} "
                f"{step['worst_group_p95_ms']:>9.1f} {step['errors']:>6} "
                f"{step['generator_cpu_share']:>7.0%} {step['server_cpu_share'] or math.nan:>7.0%}"
                f"  {step['breach'] or 'ok'}"
            )
        knee = capacity["knee"]
        terminalreporter.write_line(
            "KNEE: "
            + (
                f"{knee['rps']:.0f} req/s (offered {knee['offered_rps']:.0f}), worst route "
                f"p95 {knee['worst_group_p95_ms']:.0f} ms, {knee['errors']} errors"
                if knee
                else "none: the first step already broke"
            )
            + "; "
            + knee_verdict(knee["rps"] if knee else 0.0, capacity_goal_rps(Project(ROOT)))
        )
