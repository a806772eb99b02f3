"""Tracing: an OpenTelemetry SDK provider, and the head-sampling rule for HTTP requests.

Cost decides the design. The default FastAPI instrumentation costs ~240 µs per request here
(three spans, attribute collection before sampling, send/receive wrappers): a quarter of the
throughput. So HTTP requests are head-sampled in our own ASGI middleware *before* anything is
built: an unsampled request costs one random number. A sampled one gets one SERVER span (no
send/receive spans). `/health`, `/ready` and `/metrics` are never traced. The ratio comes from
the standard `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`; when unset it is
`parentbased_traceidratio` at `DEFAULT_REQUEST_RATIO`.

Jobs are rare and valuable, so the provider's own sampler is `ParentBased(ALWAYS_ON)`: a job span
(a root, linked to its request) is always recorded, and its chapter and LLM spans follow it.
Outbound HTTP (the LLM client, source checks) is traced by the httpx instrumentation, which also
propagates `traceparent`. Spans leave the process only if `OTEL_TRACES_EXPORTER` or an
`OTEL_EXPORTER_OTLP_*ENDPOINT` asks for it; `OTEL_SDK_DISABLED=true` turns tracing off.

The provider is deliberately *not* installed as the global one: FastAPI's native telemetry switches
itself on for every request as soon as a global provider exists, which is the costly path above.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanContext

log = logging.getLogger(__name__)

DEFAULT_REQUEST_RATIO = 0.05
UNTRACED_PATHS = frozenset({"/health", "/ready", "/metrics"})
INSTRUMENTATION_NAME = "bookgen.instrumentation"
_MASK_64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class RequestSampler:
    """Head sampling of HTTP requests, with the semantics of the standard samplers.

    A remote parent that was not sampled is always respected (the provider follows parents), so
    the non-parent-based variants can only drop requests, never record an unsampled trace.
    """

    ratio: float
    parent_based: bool = True

    @property
    def _bound(self) -> int:
        return round(self.ratio * (_MASK_64 + 1))

    def sampled(self, parent: SpanContext | None) -> bool:
        if parent is not None:
            if self.parent_based:
                return parent.trace_flags.sampled
            # Same rule as TraceIdRatioBased, so every service agrees on a trace.
            return (parent.trace_id & _MASK_64) < self._bound
        return random.random() < self.ratio

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> RequestSampler:
        name = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
        arg = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
        if not name:
            return cls(_ratio(arg, DEFAULT_REQUEST_RATIO))
        fixed = {"always_on": 1.0, "always_off": 0.0}
        base = name.removeprefix("parentbased_")
        if base in fixed:
            return cls(fixed[base], name.startswith("parentbased_"))
        if base == "traceidratio":
            return cls(_ratio(arg, 1.0), name.startswith("parentbased_"))
        log.warning("unsupported OTEL_TRACES_SAMPLER %r; using the default", name)
        return cls(DEFAULT_REQUEST_RATIO)


def _ratio(arg: str, default: float) -> float:
    try:
        value = float(arg) if arg else default
    except ValueError:
        log.warning("invalid OTEL_TRACES_SAMPLER_ARG %r; using %s", arg, default)
        return default
    return min(1.0, max(0.0, value))


@dataclass(slots=True)
class Tracing:
    """The tracer the hooks and middleware use; `enabled` is false under OTEL_SDK_DISABLED."""

    tracer: trace.Tracer
    sampler: RequestSampler
    provider: TracerProvider | None
    enabled: bool

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


def _exporters(environ: Mapping[str, str]) -> list[SpanExporter]:
    names = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not names:
        endpoint_vars = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        names = "otlp" if any(environ.get(v) for v in endpoint_vars) else "none"
    exporters: list[SpanExporter] = []
    for name in (n.strip() for n in names.split(",")):
        if name == "otlp":
            # Reads its endpoint, headers and timeout from the standard OTEL_* variables.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name not in ("none", ""):
            log.warning("unsupported OTEL_TRACES_EXPORTER %r ignored", name)
    return exporters


def build_tracing(
    *,
    worker_index: int,
    span_exporter: SpanExporter | None = None,
    environ: Mapping[str, str] | None = None,
) -> Tracing:
    """A provider for this process; a `span_exporter` (tests) gets a synchronous processor."""
    env = os.environ if environ is None else environ
    sampler = RequestSampler.from_env(env)
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return Tracing(trace.NoOpTracer(), RequestSampler(0.0), None, enabled=False)
    resource = Resource.create(
        {
            "service.name": env.get("OTEL_SERVICE_NAME", "bookgen"),
            "service.instance.id": f"{os.uname().nodename}-{os.getpid()}",
            "bookgen.worker": worker_index,
        }
    )
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON), resource=resource)
    processors: list[SpanProcessor] = [BatchSpanProcessor(e) for e in _exporters(env)]
    if span_exporter is not None:
        processors.append(SimpleSpanProcessor(span_exporter))
    for processor in processors:
        provider.add_span_processor(processor)
    return Tracing(provider.get_tracer(INSTRUMENTATION_NAME), sampler, provider, enabled=True)


def instrument_httpx(provider: TracerProvider | None) -> None:
    """Trace outbound httpx calls (once per process; the first provider wins)."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    instrumentor = HTTPXClientInstrumentor()
    if provider is not None and not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)
