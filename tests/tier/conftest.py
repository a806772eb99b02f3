"""Real worker tiers: a private Redis, a throw-away PostgreSQL database, worker processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bookgen.acceptance.fleet import Fleet
from bookgen.stack.ports import free_port
from bookgen.stack.process import Component
from service_helpers import postgres_database

# Short leases so a killed worker's section comes back within seconds, not the default 30 s.
FAST_TIER = {
    "BOOKGEN_SECTION_LEASE_S": "3",
    "BOOKGEN_REAP_INTERVAL_S": "0.5",
    "BOOKGEN_WORKER_DRAIN_S": "1",
    "BOOKGEN_SECTION_REPUBLISH_IDLE_S": "5",
    "BOOKGEN_TELEMETRY": "true",
    "BOOKGEN_ACCESS_LOG": "false",
    "BOOKGEN_RATE_LIMIT": "1000/minute",
}


@pytest.fixture
def database_url() -> Iterator[str]:
    yield from postgres_database()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(tmp_path)]
    try:
        redis = Component("redis", argv, tmp_path / "redis.log", ready_tcp=("127.0.0.1", port))
        redis.run(timeout_s=20)
    except Exception as error:
        pytest.skip(f"redis-server cannot start here ({error})")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        redis.stop(grace_s=2)


FleetFactory = Callable[..., Fleet]


@pytest.fixture
def make_fleet(tmp_path: Path, database_url: str) -> Iterator[FleetFactory]:
    fleets: list[Fleet] = []

    def make(broker_url: str, **kwargs: object) -> Fleet:
        env = {**FAST_TIER, **kwargs.pop("env", {})}  # type: ignore[dict-item]
        fleet = Fleet(tmp_path / f"fleet{len(fleets)}", broker_url, database_url, env=env, **kwargs)  # type: ignore[arg-type]
        fleets.append(fleet)
        return fleet

    try:
        yield make
    finally:
        for fleet in fleets:
            fleet.stop()
