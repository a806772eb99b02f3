"""A worker process's telemetry: one trace across the queue, and its own /metrics port."""

from __future__ import annotations

from pathlib import Path

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry
from telemetry_helpers import catalogue_problems

from bookgen.instrumentation import catalogue as cat
from bookgen.instrumentation.worker import instrument_worker
from bookgen.service.worker import SectionWorker
from bookgen.stack.ports import free_port
from service_helpers import LocalPublisher, Pool, submit_book, tier_settings, wait_for_job


def test_request_section_task_chapter_llm_are_one_trace(tmp_path: Path) -> None:
    settings = tier_settings(tmp_path, telemetry=True)
    spans = InMemorySpanExporter()
    port = free_port()
    holder: list[SectionWorker] = []
    telemetry = instrument_worker(
        settings,
        lambda: holder[0].running if holder else 0,
        metrics_port=port,
        registry=CollectorRegistry(),
        span_exporter=spans,
    )
    # The submitting request, in the API process: its context is what the task headers carry.
    api = TracerProvider()
    api.add_span_processor(SimpleSpanProcessor(spans))
    carrier: dict[str, str] = {}
    with api.get_tracer("api").start_as_current_span("POST generate", kind=SpanKind.SERVER) as req:
        TraceContextTextMapPropagator().inject(carrier)
    publisher = LocalPublisher()
    worker = SectionWorker(settings, telemetry.hooks, publisher, owner="w")
    holder.append(worker)
    worker.start()
    pool = Pool(worker, publisher, threads=6)
    try:
        job_id = submit_book(worker, publisher, chapters=2, carrier=carrier)
        assert wait_for_job(worker, job_id, {"completed", "failed"}).status == "completed"
        exposition = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        pool.close()
        worker.close()
        telemetry.close()

    finished = spans.get_finished_spans()
    trace_id = req.get_span_context().trace_id
    tasks = [s for s in finished if s.name == "bookgen.section"]
    assert len(tasks) == 5  # outline, introduction, 2 chapters, epilogue
    for task in tasks:
        assert task.kind is SpanKind.CONSUMER
        assert task.context.trace_id == trace_id
        assert task.parent is not None and task.parent.span_id == req.get_span_context().span_id
        assert task.attributes is not None
        assert task.attributes["bookgen.section.outcome"] == "completed"
    task_ids = {t.context.span_id for t in tasks}
    chapters = [s for s in finished if s.name == "bookgen.chapter"]
    assert len(chapters) == 5
    assert all(c.parent is not None and c.parent.span_id in task_ids for c in chapters)
    chapter_ids = {c.context.span_id for c in chapters}
    llm = [s for s in finished if s.name == "chat bookgen-sim"]
    assert llm and all(s.context.trace_id == trace_id for s in llm)
    assert all(s.parent is not None and s.parent.span_id in chapter_ids for s in llm)

    # The worker's own registry: the worker families, process figures and LLM metrics.
    skip = {s.name for s in cat.CATALOGUE if s.name not in cat.WORKER_ONLY} - {
        "bookgen_process_resident_memory_bytes",
        "gen_ai_client_operation_duration_seconds",
    }
    assert catalogue_problems(exposition, skip=skip) == []
    assert 'bookgen_section_tasks_total{outcome="completed"} 5.0' in exposition
    assert "bookgen_worker_slots 32.0" in exposition
