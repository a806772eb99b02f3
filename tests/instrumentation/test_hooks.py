"""TelemetryHooks turn the service's observation points into the catalogue's series."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from bookgen.instrumentation.hooks import TelemetryHooks
from bookgen.instrumentation.logging import configure_logging
from bookgen.instrumentation.metrics import Metrics
from bookgen.service.hooks import ChapterOutcome, JobInfo, LLMCall

GENAI = {
    "gen_ai_operation_name": "chat",
    "gen_ai_provider_name": "openrouter",
    "gen_ai_request_model": "bookgen-sim",
}


@pytest.fixture
def setup() -> tuple[TelemetryHooks, CollectorRegistry, InMemorySpanExporter]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.precreate([], provider="openrouter", models=["bookgen-sim"])
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    hooks = TelemetryHooks(metrics, provider.get_tracer("t"), models=["bookgen-sim"])
    return hooks, registry, spans


def job() -> JobInfo:
    return JobInfo("j1", 2, 1000, "bookgen-sim", datetime.now(UTC))


def test_job_lifecycle(
    setup: tuple[TelemetryHooks, CollectorRegistry, InMemorySpanExporter],
) -> None:
    hooks, registry, _ = setup
    value = registry.get_sample_value
    hooks.job_submitted("j1")
    hooks.job_rejected("queue_full")
    hooks.job_rejected("something-new")
    with hooks.job_run(job()):
        with hooks.chapter_run(job(), 1, "chapter"):
            hooks.length_fix("trim")
            hooks.chapter_done(ChapterOutcome("j1", 1, "chapter", 490, 500, -0.02, 2))
        hooks.job_finished(job(), "completed", 1700.0)
    assert value("bookgen_jobs_submitted_total") == 1
    assert value("bookgen_jobs_rejected_total", {"reason": "queue_full"}) == 1
    assert value("bookgen_jobs_rejected_total", {"reason": "_OTHER"}) == 1
    assert value("bookgen_length_fix_attempts_total", {"action": "trim"}) == 1
    assert value("bookgen_chapters_total", {"kind": "chapter"}) == 1
    assert value("bookgen_words_total") == 490
    assert value("bookgen_chapter_length_deviation_ratio_bucket", {"le": "0.02"}) == 1
    assert value("bookgen_chapter_length_deviation_ratio_bucket", {"le": "0.01"}) == 0
    assert value("bookgen_jobs_finished_total", {"outcome": "completed"}) == 1
    assert (
        value("bookgen_job_duration_seconds_bucket", {"outcome": "completed", "le": "1800.0"}) == 1
    )
    assert (
        value("bookgen_job_duration_seconds_bucket", {"outcome": "completed", "le": "1200.0"}) == 0
    )


def test_llm_call_success(
    setup: tuple[TelemetryHooks, CollectorRegistry, InMemorySpanExporter],
) -> None:
    hooks, registry, spans = setup
    call = LLMCall("chat", "openrouter", "bookgen-sim", stream=True, max_tokens=900)
    with hooks.llm_call(call) as c:
        c.response_model, c.input_tokens, c.output_tokens = "bookgen-sim-1", 120, 700
        c.finish_reason, c.time_to_first_chunk_s, c.cost_usd = "stop", 0.3, 0.0005
    value = registry.get_sample_value
    assert value("gen_ai_client_operation_duration_seconds_count", {**GENAI, "error_type": ""}) == 1
    tokens = "gen_ai_client_token_usage_sum"
    assert value(tokens, {**GENAI, "gen_ai_token_type": "input"}) == 120
    assert value(tokens, {**GENAI, "gen_ai_token_type": "output"}) == 700
    assert value("gen_ai_client_operation_time_to_first_chunk_seconds_count", GENAI) == 1
    cost = value("bookgen_llm_cost_usd_total", {"gen_ai_request_model": "bookgen-sim"})
    assert cost == pytest.approx(0.0005)
    [span] = spans.get_finished_spans()
    assert span.name == "chat bookgen-sim"
    assert span.attributes is not None
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert span.attributes["gen_ai.request.max_tokens"] == 900
    assert "error.type" not in span.attributes


def test_llm_call_failure_and_retry(
    setup: tuple[TelemetryHooks, CollectorRegistry, InMemorySpanExporter],
) -> None:
    hooks, registry, spans = setup
    call = LLMCall("chat", "openrouter", "some/unknown-model", stream=False)
    with pytest.raises(RuntimeError), hooks.llm_call(call) as c:
        c.error_type = "429"
        raise RuntimeError("rate limited")
    hooks.llm_retry("rate_limited")
    labels = {**GENAI, "gen_ai_request_model": "_OTHER", "error_type": "429"}
    assert registry.get_sample_value("gen_ai_client_operation_duration_seconds_count", labels) == 1
    assert registry.get_sample_value("bookgen_llm_retries_total", {"reason": "rate_limited"}) == 1
    [span] = spans.get_finished_spans()
    assert span.attributes is not None and span.attributes["error.type"] == "429"
    assert not span.status.is_ok


def test_logs_carry_trace_span_and_job_ids(
    setup: tuple[TelemetryHooks, CollectorRegistry, InMemorySpanExporter],
) -> None:
    hooks, _, _ = setup
    handler = configure_logging("INFO")
    stream = io.StringIO()
    handler.setStream(stream)
    with hooks.job_run(job()):
        logging.getLogger("bookgen.test").info("writing", extra={"chapter": 1})
    logging.getLogger("bookgen.test").info("idle")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "writing" and first["job_id"] == "j1" and first["level"] == "INFO"
    assert len(first["trace_id"]) == 32 and len(first["span_id"]) == 16 and "timestamp" in first
    assert "job_id" not in second and "trace_id" not in second
