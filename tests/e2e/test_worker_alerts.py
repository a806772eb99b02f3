"""End to end on the fast profile, on a worker tier (`bookgen up --engine celery`): workers killed
or paused, the broker and the store taken down; each alert fires within its bound and resolves.
Rows join reports/e2e-ttd.json with the other families."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bookgen.slo.dashboards import panel_queries
from bookgen.stack import binaries
from bookgen.stack.faults import SimFaults
from bookgen.stack.profile import load_spec
from bookgen.stack.supervisor import Stack
from e2e.conftest import E2E_ENV
from e2e.load import keep_submitting, submit
from e2e.report import RESULTS
from e2e.scenarios import Expect, Scenario, problems, run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKERS = 2
TOOLS = ("prometheus", "alertmanager", "redis-server", "initdb", "postgres", "redis-exporter")
TIER_ENV = {
    **E2E_ENV,
    "BOOKGEN_SECTION_LEASE_S": "3",
    "BOOKGEN_REAP_INTERVAL_S": "0.5",
    "BOOKGEN_WORKER_DRAIN_S": "0",
}


@pytest.fixture(scope="module")
def tier() -> Iterator[Stack]:
    for tool in (*TOOLS, "postgres-exporter", "celery-exporter"):
        try:
            binaries.find(tool)
        except binaries.MissingBinaryError as exc:
            pytest.skip(str(exc))
    # Outside pytest's 0700 tmp root: the private PostgreSQL runs as its own user.
    folder = Path(os.environ.get("BOOKGEN_E2E_TIER_DIR") or tempfile.mkdtemp(prefix="bg-e2e-"))
    folder.chmod(0o711)
    try:
        with Stack(
            folder / "run", workers=WORKERS, fast=True, env=TIER_ENV, engine="celery"
        ) as started:
            yield started
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def record(rows: list[dict[str, object]]) -> None:
    RESULTS["scenarios"].extend(rows)
    assert not problems(rows), problems(rows)


def wait_book(stack: Stack, job_id: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=stack.api_url, timeout=5) as client:
        while time.monotonic() < deadline:
            status = str(client.get(f"/api/v1/biographies/{job_id}/status").json()["status"])
            if status in ("completed", "failed"):
                return status
            time.sleep(0.3)
    return "timeout"


def test_the_tier_writes_books_before_any_fault(tier: Stack) -> None:
    job = submit(tier.api_url, "tier-warmup").json()["job_id"]
    assert wait_book(tier, job) == "completed"


def test_a_killed_worker_fires_workers_missing_and_resolves(tier: Stack) -> None:
    record(
        run(
            tier,
            Scenario(
                "worker 1 killed (SIGKILL)",
                lambda: tier.kill_worker(1),
                lambda: tier.restart_worker(1),
                [Expect("workers", "BookGenWorkersMissing", {"severity": "warning"})],
            ),
        )
    )


def test_paused_workers_fire_backlog_and_the_no_worker_page(tier: Stack) -> None:
    def pause_all_then_submit() -> None:
        for index in range(WORKERS):
            tier.pause_worker(index)
        submit(tier.api_url, "tier-backlog")

    def resume_all() -> None:
        for index in range(WORKERS):
            tier.resume_worker(index)

    record(
        run(
            tier,
            Scenario(
                "every worker paused (SIGSTOP), a book submitted",
                pause_all_then_submit,
                resume_all,
                [
                    Expect("backlog", "BookGenSectionWaitingTooLong", {"severity": "warning"}),
                    Expect("workers", "BookGenWorkersMissing", {"severity": "critical"}),
                ],
            ),
        )
    )
    job = submit(tier.api_url, "tier-after-pause").json()["job_id"]
    assert wait_book(tier, job) == "completed"


def test_every_worker_dashboard_panel_returns_data(tier: Stack) -> None:
    queries = [q for q in panel_queries(load_spec()) if q[0] == "bookgen-workers"]
    assert queries
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=tier.prometheus_url, timeout=10) as client:

        def empty(expr: str) -> bool:
            data = client.get("/api/v1/query", params={"query": expr}).json()
            assert data["status"] == "success", (expr, data)
            return not data["data"]["result"]

        pending = list(queries)
        while pending and time.monotonic() < deadline:
            submit(tier.api_url, "tier-dashboards")
            pending = [q for q in pending if empty(q[2])]
            time.sleep(2)
    assert {f"{uid} / {title}": expr for uid, title, expr in pending} == {}


def test_failing_sections_fire_the_failure_ratio_and_resolve(tier: Stack) -> None:
    assert tier.sim_url is not None
    sim = SimFaults(tier.sim_url)

    try:
        record(
            run(
                tier,
                Scenario(
                    "the model answers every call with 500 on the worker tier",
                    lambda: sim.set(error_rate=1.0),
                    lambda: sim.set(error_rate=0.0),
                    [Expect("sections", "BookGenSectionFailuresHigh", {"severity": "warning"})],
                    during=keep_submitting(tier.api_url, 0.2),
                ),
            )
        )
    finally:
        sim.close()


def test_broker_and_store_down_fire_and_resolve(tier: Stack) -> None:
    redis, postgres = tier.component("redis"), tier.component("postgres")
    record(
        run(
            tier,
            Scenario(
                "the broker (Redis) killed",
                redis.kill,
                lambda: redis.run(timeout_s=30),
                [Expect("broker", "BookGenBrokerDown", {"severity": "critical"})],
            ),
        )
    )
    record(
        run(
            tier,
            Scenario(
                "the store (PostgreSQL) killed",
                postgres.kill,
                lambda: postgres.run(timeout_s=60),
                [Expect("store", "BookGenStoreDown", {"severity": "critical"})],
            ),
        )
    )
    # Both back: the tier writes books again.
    job = submit(tier.api_url, "tier-after-outage").json()["job_id"]
    assert wait_book(tier, job, timeout_s=90) == "completed"
