"""Composition root of a worker process: Celery app, section worker, telemetry at its edge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Celery

from bookgen.service.hooks import Hooks
from bookgen.service.queue import QUEUE, Publisher, make_celery
from bookgen.service.settings import Settings
from bookgen.service.worker import SectionWorker
from bookgen.service.worker.tasks import register


@dataclass(slots=True)
class WorkerProcess:
    app: Celery
    worker: SectionWorker
    telemetry: Any  # WorkerTelemetry when telemetry is on

    def run(self, hostname: str | None = None, loglevel: str = "INFO") -> None:
        """Consume section tasks until a stop signal (SIGTERM: warm shutdown, then exit)."""
        self.worker.start()
        try:
            options: dict[str, Any] = {
                "pool": "threads",
                "concurrency": self.worker.settings.worker_concurrency,
                "loglevel": loglevel,
                "queues": [QUEUE],
                # Heartbeats stay on (liveness); gossip and mingle cost Redis memory and
                # start-up time and give nothing here.
                "without_gossip": True,
                "without_mingle": True,
                "send_events": True,
            }
            if hostname:
                options["hostname"] = hostname
            self.app.Worker(**options).start()
        finally:
            self.worker.close()
            if self.telemetry is not None:
                self.telemetry.close()


def build_worker(
    settings: Settings,
    *,
    metrics_host: str = "127.0.0.1",
    metrics_port: int | None = None,
) -> WorkerProcess:
    app = make_celery(settings)
    holder: list[SectionWorker] = []
    hooks: Hooks = Hooks()
    telemetry = None
    if settings.telemetry:
        from bookgen.instrumentation.worker import instrument_worker

        telemetry = instrument_worker(
            settings,
            lambda: holder[0].running if holder else 0,
            metrics_host=metrics_host,
            metrics_port=metrics_port,
        )
        hooks = telemetry.hooks
    worker = SectionWorker(settings, hooks, Publisher(app))
    holder.append(worker)
    register(app, worker)
    return WorkerProcess(app, worker, telemetry)
