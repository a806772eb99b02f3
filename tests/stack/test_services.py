"""Each data service and exporter starts on 127.0.0.1 on a free port, answers, and is stopped."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bookgen.stack import binaries, services
from bookgen.stack.ports import HOST, free_port
from bookgen.stack.process import Component, ComponentError

# A Celery app of the main environment's version, to show the exporter's venv can watch it.
CELERY_APP = "from celery import Celery\napp = Celery('probe')\n"


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A directory the `postgres` system user can enter (pytest's own tmp root is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="bookgen-services-"))
    folder.chmod(0o711)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def started() -> Iterator[Callable[[Component], Component]]:
    """Starts components and stops them all at the end, newest first."""
    running: list[Component] = []

    def start(component: Component) -> Component:
        running.append(component)
        return component.run(timeout_s=30)

    yield start
    for component in reversed(running):
        component.stop(grace_s=5)


def build(factory: Callable[[], Component]) -> Component:
    try:
        return factory()
    except binaries.MissingBinaryError as exc:
        pytest.skip(str(exc))


def metrics(url: str, wanted: str, timeout_s: float = 15) -> str:
    deadline = time.monotonic() + timeout_s
    body = ""
    while time.monotonic() < deadline:
        body = httpx.get(url, timeout=5).text
        if wanted in body.splitlines():
            return body
        time.sleep(0.3)
    raise AssertionError(f"{wanted!r} not in {url}:\n{body[-2000:]}")


def test_private_redis_answers_ping_and_its_exporter_says_up(
    run_dir: Path, started: Callable[[Component], Component]
) -> None:
    port, exporter_port = free_port(), free_port()
    server = started(build(lambda: services.redis_server(run_dir, HOST, port)))
    client = redis.Redis(host=HOST, port=port)
    try:
        assert client.ping() is True
        assert client.config_get("save") == {"save": ""}
    finally:
        client.close()
    redis_url = services.redis_url(HOST, port)
    started(build(lambda: services.redis_exporter(run_dir, HOST, exporter_port, redis_url)))
    metrics(f"http://{HOST}:{exporter_port}/metrics", "redis_up 1")
    assert server.stop() == 0
    assert not server.alive()


async def select_one(url: str) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(text("SELECT 1")) or 0)
    finally:
        await engine.dispose()


def test_private_postgres_serves_the_bookgen_database_and_its_exporter_says_up(
    run_dir: Path, started: Callable[[Component], Component]
) -> None:
    port, exporter_port = free_port(), free_port()
    server = started(build(lambda: services.postgres_server(run_dir, HOST, port)))
    services.create_database(HOST, port)
    services.create_database(HOST, port)  # a second start finds it there
    url = services.postgres_url(HOST, port)
    assert url == f"postgresql+asyncpg://postgres@{HOST}:{port}/bookgen"
    assert asyncio.run(select_one(url)) == 1
    started(build(lambda: services.postgres_exporter(run_dir, HOST, exporter_port, url)))
    metrics(f"http://{HOST}:{exporter_port}/metrics", "pg_up 1")
    assert server.stop() == 0  # SIGINT: a fast, clean shutdown
    # The cluster is kept in the run directory and starts again as it was.
    again = started(services.postgres_server(run_dir, HOST, free_port()))
    assert again.ready_tcp is not None
    assert asyncio.run(select_one(services.postgres_url(*again.ready_tcp))) == 1


def test_celery_exporter_watches_a_celery_worker_of_this_environment(
    run_dir: Path, started: Callable[[Component], Component]
) -> None:
    port, exporter_port = free_port(), free_port()
    started(build(lambda: services.redis_server(run_dir, HOST, port)))
    broker = services.redis_url(HOST, port)
    exporter = started(
        build(lambda: services.celery_exporter(run_dir, HOST, exporter_port, broker))
    )
    assert "--purge-offline-worker-metrics" in exporter.argv
    url = f"http://{HOST}:{exporter_port}/metrics"
    metrics(url, 'celery_queue_length{queue_name="sections"} 0.0')
    (run_dir / "probe.py").write_text(CELERY_APP)
    argv = [sys.executable, "-m", "celery", "-A", "probe", "worker", "-E", "--pool=solo"]
    argv += ["-Q", "sections", "--hostname", f"worker-0@{HOST}", "--without-mingle"]
    worker = Component(
        "celery-worker",
        argv,
        run_dir / "logs" / "celery-worker.log",
        env={"CELERY_BROKER_URL": broker, "PYTHONPATH": str(run_dir)},
        cwd=run_dir,
    )
    worker.start()
    try:
        metrics(url, f'celery_worker_up{{hostname="{HOST}"}} 1.0', timeout_s=30)
        metrics(url, 'celery_active_worker_count{queue_name="sections"} 1.0', timeout_s=30)
    finally:
        worker.stop(grace_s=10)


def test_a_missing_exporter_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    with pytest.raises(binaries.MissingBinaryError) as caught:
        services.redis_exporter(tmp_path, HOST, free_port(), "redis://127.0.0.1:6379")
    assert str(caught.value).endswith("install it: apt-get install prometheus-redis-exporter")
    assert "\n" not in str(caught.value)


def test_rabbitmq_metrics_missing_says_which_plugin_to_enable() -> None:
    with pytest.raises(ComponentError, match="rabbitmq-plugins enable rabbitmq_prometheus"):
        services.check_rabbitmq_metrics(f"http://{HOST}:{free_port()}/metrics")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands PostgreSQL to another user")
def test_postgres_as_root_refuses_a_run_directory_its_user_cannot_enter(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    with pytest.raises(ComponentError, match="cannot enter"):
        services.init_postgres(closed / "run" / "postgres")
