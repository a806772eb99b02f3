"""One stack (real Prometheus and Alertmanager, fast profile) shared by a module's tests."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookgen.stack import binaries
from bookgen.stack.supervisor import Stack
from e2e.load import TERMINAL, submit
from e2e.report import FAST_RULES, REPORT, RESULTS, ROOT, missing, table

HERE = Path(__file__).resolve().parent
# The modules whose scenarios together prove every alert rule of the fast profile.
ALERT_MODULES = ("test_alerts.py", "test_worker_alerts.py")
# nodeids of the alert modules' tests: collected, deselected (-k, -m), and those that did not pass.
_E2E: dict[str, set[str]] = {"collected": set(), "deselected": set(), "not_passed": set()}

# Small, quick books; few LLM retries so injected LLM errors end jobs fast; a submission limit
# low enough that a burst from one client is refused while the queue has room.
E2E_ENV = {
    "BOOKGEN_SIM__TOKENS_PER_SECOND": "4000",
    "BOOKGEN_SIM__TIME_TO_FIRST_TOKEN_S": "0.02",
    "BOOKGEN_SIM__JITTER": "0",
    "BOOKGEN_LLM_MAX_RETRIES": "1",
    "BOOKGEN_LLM_BACKOFF_BASE_S": "0.05",
    "BOOKGEN_LLM_BACKOFF_MAX_S": "0.2",
    # The provider-outage safeguards off: an injected LLM error ends its book (or section) at
    # once instead of handing it back for later, and no breaker holds calls back; the LLM,
    # books and section alerts see the errors they are about.
    "BOOKGEN_LLM_HANDBACK_MAX": "0",
    "BOOKGEN_LLM_BREAKER_THRESHOLD": "1000000",
    "BOOKGEN_POLL_INTERVAL_S": "0.2",
    "BOOKGEN_RATE_LIMIT": "10/minute",
    # Small enough that a test fills it while the workers are paused.
    "BOOKGEN_MAX_QUEUE": "25",
    "BOOKGEN_LOG_LEVEL": "WARNING",
}


class WarmStack(Stack):
    """A stack whose API processes have served every route of the normal load before Prometheus
    starts. A fresh process answers its first requests slowly (first queries, lazy imports); on
    a fresh Prometheus every window, the 1-day one too, holds only those seconds, so a handful of
    cold requests reads as a latency budget burning, which no production window would show."""

    def _wait_worker_metrics(self) -> None:
        super()._wait_worker_metrics()
        warm_up(self.api_url)


def warm_up(api_url: str, books: int = 16, timeout_s: float = 30.0) -> None:
    """Books submitted (each from its own client, so both processes get some), followed to the
    end and downloaded; every read route on the way."""
    jobs = [submit(api_url, f"warm-up-{i}").json()["job_id"] for i in range(books)]
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=api_url, timeout=10.0) as client:
        while jobs and time.monotonic() < deadline:
            for path in ("/health", "/api/v1/status", "/api/v1/biographies?limit=5"):
                client.get(path)
            for job in list(jobs):
                state = client.get(f"/api/v1/biographies/{job}/status").json()["status"]
                if state in TERMINAL:
                    jobs.remove(job)
                    if state == "completed":
                        client.get(f"/api/v1/biographies/{job}/download")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    try:
        binaries.find("prometheus")
        binaries.find("alertmanager")
    except binaries.MissingBinaryError as exc:
        pytest.skip(str(exc))
    run_dir = Path(os.environ.get("BOOKGEN_E2E_RUN_DIR") or tmp_path_factory.mktemp("stack"))
    with WarmStack(run_dir, workers=2, fast=True, faults=True, env=E2E_ENV) as started:
        yield started


def _ours(item: pytest.Item) -> bool:
    """A test of one of the alert modules."""
    return item.path.parent == HERE and item.path.name in ALERT_MODULES


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    _E2E["collected"].update(item.nodeid for item in items if _ours(item))


def pytest_deselected(items: list[pytest.Item]) -> None:
    _E2E["deselected"].update(item.nodeid for item in items if _ours(item))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid in _E2E["collected"] and (report.failed or report.skipped):
        _E2E["not_passed"].add(report.nodeid)


def whole_suite_ran() -> bool:
    """Every test of both alert modules was selected and passed (none deselected or skipped)."""
    ran = _E2E["collected"] - _E2E["deselected"]
    modules = {nodeid.split("::")[0].rsplit("/", 1)[-1] for nodeid in ran}
    skipped = _E2E["not_passed"]
    return set(ALERT_MODULES) <= modules and not _E2E["deselected"] and not skipped


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not (RESULTS["scenarios"] or RESULTS["clean_run"]):
        return
    complete = whole_suite_ran()
    RESULTS["every_alert"] = {"suite_complete": complete, "missing": missing(RESULTS)}
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(RESULTS, indent=2) + "\n", encoding="utf-8")
    # A rule of the fast profile without a row that fired and resolved fails the whole suite.
    if complete and RESULTS["every_alert"]["missing"]:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RESULTS["scenarios"] or RESULTS["clean_run"]:
        terminalreporter.section("time to detect (seconds, fast profile)")
        terminalreporter.write_line(table(RESULTS))
        terminalreporter.write_line(f"written to {REPORT.relative_to(ROOT)}")
        gaps = missing(RESULTS)
        if gaps and whole_suite_ran():
            terminalreporter.write_line(
                f"FAILED: alert rules of {FAST_RULES.relative_to(ROOT)} without a row that fired "
                f"and resolved: {', '.join(gaps)}",
                red=True,
            )
        elif gaps:
            terminalreporter.write_line(f"not proven in this run: {', '.join(gaps)}")
