"""Spans: request -> job (linked) -> chapter -> LLM call, GenAI attributes, no prompt text."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from telemetry_helpers import CHARACTER, GENERATE, fast_settings, instrumented_app, run_job

from bookgen.instrumentation.tracing import DEFAULT_REQUEST_RATIO, RequestSampler

GENAI_ATTRIBUTES = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.finish_reasons",
)


def attribute_text(span: ReadableSpan) -> str:
    values = [str(v) for v in (span.attributes or {}).values()]
    for event in span.events:
        values += [str(v) for v in (event.attributes or {}).values()]
    return " ".join(values)


async def test_request_job_chapter_llm_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    async with instrumented_app(fast_settings(tmp_path)) as inst:
        job_id = await run_job(inst.client)
    spans = inst.spans.get_finished_spans()
    by_id = {span.context.span_id: span for span in spans}

    [request] = [s for s in spans if s.name == f"POST {GENERATE}"]
    assert request.kind is SpanKind.SERVER
    assert request.attributes is not None
    assert request.attributes["http.route"] == GENERATE
    assert request.attributes["http.response.status_code"] == 202

    [job] = [s for s in spans if s.name == "bookgen.job"]
    assert job.attributes is not None and job.attributes["bookgen.job.id"] == job_id
    assert job.parent is None, "a job is its own trace"
    assert [link.context.span_id for link in job.links] == [request.context.span_id]
    assert job.links[0].context.trace_id == request.context.trace_id

    chapters = [s for s in spans if s.name == "bookgen.chapter"]
    assert len(chapters) >= 4  # outline, introduction, 2 chapters, epilogue
    assert all(c.parent is not None and c.parent.span_id == job.context.span_id for c in chapters)

    llm = [s for s in spans if s.name == "chat bookgen-sim"]
    assert llm, [s.name for s in spans]
    for span in llm:
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None and by_id[span.parent.span_id].name == "bookgen.chapter"
        assert span.context.trace_id == job.context.trace_id
        for key in GENAI_ATTRIBUTES:
            assert key in (span.attributes or {}), key
        assert span.attributes is not None
        assert span.attributes["gen_ai.usage.output_tokens"] > 0  # type: ignore[operator]

    for span in spans:
        text = attribute_text(span)
        assert CHARACTER not in text, span.name
        assert "Target length" not in text, span.name
        assert "gen_ai.input.messages" not in (span.attributes or {})


async def test_capture_content_is_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    async with instrumented_app(fast_settings(tmp_path, capture_content=True)) as inst:
        await run_job(inst.client)
    spans = inst.spans.get_finished_spans()
    assert not [s for s in spans if s.kind is SpanKind.SERVER], "requests were not sampled"
    llm = [s for s in spans if s.name == "chat bookgen-sim"]
    assert llm, "job spans are recorded whatever the request sampler says"
    assert any(CHARACTER in str((s.attributes or {}).get("gen_ai.input.messages")) for s in llm)


async def test_health_and_metrics_are_never_traced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    async with instrumented_app(fast_settings(tmp_path)) as inst:
        await inst.client.get("/health")
        await inst.client.get("/metrics")
        await inst.client.get("/api/v1/status")
    names = [s.name for s in inst.spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert names == ["GET /api/v1/status"]


async def test_incoming_traceparent_is_continued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_off")
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with instrumented_app(fast_settings(tmp_path)) as inst:
        sampled = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
        unsampled = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-00"}
        await inst.client.get("/api/v1/status", headers=sampled)
        await inst.client.get("/api/v1/status", headers=unsampled)
    [span] = [s for s in inst.spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert f"{span.context.trace_id:032x}" == trace_id
    assert span.parent is not None and span.parent.span_id == 0x00F067AA0BA902B7


def parent(sampled: bool) -> SpanContext:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else 0)
    return SpanContext(1 << 70, 5, is_remote=True, trace_flags=flags)


def test_sampler_from_env() -> None:
    assert RequestSampler.from_env({}) == RequestSampler(DEFAULT_REQUEST_RATIO, True)
    assert RequestSampler.from_env({"OTEL_TRACES_SAMPLER": "always_on"}).ratio == 1.0
    ratio = RequestSampler.from_env(
        {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}
    )
    assert ratio == RequestSampler(0.25, True)
    bad = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"}
    assert RequestSampler.from_env(bad) == RequestSampler(1.0, False)
    assert RequestSampler.from_env({"OTEL_TRACES_SAMPLER": "jaeger_remote"}).ratio == 0.05


def test_sampler_decisions() -> None:
    never, always = RequestSampler(0.0), RequestSampler(1.0)
    assert not never.sampled(None) and always.sampled(None)
    assert never.sampled(parent(True)) and not always.sampled(parent(False))
    assert RequestSampler(1.0, parent_based=False).sampled(parent(False))
    half = RequestSampler(0.5)
    hits = sum(half.sampled(None) for _ in range(4000))
    assert 1700 < hits < 2300


def test_no_exporter_unless_asked() -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    from bookgen.instrumentation.tracing import _exporters

    assert _exporters({}) == []
    assert _exporters({"OTEL_TRACES_EXPORTER": "none"}) == []
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    [otlp] = _exporters(endpoint)
    assert isinstance(otlp, OTLPSpanExporter)
    [console] = _exporters({"OTEL_TRACES_EXPORTER": "console"})
    assert isinstance(console, ConsoleSpanExporter)


def test_sdk_disabled_means_no_tracing() -> None:
    from bookgen.instrumentation.tracing import build_tracing

    tracing = build_tracing(worker_index=0, environ={"OTEL_SDK_DISABLED": "true"})
    assert not tracing.enabled and tracing.provider is None


async def test_one_server_span_per_request_even_with_a_global_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastAPI's native OpenTelemetry switches itself on when a global provider is configured
    (e.g. under `opentelemetry-instrument`); the service turns it off, so our middleware stays
    the one edge: one SERVER span per request, and no per-request provider lookups."""
    from fastapi import FastAPI
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    global_spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(global_spans))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")

    # The control: a default FastAPI app does trace into the global provider.
    plain = FastAPI()
    plain.add_api_route("/ping", lambda: {"ok": True})
    transport = httpx.ASGITransport(app=plain)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert (await client.get("/ping")).status_code == 200
    assert global_spans.get_finished_spans(), "FastAPI no longer traces by itself: drop this test"

    global_spans.clear()
    async with instrumented_app(fast_settings(tmp_path)) as inst:
        assert (await inst.client.get("/api/v1/status")).status_code == 200
    assert global_spans.get_finished_spans() == ()
    server = [s for s in inst.spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert [s.name for s in server] == ["GET /api/v1/status"]
