"""Telemetry for a worker process: its own registry and /metrics port, hooks, traces and logs."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass

import prometheus_client
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CollectorRegistry

from bookgen.instrumentation.exposition import WorkerMetricsServer
from bookgen.instrumentation.hooks import TelemetryHooks
from bookgen.instrumentation.logging import configure_logging
from bookgen.instrumentation.metrics import Metrics
from bookgen.instrumentation.process import ProcessCollector, WorkerCollector
from bookgen.instrumentation.tracing import Tracing, build_tracing, instrument_httpx
from bookgen.service.settings import Settings


@dataclass(slots=True)
class WorkerTelemetry:
    registry: CollectorRegistry
    metrics: Metrics
    hooks: TelemetryHooks
    tracing: Tracing
    server: WorkerMetricsServer | None

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.tracing.shutdown()


def instrument_worker(
    settings: Settings,
    running: Callable[[], int],
    *,
    metrics_host: str = "127.0.0.1",
    metrics_port: int | None = None,
    registry: CollectorRegistry | None = None,
    span_exporter: SpanExporter | None = None,
) -> WorkerTelemetry:
    """Hooks for the worker's `SectionWorker`, and its metrics served on `metrics_port`."""
    from bookgen.instrumentation import bookgen_version  # the package's one version lookup

    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = registry or CollectorRegistry()
    metrics = Metrics(registry)
    models = {settings.model, *settings.prices}
    metrics.precreate((), provider=settings.llm_provider_name, models=models)
    build = (bookgen_version(), platform.python_version(), str(settings.worker_index))
    metrics.build_info.labels(*build).set(1)
    registry.register(ProcessCollector())
    registry.register(WorkerCollector(settings.worker_concurrency, running))
    tracing = build_tracing(worker_index=settings.worker_index, span_exporter=span_exporter)
    instrument_httpx(tracing.provider)
    configure_logging(settings.log_level)
    hooks = TelemetryHooks(
        metrics, tracing.tracer, models=models, capture_content=settings.capture_content
    )
    server = None
    if metrics_port is not None:
        server = WorkerMetricsServer(registry, metrics_port, metrics_host)
        server.start()
    return WorkerTelemetry(registry, metrics, hooks, tracing, server)
