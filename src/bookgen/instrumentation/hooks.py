"""`TelemetryHooks`: the service's observation points turned into metrics, spans and log context."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bookgen.instrumentation import catalogue as cat
from bookgen.instrumentation.logging import job_id_var
from bookgen.instrumentation.metrics import Metrics, bounded
from bookgen.service.hooks import ChapterOutcome, Hooks, JobInfo, LLMCall, SectionRun

_PROPAGATOR = TraceContextTextMapPropagator()
# error.type values: status codes and identifiers such as "timeout" or an exception class name.
_ERROR_TYPE = re.compile(r"[A-Za-z0-9_.]{1,64}")


def exemplar_of(span: trace.Span) -> dict[str, str] | None:
    """The trace id of a sampled span, as a Prometheus exemplar."""
    ctx = span.get_span_context()
    return {"trace_id": f"{ctx.trace_id:032x}"} if ctx.trace_flags.sampled else None


class TelemetryHooks(Hooks):
    def __init__(
        self,
        metrics: Metrics,
        tracer: trace.Tracer,
        *,
        models: Iterable[str],
        capture_content: bool = False,
    ) -> None:
        self._m = metrics
        self._tracer = tracer
        self._models = frozenset(models)
        self._capture = capture_content

    @property
    def capture_content(self) -> bool:
        return self._capture

    def _model(self, model: str | None) -> str:
        return bounded(model, self._models)

    # --- jobs ---------------------------------------------------------------------------
    def job_submitted(self, job_id: str) -> dict[str, str]:
        self._m.jobs_submitted.inc()
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("bookgen.job.id", job_id)
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        return carrier

    def job_rejected(self, reason: str) -> None:
        self._m.jobs_rejected.labels(bounded(reason, cat.REJECT_REASONS)).inc()

    @contextmanager
    def job_run(self, job: JobInfo) -> Iterator[None]:
        links = []
        if job.trace_context:
            parent = trace.get_current_span(_PROPAGATOR.extract(job.trace_context))
            if parent.get_span_context().is_valid:
                links.append(Link(parent.get_span_context(), {"bookgen.link": "submitted_by"}))
        token = job_id_var.set(job.job_id)
        try:
            # A root of its own (a job outlives its request), linked to the request.
            with self._tracer.start_as_current_span(
                "bookgen.job",
                context=otel_context.Context(),
                kind=SpanKind.CONSUMER,
                links=links,
                attributes={
                    "bookgen.job.id": job.job_id,
                    "bookgen.job.chapters": job.chapters,
                    "bookgen.job.total_words": job.total_words,
                    "gen_ai.request.model": job.model,
                },
            ):
                yield
        finally:
            job_id_var.reset(token)

    def job_finished(self, job: JobInfo, outcome: str, duration_s: float) -> None:
        outcome = bounded(outcome, cat.JOB_OUTCOMES)
        self._m.jobs_finished.labels(outcome).inc()
        span = trace.get_current_span()
        self._m.job_duration.labels(outcome).observe(duration_s, exemplar_of(span))
        if span.is_recording():
            span.set_attribute("bookgen.job.outcome", outcome)
            if outcome == "failed":
                span.set_status(Status(StatusCode.ERROR))

    # --- worker tier --------------------------------------------------------------------
    @contextmanager
    def section_task(self, run: SectionRun) -> Iterator[SectionRun]:
        # A child of the submitting request (its context travelled in the task headers), so
        # request -> section task -> chapter -> LLM call is one trace across the queue.
        parent = _PROPAGATOR.extract(run.carrier) if run.carrier else otel_context.Context()
        token = job_id_var.set(run.job.job_id)
        started = time.perf_counter()
        try:
            with self._tracer.start_as_current_span(
                "bookgen.section",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes={
                    "bookgen.job.id": run.job.job_id,
                    "bookgen.chapter.index": run.index,
                    "bookgen.chapter.kind": run.kind,
                    "bookgen.section.attempt": run.attempt,
                    "messaging.system": "celery",
                    "messaging.operation.type": "process",
                },
            ) as span:
                yield run
                span.set_attribute("bookgen.section.outcome", run.outcome)
                if run.outcome in ("failed", "gave_up"):
                    span.set_status(Status(StatusCode.ERROR))
        finally:
            job_id_var.reset(token)
            outcome = bounded(run.outcome, cat.SECTION_TASK_OUTCOMES)
            self._m.section_tasks.labels(outcome).inc()
            if outcome != "duplicate":
                if run.attempt > 1:
                    self._m.section_redeliveries.inc()
                kind = bounded(run.kind, cat.CHAPTER_KINDS)
                self._m.section_duration.labels(kind, outcome).observe(
                    time.perf_counter() - started
                )

    # --- chapters -----------------------------------------------------------------------
    @contextmanager
    def chapter_run(self, job: JobInfo, index: int, kind: str) -> Iterator[None]:
        with self._tracer.start_as_current_span(
            "bookgen.chapter",
            attributes={
                "bookgen.job.id": job.job_id,
                "bookgen.chapter.index": index,
                "bookgen.chapter.kind": kind,
            },
        ):
            yield

    def chapter_done(self, outcome: ChapterOutcome) -> None:
        self._m.chapters.labels(bounded(outcome.kind, cat.CHAPTER_KINDS)).inc()
        self._m.words.inc(max(0, outcome.words))
        if outcome.kind != "outline" and outcome.target_words > 0:
            self._m.length_deviation.observe(abs(outcome.deviation))
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(
                {
                    "bookgen.chapter.words": outcome.words,
                    "bookgen.chapter.target_words": outcome.target_words,
                    "bookgen.chapter.deviation": outcome.deviation,
                    "bookgen.chapter.attempts": outcome.attempts,
                }
            )

    def length_fix(self, action: str) -> None:
        self._m.length_fixes.labels(bounded(action, cat.LENGTH_FIX_ACTIONS)).inc()

    def length_out_of_band(self, outcome: ChapterOutcome) -> None:
        self._m.out_of_band.labels(bounded(outcome.kind, cat.CHAPTER_KINDS)).inc()

    # --- LLM ----------------------------------------------------------------------------
    @contextmanager
    def llm_call(self, call: LLMCall) -> Iterator[LLMCall]:
        attributes: dict[str, str | int | float] = {
            "gen_ai.operation.name": call.operation,
            "gen_ai.provider.name": call.provider,
            "gen_ai.request.model": call.model,
            "bookgen.llm.attempt": call.attempt,
        }
        if call.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = call.max_tokens
        if call.temperature is not None:
            attributes["gen_ai.request.temperature"] = call.temperature
        with self._tracer.start_as_current_span(
            f"{call.operation} {call.model}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            started = time.perf_counter()
            try:
                yield call
            except BaseException as exc:
                call.error_type = call.error_type or type(exc).__name__
                raise
            finally:
                self._record_llm(call, span, time.perf_counter() - started)

    def _record_llm(self, call: LLMCall, span: trace.Span, duration_s: float) -> None:
        model = self._model(call.model)
        genai = (call.operation, call.provider, model)
        error = ""
        if call.error_type:
            error = call.error_type if _ERROR_TYPE.fullmatch(call.error_type) else cat.OTHER
        self._m.llm_duration.labels(*genai, error).observe(duration_s, exemplar_of(span))
        if call.input_tokens is not None:
            self._m.llm_tokens.labels(*genai, "input").observe(call.input_tokens)
        if call.output_tokens is not None:
            self._m.llm_tokens.labels(*genai, "output").observe(call.output_tokens)
        if call.time_to_first_chunk_s is not None:
            self._m.llm_ttfc.labels(*genai).observe(call.time_to_first_chunk_s)
        if call.cost_usd:
            self._m.llm_cost.labels(model).inc(call.cost_usd)
        if not span.is_recording():
            return
        if call.response_model:
            span.set_attribute("gen_ai.response.model", call.response_model)
        if call.input_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", call.input_tokens)
        if call.output_tokens is not None:
            span.set_attribute("gen_ai.usage.output_tokens", call.output_tokens)
        if call.finish_reason:
            span.set_attribute("gen_ai.response.finish_reasons", (call.finish_reason,))
        if error:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR))
        if self._capture:
            if call.prompt is not None:
                span.set_attribute("gen_ai.input.messages", json.dumps(call.prompt))
            if call.completion is not None:
                span.set_attribute("gen_ai.output.messages", json.dumps(call.completion))

    def llm_retry(self, reason: str) -> None:
        self._m.llm_retries.labels(bounded(reason, cat.LLM_RETRY_REASONS)).inc()

    def llm_provider(self, provider: str, simulated: bool) -> None:
        self._m.llm_provider_info.clear()
        self._m.llm_provider_info.labels(provider, "true" if simulated else "false").set(1)

    def llm_breaker(self, state: str) -> None:
        self._m.llm_breaker_open.set(1 if state == "open" else 0)

    def llm_window(self, size: int) -> None:
        self._m.llm_window.set(size)
