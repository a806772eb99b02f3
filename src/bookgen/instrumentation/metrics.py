"""The catalogue's instruments on one registry, with every known label set created at zero.

Families read at scrape time (runtime gauges, process and GC figures) are collectors in
`process.py`; everything the code pushes lives here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bookgen.instrumentation import catalogue as cat

# Families a collector yields at scrape time instead of an instrument the code updates.
COLLECTED = frozenset(
    {
        "bookgen_http_requests_in_flight",
        "bookgen_jobs_queued",
        "bookgen_jobs_running",
        "bookgen_job_oldest_running_age_seconds",
        "bookgen_job_oldest_queued_age_seconds",
        "bookgen_job_queue_capacity",
        "bookgen_worker_slots",
        "bookgen_worker_sections_running",
        "bookgen_sections",
        "bookgen_section_oldest_queued_age_seconds",
        "bookgen_workers_expected",
        "bookgen_principal_spend_usd",
        "bookgen_process_resident_memory_bytes",
        "bookgen_process_cpu_seconds_total",
        "bookgen_process_open_fds",
        "bookgen_process_threads",
        "bookgen_python_gc_collections_total",
        "bookgen_python_gc_objects_collected_total",
    }
)

Instrument = Counter | Gauge | Histogram
_I = TypeVar("_I", Counter, Gauge, Histogram)


def build_instrument(spec: cat.MetricSpec, registry: CollectorRegistry) -> Instrument:
    """One prometheus_client instrument exactly as the catalogue describes it."""
    common: dict[str, Any] = {
        "name": spec.base_name,
        "documentation": spec.help,
        "labelnames": spec.labels,
        "registry": registry,
        "unit": spec.unit,
    }
    if spec.type == "counter":
        return Counter(**common)
    if spec.type == "histogram":
        return Histogram(**common, buckets=spec.buckets)
    return Gauge(**common)


def bounded(value: str | None, allowed: Iterable[str]) -> str:
    """The value if it belongs to a bounded set, else one catch-all label value."""
    return value if value is not None and value in allowed else cat.OTHER


class InFlight(Collector):
    """Requests being served: a plain integer (no lock on the hot path), read at scrape time."""

    def __init__(self) -> None:
        self.value = 0

    def collect(self) -> Iterator[Metric]:
        spec = cat.BY_NAME["bookgen_http_requests_in_flight"]
        yield GaugeMetricFamily(spec.name, spec.help, value=self.value)


class Metrics:
    """Push-side instruments; hot-path children are cached so a request costs no `.labels()`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.by_name: dict[str, Instrument] = {
            spec.name: build_instrument(spec, registry)
            for spec in cat.CATALOGUE
            if spec.name not in COLLECTED
        }
        self.http_requests = self._get("bookgen_http_requests_total", Counter)
        self.http_duration = self._get("bookgen_http_request_duration_seconds", Histogram)
        self.in_flight = InFlight()
        registry.register(self.in_flight)
        self.jobs_submitted = self._get("bookgen_jobs_submitted_total", Counter)
        self.jobs_finished = self._get("bookgen_jobs_finished_total", Counter)
        self.jobs_rejected = self._get("bookgen_jobs_rejected_total", Counter)
        self.job_duration = self._get("bookgen_job_duration_seconds", Histogram)
        self.chapters = self._get("bookgen_chapters_total", Counter)
        self.words = self._get("bookgen_words_total", Counter)
        self.length_deviation = self._get("bookgen_chapter_length_deviation_ratio", Histogram)
        self.length_fixes = self._get("bookgen_length_fix_attempts_total", Counter)
        self.llm_duration = self._get("gen_ai_client_operation_duration_seconds", Histogram)
        self.llm_tokens = self._get("gen_ai_client_token_usage", Histogram)
        self.llm_ttfc = self._get("gen_ai_client_operation_time_to_first_chunk_seconds", Histogram)
        self.llm_retries = self._get("bookgen_llm_retries_total", Counter)
        self.llm_cost = self._get("bookgen_llm_cost_usd_total", Counter)
        self.llm_provider_info = self._get("bookgen_llm_provider_info", Gauge)
        self.llm_breaker_open = self._get("bookgen_llm_breaker_open", Gauge)
        self.llm_window = self._get("bookgen_llm_concurrency_window", Gauge)
        self.out_of_band = self._get("bookgen_sections_out_of_band_total", Counter)
        self.section_tasks = self._get("bookgen_section_tasks_total", Counter)
        self.section_redeliveries = self._get("bookgen_section_redeliveries_total", Counter)
        self.section_duration = self._get("bookgen_section_task_duration_seconds", Histogram)
        self.event_loop_lag = self._get("bookgen_event_loop_lag_seconds", Histogram)
        self.build_info = self._get("bookgen_build_info", Gauge)
        self._http_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    def _get(self, name: str, kind: type[_I]) -> _I:
        instrument = self.by_name[name]
        assert isinstance(instrument, kind), name
        return instrument

    def http(self, method: str, route: str, status: str) -> tuple[Counter, Histogram]:
        """Counter and histogram children of one (method, route, status); cached."""
        key = (method, route, status)
        children = self._http_children.get(key)
        if children is None:
            children = (
                self.http_requests.labels(method, route, status),
                self.http_duration.labels(method, route),
            )
            self._http_children[key] = children
        return children

    def precreate(
        self,
        http_series: Iterable[tuple[str, str, str]],
        *,
        provider: str,
        models: Iterable[str],
    ) -> None:
        """Create the known label sets so every series exists at zero from the start."""
        for method, route, status in http_series:
            self.http(method, route, status)
        for outcome in cat.JOB_OUTCOMES:
            self.jobs_finished.labels(outcome)
            self.job_duration.labels(outcome)
        for reason in cat.REJECT_REASONS:
            self.jobs_rejected.labels(reason)
        for kind in cat.CHAPTER_KINDS:
            self.chapters.labels(kind)
        for action in cat.LENGTH_FIX_ACTIONS:
            self.length_fixes.labels(action)
        for reason in cat.LLM_RETRY_REASONS:
            self.llm_retries.labels(reason)
        # 0 until the process has resolved its provider (the hook then sets the true one to 1).
        self.llm_provider_info.labels(provider, "false")
        for kind in cat.CHAPTER_KINDS[1:]:
            self.out_of_band.labels(kind)
        for outcome in cat.SECTION_TASK_OUTCOMES:
            self.section_tasks.labels(outcome)
        for kind in cat.CHAPTER_KINDS:
            self.section_duration.labels(kind, "completed")
        for model in models:
            genai = ("chat", provider, model)
            self.llm_duration.labels(*genai, "")
            self.llm_ttfc.labels(*genai)
            for token_type in cat.TOKEN_TYPES:
                self.llm_tokens.labels(*genai, token_type)
            self.llm_cost.labels(model)
