"""Telemetry for BookGen: metrics, traces and logs, attached at one edge by `instrument()`.

Several workers: each process is its own Prometheus scrape target (its own `CollectorRegistry`,
served on `127.0.0.1:BOOKGEN_METRICS_PORT_BASE + BOOKGEN_WORKER_INDEX`), and `/metrics` on the
shared API port answers for whichever worker took the connection. We chose this over
prometheus_client's multiprocess mode because that mode drops the process collectors (RSS per
worker is a target, so memory must be per process), drops exemplars (the trace links on latency
histograms), needs a shared directory of mmap files cleaned on every restart, and cannot express
gauges such as event-loop lag per worker without extra labels. The cost: queries aggregate over
the `worker` target label (`sum by (...)`), and `bookgen_jobs_queued` (a service-wide figure
every worker reports) is aggregated with `max`.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TextIO

import prometheus_client
from fastapi import FastAPI
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CollectorRegistry

from bookgen.instrumentation import catalogue as cat
from bookgen.instrumentation.exposition import WorkerMetricsServer, metrics_endpoint
from bookgen.instrumentation.hooks import TelemetryHooks
from bookgen.instrumentation.logging import AccessLog, configure_logging, route_uvicorn_logs
from bookgen.instrumentation.metrics import Metrics
from bookgen.instrumentation.middleware import TelemetryMiddleware, route_template
from bookgen.instrumentation.process import EventLoopLagMonitor, ProcessCollector, RuntimeCollector
from bookgen.instrumentation.tracing import Tracing, build_tracing, instrument_httpx
from bookgen.service.settings import Settings

__all__ = ["Telemetry", "instrument"]


@dataclass(slots=True)
class Telemetry:
    """Everything `instrument()` attached, kept on `app.state.telemetry`."""

    registry: CollectorRegistry
    metrics: Metrics
    tracing: Tracing
    hooks: TelemetryHooks
    access_log: AccessLog
    log_handler: logging.StreamHandler[TextIO]
    lag_monitor: EventLoopLagMonitor
    worker_server: WorkerMetricsServer | None
    log_level: str


def bookgen_version() -> str:
    try:
        return version("bookgen")
    except PackageNotFoundError:
        return "unknown"


def _http_series(app: FastAPI) -> list[tuple[str, str, str]]:
    """(method, route, status) label sets that exist at zero: success and 500 per route."""
    series = [("GET", cat.UNMATCHED_ROUTE, "404")]
    for route in app.router.routes:
        methods = getattr(route, "methods", None) or set()
        template = route_template(route)
        ok = str(getattr(route, "status_code", None) or 200)
        for method in sorted(set(methods) & set(cat.HTTP_METHODS)):
            series += [(method, template, ok), (method, template, "500")]
    return series


def _wrap_lifespan(app: FastAPI, telemetry: Telemetry) -> None:
    """Start the event-loop-lag task and worker metrics port with the app; stop them after it."""
    inner: Callable[[Any], AbstractAsyncContextManager[Any]] = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(asgi_app: Any) -> AsyncIterator[Any]:
        telemetry.lag_monitor.start()
        if telemetry.worker_server is not None:
            telemetry.worker_server.start()
        try:
            async with inner(asgi_app) as state:
                # The service's startup may build a uvicorn.Config (embedded model), which
                # reconfigures uvicorn's loggers process-wide; take them back.
                route_uvicorn_logs(telemetry.log_level)
                yield state
        finally:
            await telemetry.lag_monitor.stop()
            if telemetry.worker_server is not None:
                telemetry.worker_server.stop()
            telemetry.access_log.close()
            telemetry.tracing.shutdown()

    app.router.lifespan_context = lifespan


def instrument(
    app: FastAPI,
    settings: Settings,
    *,
    registry: CollectorRegistry | None = None,
    span_exporter: SpanExporter | None = None,
) -> Telemetry:
    """Attach metrics, traces and logs to `app`; call before startup."""
    # `_created` series would double the series count, and nothing reads them.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = registry or CollectorRegistry()
    metrics = Metrics(registry)
    models = {settings.model, *settings.prices}
    # An APIRoute (not a bare Route) so the router records it in scope["route"] like the others.
    app.add_api_route(
        "/metrics", metrics_endpoint(registry), methods=["GET"], include_in_schema=False
    )
    metrics.precreate(_http_series(app), provider=settings.llm_provider_name, models=models)
    build = (bookgen_version(), platform.python_version(), str(settings.worker_index))
    metrics.build_info.labels(*build).set(1)
    registry.register(
        RuntimeCollector(
            lambda: getattr(app.state, "runtime", None),
            settings.max_queue,
            lambda: getattr(app.state, "admission", None),
        )
    )
    registry.register(ProcessCollector())

    tracing = build_tracing(worker_index=settings.worker_index, span_exporter=span_exporter)
    instrument_httpx(tracing.provider)
    handler = configure_logging(settings.log_level)
    access_log = AccessLog(handler, enabled=settings.access_log)
    hooks = TelemetryHooks(
        metrics, tracing.tracer, models=models, capture_content=settings.capture_content
    )
    worker_server = None
    if settings.metrics_port_base is not None:
        worker_server = WorkerMetricsServer(
            registry, settings.metrics_port_base + settings.worker_index, settings.metrics_host
        )
    telemetry = Telemetry(
        registry,
        metrics,
        tracing,
        hooks,
        access_log,
        handler,
        EventLoopLagMonitor(metrics.event_loop_lag),
        worker_server,
        settings.log_level,
    )
    app.state.hooks = hooks
    app.state.telemetry = telemetry
    app.state.metrics_registry = registry
    app.add_middleware(TelemetryMiddleware, metrics=metrics, tracing=tracing, access_log=access_log)
    _wrap_lifespan(app, telemetry)
    return telemetry
