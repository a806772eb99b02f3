"""The real `bookgen serve`: every catalogued family on the live /metrics, promtool-clean."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from telemetry_helpers import CHARACTER, GENERATE, catalogue_problems

from bookgen.instrumentation import catalogue as cat
from bookgen.stack.ports import free_port, free_range
from bookgen.stack.process import Component, bookgen_argv

pytestmark = pytest.mark.realserver

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@contextmanager
def bookgen_serve(tmp_path: Path, env: dict[str, str], workers: int = 1) -> Iterator[str]:
    """`bookgen serve` on a free 127.0.0.1 port with a fast simulated model; stopped after."""
    port = free_port()
    environ = {
        **os.environ,
        "BOOKGEN_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bookgen.db'}",
        "BOOKGEN_SIM__TOKENS_PER_SECOND": "2000",
        "BOOKGEN_SIM__TIME_TO_FIRST_TOKEN_S": "0",
        "BOOKGEN_POLL_INTERVAL_S": "0.05",
        "BOOKGEN_TELEMETRY": "true",
        **env,
    }
    environ.pop("BOOKGEN_LLM_BASE_URL", None)
    base = f"http://127.0.0.1:{port}"
    argv = bookgen_argv("serve", "--port", str(port), "--workers", str(workers))
    server = Component(
        "serve", argv, tmp_path / "serve.log", f"{base}/health", environ, inherit_env=False
    )
    with server:
        yield base


def run_small_job(base: str) -> None:
    body = {"character": CHARACTER, "chapters": 2, "total_words": 1000}
    response = httpx.post(f"{base}{GENERATE}", json=body, timeout=10)
    assert response.status_code == 202, response.text
    status_url = f"{base}/api/v1/biographies/{response.json()['job_id']}/status"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = httpx.get(status_url, timeout=10).json()
        if status["status"] in ("completed", "failed", "cancelled"):
            assert status["status"] == "completed", status
            return
        time.sleep(0.2)
    raise AssertionError("job did not finish in 120 s")


def sample(text: str, name: str, labels: dict[str, str]) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def test_live_metrics_hold_the_whole_catalogue(tmp_path: Path) -> None:
    metrics_base = free_port()
    env = {"BOOKGEN_METRICS_PORT_BASE": str(metrics_base), "OTEL_TRACES_SAMPLER": "always_on"}
    with bookgen_serve(tmp_path, env) as base:
        run_small_job(base)
        text = httpx.get(f"{base}/metrics", timeout=10).text
        om = httpx.get(f"{base}/metrics", headers={"accept": OPENMETRICS}, timeout=10).text
        worker = httpx.get(f"http://127.0.0.1:{metrics_base}/metrics", timeout=10).text
    (tmp_path / "metrics.txt").write_text(text)

    assert catalogue_problems(text, skip=cat.WORKER_ONLY) == []
    assert 'bookgen_http_request_duration_seconds_bucket{le="0.2"' in text
    assert 'bookgen_job_duration_seconds_bucket{le="1800.0",outcome="completed"}' in text
    assert sample(text, "bookgen_jobs_finished_total", {"outcome": "completed"}) == 1
    assert sample(text, "bookgen_jobs_submitted_total", {}) == 1
    assert (sample(text, "bookgen_chapters_total", {"kind": "chapter"}) or 0) >= 2
    assert (sample(text, "bookgen_words_total", {}) or 0) > 500
    output = {"gen_ai_token_type": "output", "gen_ai_request_model": "bookgen-sim"}
    assert (sample(text, "gen_ai_client_token_usage_count", output) or 0) >= 4
    route = {"method": "POST", "route": GENERATE, "status": "202"}
    assert sample(text, "bookgen_http_requests_total", route) == 1
    assert (sample(text, "bookgen_process_resident_memory_bytes", {}) or 0) > 20e6
    # exemplars: only in the OpenMetrics exposition
    assert "# {trace_id=" in om and "# {trace_id=" not in text
    exemplars = [line.split("{")[0] for line in om.splitlines() if "# {trace_id=" in line]
    assert "bookgen_http_request_duration_seconds_bucket" in exemplars
    assert "gen_ai_client_operation_duration_seconds_bucket" in exemplars
    assert om.rstrip().endswith("# EOF")
    # the per-worker port serves the same process's registry
    assert 'bookgen_build_info{python_version="' in worker and 'worker="0"' in worker

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package `prometheus`); CI installs it")
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0 and check.stdout.strip() == "", check.stdout + check.stderr


def test_each_worker_is_its_own_scrape_target(tmp_path: Path) -> None:
    metrics_base = free_range(2)
    env = {"BOOKGEN_METRICS_PORT_BASE": str(metrics_base)}
    with bookgen_serve(tmp_path, env, workers=2):
        deadline = time.monotonic() + 60
        texts: dict[int, str] = {}
        while len(texts) < 2 and time.monotonic() < deadline:
            for index in (0, 1):
                try:
                    url = f"http://127.0.0.1:{metrics_base + index}/metrics"
                    texts[index] = httpx.get(url, timeout=2).text
                except httpx.TransportError:
                    time.sleep(0.2)
    log = (tmp_path / "serve.log").read_text()[-3000:]
    assert sorted(texts) == [0, 1], f"both workers serve their own metrics port\n{log}"
    for index, text in texts.items():
        info = {"worker": str(index)}
        assert sample(text, "bookgen_build_info", info) == 1
        assert (sample(text, "bookgen_process_resident_memory_bytes", {}) or 0) > 20e6
