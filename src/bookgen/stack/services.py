"""Data services as stack components: a private Redis and PostgreSQL, and their exporters.

Each function builds a `Component` bound to `host:port` with its state under `run_dir`; the
caller starts it. A missing executable raises `MissingBinaryError` with a one-line install hint.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from bookgen.stack import binaries
from bookgen.stack.process import Component, ComponentError

DATABASE = "bookgen"
POSTGRES_USER = "postgres"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
RABBITMQ_METRICS = "http://127.0.0.1:15692/metrics"
QUEUES = ("sections",)
# Longer than any alert window on worker metrics, so a worker's series outlive its outage.
CELERY_PURGE_OFFLINE_S = 1800
# Unix socket paths are limited to 107 bytes; a longer data directory gets TCP only.
_SOCKET_PATH_MAX = 100


def _log(run_dir: Path, name: str) -> Path:
    return run_dir / "logs" / f"{name}.log"


# --- Redis --------------------------------------------------------------------------------------
def redis_url(host: str, port: int, db: int = 0) -> str:
    return f"redis://{host}:{port}/{db}"


def redis_server(run_dir: Path, host: str, port: int) -> Component:
    """A throw-away Redis: no snapshots, no append-only file, in the foreground."""
    binary = binaries.find("redis-server")
    folder = run_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", host, "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(folder)]
    return Component("redis", argv, _log(run_dir, "redis"), ready_tcp=(host, port))


# --- PostgreSQL ---------------------------------------------------------------------------------
def postgres_url(host: str, port: int, database: str = DATABASE) -> str:
    return f"postgresql+asyncpg://{POSTGRES_USER}@{host}:{port}/{database}"


def _server_user() -> str | None:
    """PostgreSQL refuses to run as root: then it runs as the `postgres` system user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(POSTGRES_USER)
    except KeyError:
        raise ComponentError(
            f"running as root, PostgreSQL needs the system user {POSTGRES_USER!r}; "
            "install it: apt-get install postgresql (or pass --database-url)"
        ) from None
    return POSTGRES_USER


def _reachable_by(user: str, folder: Path) -> None:
    """Every directory above `folder` must let `user` through, or initdb fails obscurely."""
    entry = pwd.getpwnam(user)
    for parent in folder.resolve().parents:
        mode = parent.stat()
        if mode.st_uid == entry.pw_uid:
            continue
        allowed = mode.st_mode & (0o010 if mode.st_gid == entry.pw_gid else 0o001)
        if not allowed:
            raise ComponentError(
                f"PostgreSQL runs as {user!r} and cannot enter {parent} (mode "
                f"{mode.st_mode & 0o777:o}); use a run directory it can reach, or --database-url"
            )


def init_postgres(data_dir: Path) -> None:
    """initdb into `data_dir` unless it already holds a cluster."""
    if (data_dir / "PG_VERSION").is_file():
        return
    initdb = binaries.find("initdb")
    user = _server_user()
    data_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _reachable_by(user, data_dir)
        shutil.chown(data_dir, user, user)
    data_dir.chmod(0o700)
    argv = [initdb, "-D", str(data_dir), "-U", POSTGRES_USER, "--auth=trust", "--no-sync"]
    argv += ["--encoding=UTF8", "--locale=C"]
    result = subprocess.run(
        argv,
        cwd=data_dir,
        user=user,
        group=user,
        extra_groups=[] if user else None,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        lines = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise ComponentError(f"initdb failed in {data_dir}: " + " / ".join(lines))


def postgres_server(run_dir: Path, host: str, port: int) -> Component:
    """A private PostgreSQL (fsync off: its data is disposable); `create_database` once ready."""
    postgres = binaries.find("postgres")
    data_dir = run_dir / "postgres"
    init_postgres(data_dir)
    sockets = str(data_dir) if len(str(data_dir)) < _SOCKET_PATH_MAX else ""
    argv = [postgres, "-D", str(data_dir), "-k", sockets, "-h", host, "-p", str(port)]
    argv += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
    return Component(
        "postgres",
        argv,
        _log(run_dir, "postgres"),
        ready_tcp=(host, port),
        user=_server_user(),
        cwd=data_dir,
        # SIGINT is PostgreSQL's fast shutdown; its SIGTERM would wait for every client.
        stop_signal=signal.SIGINT,
    )


async def _create_database(host: str, port: int, database: str, timeout_s: float) -> None:
    engine = create_async_engine(
        postgres_url(host, port, "postgres"),
        isolation_level="AUTOCOMMIT",
        connect_args={"timeout": 2.0},
    )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                async with engine.connect() as conn:
                    found = await conn.scalar(
                        text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": database}
                    )
                    if not found:
                        await conn.execute(text(f'CREATE DATABASE "{database}"'))
                    return
            except (OSError, SQLAlchemyError) as exc:
                # "the database system is starting up" comes after the port already accepts.
                if time.monotonic() > deadline:
                    raise ComponentError(f"PostgreSQL at {host}:{port} refused: {exc}") from None
                await asyncio.sleep(0.2)
    finally:
        await engine.dispose()


def create_database(host: str, port: int, database: str = DATABASE, timeout_s: float = 30) -> None:
    """Create `database` unless it exists, waiting while the server still starts up."""
    asyncio.run(_create_database(host, port, database, timeout_s))


# --- RabbitMQ (the system one) ------------------------------------------------------------------
def check_rabbitmq_metrics(url: str = RABBITMQ_METRICS) -> None:
    """The system RabbitMQ's own exporter must answer; it is not started here."""
    try:
        httpx.get(url, timeout=3.0).raise_for_status()
    except httpx.HTTPError as exc:
        raise ComponentError(
            f"RabbitMQ metrics at {url} unavailable ({type(exc).__name__}); enable them: "
            "rabbitmq-plugins enable rabbitmq_prometheus"
        ) from None


# --- exporters ----------------------------------------------------------------------------------
def redis_exporter(run_dir: Path, host: str, port: int, redis: str) -> Component:
    binary = binaries.find("redis-exporter")
    argv = [binary, f"--redis.addr={redis}", f"--web.listen-address={host}:{port}"]
    url = f"http://{host}:{port}/metrics"
    return Component("redis-exporter", argv, _log(run_dir, "redis-exporter"), url)


def postgres_exporter(run_dir: Path, host: str, port: int, database_url: str) -> Component:
    """`database_url` as SQLAlchemy spells it; the exporter gets the plain libpq form."""
    binary = binaries.find("postgres-exporter")
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    dsn += ("&" if "?" in dsn else "?") + "sslmode=disable"
    argv = [binary, f"--web.listen-address={host}:{port}"]
    url = f"http://{host}:{port}/metrics"
    env = {"DATA_SOURCE_NAME": dsn}
    return Component("postgres-exporter", argv, _log(run_dir, "postgres-exporter"), url, env)


def celery_exporter(
    run_dir: Path, host: str, port: int, broker_url: str, queues: Sequence[str] = QUEUES
) -> Component:
    """Ready once it reaches the broker (`/health`); each /metrics asks the workers (~2 s)."""
    binary = binaries.find("celery-exporter")
    argv = [binary, "--broker-url", broker_url, "--host", host, "--port", str(port)]
    argv += ["--queues", ",".join(queues)]
    argv += ["--purge-offline-worker-metrics", str(CELERY_PURGE_OFFLINE_S)]
    url = f"http://{host}:{port}/health"
    return Component("celery-exporter", argv, _log(run_dir, "celery-exporter"), url)
