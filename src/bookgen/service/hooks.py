"""Observation points of the service.

The service calls these; it never imports the instrumentation. `Hooks` does nothing, so the
service runs bare; the instrumentation installs a subclass on `app.state.hooks` (and the runtime
reads it from there), the same way OpenTelemetry's instrumentors attach at one edge.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class JobInfo:
    """What an observer may know about a job: never the character or any prompt text."""

    job_id: str
    chapters: int
    total_words: int
    model: str
    created_at: datetime
    # Opaque carrier returned by `Hooks.job_submitted`, stored with the job (survives restarts).
    trace_context: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class LLMCall:
    """One chat-completions call; the client fills in the outcome before the hook exits."""

    operation: str  # "chat"
    provider: str
    model: str
    stream: bool
    max_tokens: int | None = None
    temperature: float | None = None
    response_model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    time_to_first_chunk_s: float | None = None
    cost_usd: float | None = None
    error_type: str | None = None  # e.g. "429", "500", "timeout", exception class name
    attempt: int = 1
    # Only set when the operator opted in to content capture; never logged.
    prompt: str | None = None
    completion: str | None = None


@dataclass(frozen=True, slots=True)
class ChapterOutcome:
    job_id: str
    index: int  # 0 = introduction, 1..n chapters, n+1 = epilogue
    kind: str  # "chapter" | "introduction" | "epilogue" | "outline"
    words: int
    target_words: int
    deviation: float  # signed (words - target) / target
    attempts: int


@dataclass(slots=True)
class SectionRun:
    """One delivery of a section task on a worker; the worker sets `outcome` before it ends."""

    job: JobInfo
    index: int  # -1 = outline, then as ChapterOutcome
    kind: str
    attempt: int  # runs of this section so far, this one included (1 = first)
    # Trace context carried in the task message's headers (the submitting request's).
    carrier: dict[str, str] = field(default_factory=dict)
    outcome: str = "completed"  # completed | failed | duplicate | handed_back | gave_up


class Hooks:
    """No-op observer. Subclasses override what they measure."""

    # --- jobs ---------------------------------------------------------------------------
    def job_submitted(self, job_id: str) -> dict[str, str]:
        """Called inside the creating request; returns a carrier stored with the job."""
        return {}

    def job_rejected(self, reason: str) -> None:
        """reason: queue_full | rate_limited | quota (the caller's own cap) | invalid."""

    @contextmanager
    def job_run(self, job: JobInfo) -> Iterator[None]:
        """Wraps one execution (or resumption) of a job by a worker."""
        yield

    def job_finished(self, job: JobInfo, outcome: str, duration_s: float) -> None:
        """outcome: completed | failed | cancelled; duration from created_at."""

    # --- worker tier --------------------------------------------------------------------
    @contextmanager
    def section_task(self, run: SectionRun) -> Iterator[SectionRun]:
        """Wraps one delivery of a section task on a worker (a claimed run or a no-op)."""
        yield run

    # --- chapters -----------------------------------------------------------------------
    @contextmanager
    def chapter_run(self, job: JobInfo, index: int, kind: str) -> Iterator[None]:
        yield

    def chapter_done(self, outcome: ChapterOutcome) -> None:
        pass

    def length_fix(self, action: str) -> None:
        """action: continue | trim."""

    def length_out_of_band(self, outcome: ChapterOutcome) -> None:
        """A section stored outside the length band after all its attempts (too short)."""

    # --- LLM ----------------------------------------------------------------------------
    @contextmanager
    def llm_call(self, call: LLMCall) -> Iterator[LLMCall]:
        yield call

    def llm_retry(self, reason: str) -> None:
        """reason: rate_limited | server_error | timeout | connection."""

    def llm_provider(self, provider: str, simulated: bool) -> None:
        """At start: which provider this process talks to (the simulated model or a real one)."""

    def llm_breaker(self, state: str) -> None:
        """The provider circuit breaker changed state: closed | open | half_open."""

    def llm_window(self, size: int) -> None:
        """The client's concurrency window changed (the provider's 429s narrow it)."""

    @property
    def capture_content(self) -> bool:
        """Whether the LLM client should copy prompt/completion text into `LLMCall`."""
        return False
