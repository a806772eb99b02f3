"""The OpenAPI contract, checked by schemathesis against a real `bookgen serve` process.

Every check, every phase (examples, coverage, fuzzing, and the stateful phase that follows the
OpenAPI links from a new job to its status, download and cancel routes), a bounded number of
cases. The server sends no request off this machine: the sources route's probes are switched off
(`BOOKGEN_SOURCES_PROBE=false`) and the model is the embedded simulator.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookgen.stack.ports import HOST, free_port
from bookgen.stack.process import Component, bookgen_argv

pytestmark = [pytest.mark.contract]

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "schemathesis.toml"
MAX_EXAMPLES = int(os.environ.get("BOOKGEN_CONTRACT_EXAMPLES", "100"))  # per operation and phase
MIN_CASES = 1_000
SEED = int(os.environ.get("BOOKGEN_CONTRACT_SEED", "20261130"))
RUN_TIMEOUT_S = 480


def schemathesis_cli() -> list[str]:
    script = Path(sys.executable).with_name("st")
    found = str(script) if script.is_file() else shutil.which("st")
    if found is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    return [found]


class Served:
    def __init__(self, component: Component, url: str, env: dict[str, str]) -> None:
        self.component, self.url, self.env = component, url, env


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BOOKGEN_")},
        "BOOKGEN_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}",
        "BOOKGEN_TELEMETRY": "false",
        # No traffic leaves the machine: no source probes, the embedded model.
        "BOOKGEN_SOURCES_PROBE": "false",
        # Limits would answer most cases 429 (documented, but it tests nothing else).
        "BOOKGEN_RATE_LIMIT": "1000000/minute",
        "BOOKGEN_SOURCES_RATE_LIMIT": "1000000/minute",
        # Books finish within the run, so downloads and cancels meet every state; two at a time,
        # so generating them leaves the machine's cores to the others.
        "BOOKGEN_SIM__TOKENS_PER_SECOND": "200000",
        "BOOKGEN_SIM__TIME_TO_FIRST_TOKEN_S": "0",
        "BOOKGEN_SIM__JITTER": "0",
        "BOOKGEN_JOB_CONCURRENCY": "2",
        "BOOKGEN_POLL_INTERVAL_S": "0.1",
    }
    argv = bookgen_argv(
        "serve", "--host", HOST, "--port", str(port), "--workers", "1", "--log-level", "warning"
    )
    component = Component(
        "serve",
        argv,
        tmp_path / "serve.log",
        f"{url}/health",
        env,
        inherit_env=False,
        ready_timeout_s=60.0,
    )
    component.start()
    try:
        component.wait_ready()
        yield Served(component, url, env)
    finally:
        component.stop(25.0)


def auth_headers(served: Served) -> list[str]:
    """None on loopback (auth "auto"); else a key made with `bookgen keys create`."""
    if httpx.get(f"{served.url}/api/v1/biographies", timeout=10).status_code != 401:
        return []
    made = subprocess.run(
        bookgen_argv("keys", "create", "contract"),
        env=served.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return ["-H", f"Authorization: Bearer {made.stdout.strip().splitlines()[-1]}"]


def test_the_api_keeps_its_openapi_contract(server: Served, tmp_path: Path) -> None:
    schema = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    created = schema["paths"]["/api/v1/biographies/generate"]["post"]["responses"]["202"]
    assert set(created["links"]) == {
        "status",
        "download",
        "cancel",
    }  # what the stateful phase follows

    report = tmp_path / "schemathesis.json"
    argv = [
        *schemathesis_cli(),
        "--config-file",
        str(CONFIG),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--no-shrink",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        *auth_headers(server),
    ]
    started = time.monotonic()
    run = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert report.exists(), run.stdout[-5000:] + run.stderr[-2000:]
    result: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    cases = result["test_cases"]["generated"]
    print(f"schemathesis: {cases} cases, {elapsed:.0f} s, exit code {run.returncode}")
    print(run.stdout[-1500:])
    assert run.returncode == 0, run.stdout[-20_000:]
    assert result["failures"] == [] and result["errors"] == []
    assert {name: phase["status"] for name, phase in result["phases"].items()} == {
        "examples": "success",
        "coverage": "success",
        "fuzzing": "success",
        "stateful": "success",
    }
    assert result["operations"]["tested"] == result["operations"]["selected"] > 0
    # A pattern schemathesis cannot use would leave that rule of the schema untested.
    assert result["warnings"]["unsupported_regex"] == []
    assert cases >= MIN_CASES
    assert server.component.alive(), "the server died during the run"
