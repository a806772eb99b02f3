"""The Celery engine's part of the stack: broker, store, `bookgen worker`s and their exporters.

`Stack` asks it for port names, components in start order, the API's environment and the scrape
targets; the tier itself starts nothing.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bookgen.stack import binaries, services
from bookgen.stack.ports import HOST
from bookgen.stack.process import Component, bookgen_argv

BROKERS = ("redis", "rabbitmq")
WORKER_CONCURRENCY = 32
RABBITMQ_METRICS_TARGET = "127.0.0.1:15692"


@dataclass
class CeleryTier:
    run_dir: Path
    workers: int
    broker: str = "redis"
    # An external store; None: a private PostgreSQL in the run directory.
    external_database_url: str | None = None
    ports: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.broker not in BROKERS:
            raise ValueError(f"broker must be one of {', '.join(BROKERS)}")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")

    # --- what it needs ----------------------------------------------------------------------
    @property
    def private_redis(self) -> bool:
        return self.broker == "redis"

    @property
    def private_postgres(self) -> bool:
        return self.external_database_url is None

    def port_names(self) -> list[str]:
        names = [f"worker-{i}" for i in range(self.workers)] + ["celery-exporter"]
        if self.private_redis:
            names += ["redis", "redis-exporter"]
        if self.private_postgres:
            names.append("postgres")
        if self.private_postgres or (self.external_database_url or "").startswith("postgresql"):
            names.append("postgres-exporter")
        return names

    def check(self) -> None:
        """Find every executable and the broker's metrics now, before anything starts."""
        needed = ["celery-exporter"]
        if self.private_redis:
            needed += ["redis-server", "redis-exporter"]
        else:
            services.check_rabbitmq_metrics()
        if self.private_postgres:
            needed += ["initdb", "postgres"]
        if "postgres-exporter" in self.port_names():
            needed.append("postgres-exporter")
        for tool in needed:
            binaries.find(tool)

    # --- addresses --------------------------------------------------------------------------
    def _port(self, name: str) -> int:
        return self.ports[name]

    @property
    def broker_url(self) -> str:
        if self.private_redis:
            return services.redis_url(HOST, self._port("redis"))
        return services.RABBITMQ_URL

    @property
    def database_url(self) -> str:
        if self.external_database_url is not None:
            return self.external_database_url
        return services.postgres_url(HOST, self._port("postgres"))

    def metrics_urls(self) -> list[str]:
        return [f"http://{HOST}:{self._port(f'worker-{i}')}/metrics" for i in range(self.workers)]

    def urls(self) -> dict[str, str]:
        found = {"broker": self.broker_url, "database": self.database_url}
        found.update({f"celery worker {i} metrics": u for i, u in enumerate(self.metrics_urls())})
        for name in ("redis-exporter", "postgres-exporter", "celery-exporter"):
            if name in self.ports:
                found[name] = f"http://{HOST}:{self._port(name)}/metrics"
        return found

    def api_env(self) -> dict[str, str]:
        env = {
            "BOOKGEN_BROKER_URL": self.broker_url,
            "BOOKGEN_DATABASE_URL": self.database_url,
            "BOOKGEN_WORKERS_EXPECTED": str(self.workers),
        }
        if self.private_redis:
            # The submission limit is then one count across the API processes.
            limits = services.redis_url(HOST, self._port("redis"), db=1)
            env["BOOKGEN_RATE_LIMIT_STORAGE"] = f"async+{limits}"
        return env

    def prometheus_targets(self) -> dict[str, Any]:
        """Keyword arguments of `prometheus.render` for this tier's jobs."""
        if self.private_redis:
            broker = f"{HOST}:{self._port('redis-exporter')}"
        else:
            broker = RABBITMQ_METRICS_TARGET
        store = self.ports.get("postgres-exporter")
        return {
            "celery_workers": [f"{HOST}:{self._port(f'worker-{i}')}" for i in range(self.workers)],
            "broker_target": broker,
            "store_target": f"{HOST}:{store}" if store else None,
            "celery_target": f"{HOST}:{self._port('celery-exporter')}",
        }

    def target_count(self) -> int:
        return self.workers + 2 + ("postgres-exporter" in self.ports)

    # --- components, in start order ---------------------------------------------------------
    def data_services(self) -> list[Component]:
        found = []
        if self.private_redis:
            found.append(services.redis_server(self.run_dir, HOST, self._port("redis")))
        if self.private_postgres:
            found.append(services.postgres_server(self.run_dir, HOST, self._port("postgres")))
        return found

    def after_ready(self, component: Component, timeout_s: float) -> None:
        if component.name == "postgres":
            services.create_database(HOST, self._port("postgres"), timeout_s=timeout_s)

    def worker(self, index: int, llm_url: str, env: Mapping[str, str]) -> Component:
        port = self._port(f"worker-{index}")
        argv = bookgen_argv(
            "worker",
            "--concurrency",
            str(WORKER_CONCURRENCY),
            "--metrics-host",
            HOST,
            "--metrics-port",
            str(port),
            "--hostname",
            f"worker-{index}@{socket.gethostname()}",
        )
        worker_env = {
            "PYTHONUNBUFFERED": "1",
            "BOOKGEN_BROKER_URL": self.broker_url,
            "BOOKGEN_DATABASE_URL": self.database_url,
            "BOOKGEN_LLM_BASE_URL": llm_url,
            "BOOKGEN_TELEMETRY": "true",
            **env,
        }
        log = self.run_dir / "logs" / f"worker-{index}.log"
        return Component(f"worker-{index}", argv, log, self.metrics_urls()[index], worker_env)

    def exporters(self) -> list[Component]:
        found = []
        if self.private_redis:
            redis = services.redis_url(HOST, self._port("redis"))
            port = self._port("redis-exporter")
            found.append(services.redis_exporter(self.run_dir, HOST, port, redis))
        if "postgres-exporter" in self.ports:
            port = self._port("postgres-exporter")
            found.append(services.postgres_exporter(self.run_dir, HOST, port, self.database_url))
        port = self._port("celery-exporter")
        found.append(services.celery_exporter(self.run_dir, HOST, port, self.broker_url))
        return found
