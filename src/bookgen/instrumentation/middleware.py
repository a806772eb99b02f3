"""Pure ASGI middleware: request metrics by route template, head-sampled SERVER spans, access log.

The route comes from `scope["route"]`, which the router sets on the (shared) scope once it has
matched; no match means `unmatched`, so arbitrary paths cannot create series. Per request an
unsampled call costs a dict lookup, three metric updates and one pre-formatted log line.
"""

from __future__ import annotations

import asyncio
from contextvars import Token
from time import perf_counter
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bookgen.instrumentation import catalogue as cat
from bookgen.instrumentation.logging import AccessLog, encode_route
from bookgen.instrumentation.metrics import Metrics
from bookgen.instrumentation.tracing import UNTRACED_PATHS, Tracing

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_JOB_ID = 64  # longer path segments are not job ids (the route answers 404)
CLIENT_CLOSED = 499  # no response was sent because the client went away
_PROPAGATOR = TraceContextTextMapPropagator()


def route_template(route: Any) -> str:
    """The template of a matched route (`/api/v1/biographies/{job_id}/status`)."""
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) and template else cat.UNMATCHED_ROUTE


def _parent_context(scope: Scope) -> otel_context.Context | None:
    for name, _ in scope["headers"]:
        if name == b"traceparent":
            carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            ctx = _PROPAGATOR.extract(carrier)
            return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None
    return None


class TelemetryMiddleware:
    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, tracing: Tracing, access_log: AccessLog
    ) -> None:
        self.app = app
        self._metrics = metrics
        self._tracing = tracing
        self._access_log = access_log
        self._in_flight = metrics.in_flight
        # id(route) -> (template, JSON-encoded template); routes live as long as the app.
        self._routes: dict[int, tuple[str, str]] = {}
        self._unmatched = (cat.UNMATCHED_ROUTE, encode_route(cat.UNMATCHED_ROUTE))

    def _route(self, scope: Scope) -> tuple[str, str]:
        route = scope.get("route")
        if route is None:
            return self._unmatched
        known = self._routes.get(id(route))
        if known is None:
            template = route_template(route)
            known = self._routes[id(route)] = (template, encode_route(template))
        return known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        status = 0

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        method = scope["method"]
        if method not in METHODS:
            method = cat.OTHER
        span: trace.Span | None = None
        token: Token[otel_context.Context] | None = None
        tracing = self._tracing
        if tracing.enabled and scope["path"] not in UNTRACED_PATHS:
            parent = _parent_context(scope)
            parent_ctx = (
                None if parent is None else trace.get_current_span(parent).get_span_context()
            )
            if tracing.sampler.sampled(parent_ctx):
                span = tracing.tracer.start_span(
                    "HTTP",
                    context=parent,
                    kind=SpanKind.SERVER,
                    attributes={
                        "http.request.method": method,
                        "url.path": scope["path"],
                        "url.scheme": scope.get("scheme", "http"),
                    },
                )
                token = otel_context.attach(trace.set_span_in_context(span, parent))
            elif parent is not None:
                token = otel_context.attach(parent)
        in_flight = self._in_flight
        in_flight.value += 1
        try:
            await self.app(scope, receive, send_with_status)
        except asyncio.CancelledError:
            status = status or CLIENT_CLOSED
            raise
        except BaseException as exc:
            status = status or 500
            if span is not None:
                span.record_exception(exc)
            raise
        finally:
            in_flight.value -= 1
            duration = perf_counter() - started
            route, route_json = self._route(scope)
            status = status or 500
            counter, histogram = self._metrics.http(method, route, str(status))
            counter.inc()
            trace_id = span_id = 0
            if span is not None:
                ctx = span.get_span_context()
                trace_id, span_id = ctx.trace_id, ctx.span_id
                # Not sampled only if a remote parent said no (the provider follows parents).
                exemplar = {"trace_id": f"{trace_id:032x}"} if ctx.trace_flags.sampled else None
                histogram.observe(duration, exemplar)
                # OpenTelemetry HTTP conventions: "{method} {route}", just "HTTP" when unknown.
                span_method = "HTTP" if method == cat.OTHER else method
                if route == cat.UNMATCHED_ROUTE:
                    span.update_name(span_method)
                else:
                    span.update_name(f"{span_method} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                    span.set_attribute("error.type", str(status))
                span.end()
            else:
                histogram.observe(duration)
            if token is not None:
                otel_context.detach(token)
            if self._access_log.enabled():
                params = scope.get("path_params")
                job_id = params.get("job_id") if params else None
                if not isinstance(job_id, str) or len(job_id) > MAX_JOB_ID:
                    job_id = None
                self._access_log.write(
                    method, route_json, status, duration, trace_id, span_id, job_id
                )
