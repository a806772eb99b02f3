"""One stack (real Prometheus and Alertmanager, fast profile) shared by a module's tests."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bookgen.stack import binaries
from bookgen.stack.supervisor import Stack
from e2e.report import REPORT, RESULTS, ROOT, table

# Small, quick books; few LLM retries so injected LLM errors end jobs fast; a submission limit
# low enough that a burst from one client is refused while the queue has room.
E2E_ENV = {
    "BOOKGEN_SIM__TOKENS_PER_SECOND": "4000",
    "BOOKGEN_SIM__TIME_TO_FIRST_TOKEN_S": "0.02",
    "BOOKGEN_SIM__JITTER": "0",
    "BOOKGEN_LLM_MAX_RETRIES": "1",
    "BOOKGEN_LLM_BACKOFF_BASE_S": "0.05",
    "BOOKGEN_LLM_BACKOFF_MAX_S": "0.2",
    "BOOKGEN_POLL_INTERVAL_S": "0.2",
    "BOOKGEN_RATE_LIMIT": "10/minute",
    # Small enough that a test fills it while the workers are paused.
    "BOOKGEN_MAX_QUEUE": "25",
    "BOOKGEN_LOG_LEVEL": "WARNING",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    try:
        binaries.find("prometheus")
        binaries.find("alertmanager")
    except binaries.MissingBinaryError as exc:
        pytest.skip(str(exc))
    run_dir = Path(os.environ.get("BOOKGEN_E2E_RUN_DIR") or tmp_path_factory.mktemp("stack"))
    with Stack(run_dir, workers=2, fast=True, faults=True, env=E2E_ENV) as started:
        yield started


def pytest_sessionfinish(session: pytest.Session) -> None:
    if RESULTS["scenarios"] or RESULTS["clean_run"]:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(RESULTS, indent=2) + "\n", encoding="utf-8")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RESULTS["scenarios"] or RESULTS["clean_run"]:
        terminalreporter.section("time to detect (seconds, fast profile)")
        terminalreporter.write_line(table(RESULTS))
        terminalreporter.write_line(f"written to {REPORT.relative_to(ROOT)}")
