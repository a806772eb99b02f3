"""`bookgen up --engine celery`: workers, broker, store and exporters, every target up, a book."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from bookgen.stack import binaries
from bookgen.stack.supervisor import Stack

pytestmark = pytest.mark.e2e

CLI = "import sys; from bookgen.cli import main; sys.exit(main())"
BOOK = {"character": "Ada Lovelace", "chapters": 2, "total_words": 1200}
FAST_SIM = {
    "BOOKGEN_SIM__TOKENS_PER_SECOND": "4000",
    "BOOKGEN_SIM__TIME_TO_FIRST_TOKEN_S": "0.02",
    "BOOKGEN_SIM__JITTER": "0",
    "BOOKGEN_LOG_LEVEL": "WARNING",
}
JOBS = {
    "bookgen": 2,
    "bookgen-llm": 1,
    "bookgen-worker": 2,
    "bookgen-broker": 1,
    "bookgen-store": 1,
    "bookgen-celery": 1,
}
TOOLS = (
    "prometheus",
    "alertmanager",
    "redis-server",
    "initdb",
    "postgres",
    "redis-exporter",
    "postgres-exporter",
    "celery-exporter",
)


def bookgen(*args: str) -> list[str]:
    return [sys.executable, "-c", CLI, *args]


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """Outside pytest's 0700 tmp root, so the `postgres` user can reach its data directory."""
    for tool in TOOLS:
        try:
            binaries.find(tool)
        except binaries.MissingBinaryError as exc:
            pytest.skip(str(exc))
    folder = Path(tempfile.mkdtemp(prefix="bookgen-up-celery-"))
    folder.chmod(0o711)
    try:
        yield folder / "run"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def targets(prometheus_url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus_url}/api/v1/targets", params={"state": "active"})
    found: list[dict[str, Any]] = response.json()["data"]["activeTargets"]
    return found


def wait_all_up(prometheus_url: str, timeout_s: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = targets(prometheus_url)
        jobs = [t["labels"]["job"] for t in found]
        if {j: jobs.count(j) for j in JOBS} == JOBS and all(t["health"] == "up" for t in found):
            return found
        assert time.monotonic() < deadline, [(t["scrapeUrl"], t["health"]) for t in found]
        time.sleep(0.5)


def write_book(api_url: str, timeout_s: float = 120) -> dict[str, Any]:
    created = httpx.post(f"{api_url}/api/v1/biographies/generate", json=BOOK, timeout=10)
    assert created.status_code == 202, created.text
    job_id = created.json()["job_id"]
    deadline = time.monotonic() + timeout_s
    while True:
        status: dict[str, Any] = httpx.get(
            f"{api_url}/api/v1/biographies/{job_id}/status", timeout=10
        ).json()
        if status["status"] in {"completed", "failed"}:
            return status
        assert time.monotonic() < deadline, f"still {status['status']} after {timeout_s} s"
        time.sleep(0.5)


def worker_up(prometheus_url: str, index: int) -> float | None:
    query = f'up{{job="bookgen-worker",worker="{index}"}}'
    result = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": query}).json()
    samples = result["data"]["result"]
    return float(samples[0]["value"][1]) if samples else None


def wait_worker_up(prometheus_url: str, index: int, value: float, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while worker_up(prometheus_url, index) != value:
        assert time.monotonic() < deadline, f"worker {index} never had up == {value}"
        time.sleep(0.5)


def test_up_celery_writes_a_book_status_shows_every_target_and_ctrl_c_leaves_nothing(
    run_dir: Path,
) -> None:
    out_path = run_dir.parent / "up.out"
    out = out_path.open("w")
    up = subprocess.Popen(
        bookgen("up", "--engine", "celery", "--workers", "2", "--run-dir", str(run_dir)),
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, **FAST_SIM},
        start_new_session=True,
    )
    tree: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 150
        while "Ctrl-C stops everything" not in out_path.read_text():
            assert up.poll() is None, out_path.read_text()
            assert time.monotonic() < deadline, out_path.read_text()
            time.sleep(0.5)
        state = json.loads((run_dir / "stack.json").read_text())
        tree = [psutil.Process(c["pid"]) for c in state["components"].values()]
        tree += [child for proc in list(tree) for child in proc.children(recursive=True)]
        wait_all_up(state["urls"]["prometheus"])
        done = write_book(state["urls"]["api"])
        assert done["status"] == "completed", done.get("error")
        status = subprocess.run(
            bookgen("status", "--run-dir", str(run_dir)), capture_output=True, text=True, timeout=30
        )
        assert status.returncode == 0, status.stdout + status.stderr
        for name in ("redis", "postgres", "worker-0", "worker-1", "celery-exporter"):
            assert f"  {name} " in status.stdout, status.stdout
        for job in JOBS:
            assert f"  {job} " in status.stdout, status.stdout
        assert "down" not in status.stdout, status.stdout
    finally:
        os.killpg(up.pid, signal.SIGINT)  # what Ctrl-C in its terminal does
        up.wait(timeout=90)
        out.close()
    assert "stopped; nothing left running." in out_path.read_text()
    _, alive = psutil.wait_procs(tree, timeout=5)
    assert alive == [], alive


def test_one_celery_worker_can_be_killed_paused_and_restarted(run_dir: Path) -> None:
    with Stack(run_dir, workers=2, engine="celery", env=FAST_SIM) as stack:
        wait_all_up(stack.prometheus_url)
        first = stack.worker_pids()
        stack.kill_worker(1)
        assert not stack.celery_worker(1).alive()
        wait_worker_up(stack.prometheus_url, 1, 0.0)
        stack.restart_worker(1)
        assert stack.worker_pids()[0] == first[0] and stack.worker_pids()[1] != first[1]
        wait_worker_up(stack.prometheus_url, 1, 1.0)
        stack.pause_worker(0)
        paused = psutil.Process(first[0])
        deadline = time.monotonic() + 5  # a signal arrives asynchronously
        while paused.status() != psutil.STATUS_STOPPED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert paused.status() == psutil.STATUS_STOPPED
        wait_worker_up(stack.prometheus_url, 0, 0.0)
        stack.resume_worker(0)
        wait_worker_up(stack.prometheus_url, 0, 1.0)
        stack.terminate_worker(0)
        process = stack.celery_worker(0).process
        assert process is not None and process.wait(timeout=30) == 0
        assert write_book(stack.api_url)["status"] == "completed"  # worker 1 alone
