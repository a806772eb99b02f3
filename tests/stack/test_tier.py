"""The Celery engine's wiring: which ports, URLs, environment and targets each choice gives."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bookgen.stack import binaries
from bookgen.stack.ports import Ports
from bookgen.stack.supervisor import Stack
from bookgen.stack.tier import CeleryTier


def tier(tmp_path: Path, **kwargs: object) -> CeleryTier:
    built = CeleryTier(tmp_path, 2, **kwargs)  # type: ignore[arg-type]
    built.ports = {name: 30_000 + i for i, name in enumerate(built.port_names())}
    return built


def test_redis_and_a_private_postgres_by_default(tmp_path: Path) -> None:
    found = tier(tmp_path)
    assert set(found.ports) == {
        "worker-0",
        "worker-1",
        "celery-exporter",
        "redis",
        "redis-exporter",
        "postgres",
        "postgres-exporter",
    }
    redis, postgres = found.ports["redis"], found.ports["postgres"]
    assert found.broker_url == f"redis://127.0.0.1:{redis}/0"
    assert found.database_url == f"postgresql+asyncpg://postgres@127.0.0.1:{postgres}/bookgen"
    assert found.api_env() == {
        "BOOKGEN_BROKER_URL": found.broker_url,
        "BOOKGEN_DATABASE_URL": found.database_url,
        "BOOKGEN_WORKERS_EXPECTED": "2",
        "BOOKGEN_RATE_LIMIT_STORAGE": f"async+redis://127.0.0.1:{redis}/1",
    }
    targets = found.prometheus_targets()
    assert targets["broker_target"] == f"127.0.0.1:{found.ports['redis-exporter']}"
    assert targets["celery_workers"] == [
        f"127.0.0.1:{found.ports['worker-0']}",
        f"127.0.0.1:{found.ports['worker-1']}",
    ]
    assert found.target_count() == 5


def test_a_worker_is_bookgen_worker_on_its_own_metrics_port(tmp_path: Path) -> None:
    found = tier(tmp_path)
    worker = found.worker(1, "http://127.0.0.1:9/v1", {"BOOKGEN_X": "1"})
    port = found.ports["worker-1"]
    argv = list(worker.argv)
    assert argv[argv.index("worker") :][:7] == [
        "worker",
        "--concurrency",
        "32",
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        str(port),
    ]
    assert argv[argv.index("--hostname") + 1].startswith("worker-1@")
    assert worker.ready_url == f"http://127.0.0.1:{port}/metrics"
    assert worker.env["BOOKGEN_LLM_BASE_URL"] == "http://127.0.0.1:9/v1"
    assert worker.env["BOOKGEN_BROKER_URL"] == found.broker_url
    assert worker.env["BOOKGEN_X"] == "1"


def test_rabbitmq_and_an_external_database_start_no_private_service(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    found = tier(tmp_path, broker="rabbitmq", external_database_url=url)
    assert set(found.ports) == {"worker-0", "worker-1", "celery-exporter", "postgres-exporter"}
    assert found.broker_url == "amqp://guest:guest@127.0.0.1:5672//"
    assert found.database_url == url
    assert found.data_services() == []
    assert found.prometheus_targets()["broker_target"] == "127.0.0.1:15692"
    assert "BOOKGEN_RATE_LIMIT_STORAGE" not in found.api_env()


def test_a_store_other_than_postgres_has_no_store_exporter(tmp_path: Path) -> None:
    found = tier(tmp_path, external_database_url="sqlite+aiosqlite:///x.db")
    assert "postgres-exporter" not in found.ports
    assert found.prometheus_targets()["store_target"] is None
    assert found.target_count() == 4


def test_a_missing_exporter_stops_the_celery_stack_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda name, *a, **k: None if "celery" in name else which(name, *a, **k)
    )
    monkeypatch.delenv("BOOKGEN_CELERY_EXPORTER_BIN", raising=False)
    try:
        binaries.find("prometheus")
        binaries.find("alertmanager")
    except binaries.MissingBinaryError as exc:
        pytest.skip(str(exc))
    stack = Stack(tmp_path / "run", engine="celery")
    with pytest.raises(binaries.MissingBinaryError, match=r"install it: bash scripts/setup\.sh"):
        stack.start()
    assert stack.components == []
    assert not (tmp_path / "run").exists()


def test_unknown_engine_or_broker_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="engine must be one of embedded, celery"):
        Stack(tmp_path, engine="threads")
    with pytest.raises(ValueError, match="broker must be one of redis, rabbitmq"):
        Stack(tmp_path, engine="celery", broker="kafka")


def test_the_api_processes_trust_the_local_tools_as_their_proxy(tmp_path: Path) -> None:
    stack = Stack(tmp_path, engine="embedded")
    stack.ports = Ports(
        api=1, sim=2, prometheus=3, alertmanager=4, receiver=5, metrics_base=6, workers=2
    )
    assert stack._api().env["BOOKGEN_FORWARDED_ALLOW_IPS"] == "127.0.0.1"
    # The caller's environment for the stack still has the last word.
    stack.env["BOOKGEN_FORWARDED_ALLOW_IPS"] = ""
    assert stack._api().env["BOOKGEN_FORWARDED_ALLOW_IPS"] == ""
