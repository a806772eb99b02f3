"""A real `bookgen serve` (one worker) and a separate simulated model, shared by the module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from stress_support import Running

from bookgen.acceptance.clients import TRUSTED_PROXY
from bookgen.acceptance.server import ServeProcess, SimProcess

SIM_TOKENS_PER_SECOND = 400.0  # small books finish in seconds; the API load is what is tested


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    run_dir = tmp_path_factory.mktemp("stress-server")
    env = {
        "BOOKGEN_MAX_QUEUE": "500",
        "BOOKGEN_RATE_LIMIT": "30/minute",
        "BOOKGEN_LLM_BACKOFF_MAX_S": "2",
        # The suite proves the API stays up and retries through model faults; an open breaker
        # (after the injected 500s) would hold the next book back until a probe, so the 429s that
        # follow would never be met. The breaker has tests of its own (tests/api/test_api_outage).
        "BOOKGEN_LLM_BREAKER_THRESHOLD": "1000000",
        # The suite plays the clients' edge: each simulated client sends its own address in
        # X-Forwarded-For, so one client's rate limit is not every client's.
        "BOOKGEN_FORWARDED_ALLOW_IPS": TRUSTED_PROXY,
    }
    with (
        SimProcess(run_dir / "sim", tokens_per_second=SIM_TOKENS_PER_SECOND) as sim,
        ServeProcess(run_dir, 1, env, llm_url=f"{sim.url}/v1") as server,
    ):
        yield Running(server, sim)
        sim.configure(error_rate=0.0, rate_limit_rate=0.0)
