"""Every metric BookGen exposes: name, type, help, labels and buckets, in one place.

Names are the exposed family names (counters end in `_total`). The SLO generators read this
module and nothing else of the instrumentation, so a rule or panel can only name what exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MetricType = Literal["counter", "gauge", "histogram", "info"]

# Explicit buckets: no common FastAPI exporter's defaults have the 0.2 s latency target.
HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)
# Through an hour, with the 30-minute book target as an exact boundary.
JOB_DURATION_BUCKETS = (
    30.0,
    60.0,
    120.0,
    180.0,
    300.0,
    600.0,
    900.0,
    1200.0,
    1800.0,
    2700.0,
    3600.0,
)
LENGTH_DEVIATION_BUCKETS = (0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0)
# OpenTelemetry GenAI semantic conventions' advisory buckets.
GENAI_DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01 … 81.92
GENAI_TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))  # 1, 4, 16 … 67108864
EVENT_LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

# Bounded label values the service produces; series for these exist at zero from start.
HTTP_METHODS = ("GET", "POST", "PUT", "DELETE")  # pre-created per route that allows them
UNMATCHED_ROUTE = "unmatched"
JOB_OUTCOMES = ("completed", "failed", "cancelled")
REJECT_REASONS = ("queue_full", "rate_limited", "quota", "invalid")
LENGTH_FIX_ACTIONS = ("continue", "trim")
LLM_RETRY_REASONS = ("rate_limited", "server_error", "timeout", "connection")
TOKEN_TYPES = ("input", "output")
CHAPTER_KINDS = ("outline", "introduction", "chapter", "epilogue")
# How one delivery of a section task ended on a worker.
SECTION_TASK_OUTCOMES = ("completed", "failed", "duplicate", "handed_back", "gave_up")
SECTION_STATES = ("queued", "running")
# Through 30 minutes: a section is one streamed chapter (~1.5 min at 40 tokens/s).
SECTION_DURATION_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1800.0)
GC_GENERATIONS = ("0", "1", "2")
# Label value for anything outside a bounded set (OpenTelemetry's convention).
OTHER = "_OTHER"

GENAI_LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")


@dataclass(frozen=True, slots=True)
class MetricSpec:
    name: str
    type: MetricType
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    unit: str = ""

    @property
    def base_name(self) -> str:
        """Name handed to prometheus_client, which appends `_total` to counters itself."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name


CATALOGUE: tuple[MetricSpec, ...] = (
    # --- HTTP -------------------------------------------------------------------------------
    MetricSpec(
        "bookgen_http_requests_total",
        "counter",
        "HTTP requests served, by route template and status code.",
        ("method", "route", "status"),
    ),
    MetricSpec(
        "bookgen_http_request_duration_seconds",
        "histogram",
        "HTTP request duration, by route template.",
        ("method", "route"),
        HTTP_DURATION_BUCKETS,
        "seconds",
    ),
    MetricSpec("bookgen_http_requests_in_flight", "gauge", "HTTP requests being served now."),
    # --- jobs -------------------------------------------------------------------------------
    MetricSpec("bookgen_jobs_submitted_total", "counter", "Biography jobs accepted (202)."),
    MetricSpec(
        "bookgen_jobs_finished_total",
        "counter",
        "Biography jobs that ended, by outcome.",
        ("outcome",),
    ),
    MetricSpec(
        "bookgen_jobs_rejected_total",
        "counter",
        "Biography submissions refused, by reason.",
        ("reason",),
    ),
    MetricSpec(
        "bookgen_job_duration_seconds",
        "histogram",
        "Time from submission to the end of a job, by outcome.",
        ("outcome",),
        JOB_DURATION_BUCKETS,
        "seconds",
    ),
    MetricSpec("bookgen_jobs_queued", "gauge", "Jobs waiting for a worker (whole service)."),
    MetricSpec("bookgen_jobs_running", "gauge", "Jobs this worker process is running now."),
    MetricSpec(
        "bookgen_job_oldest_running_age_seconds",
        "gauge",
        "Age since submission of the oldest job this worker is running; 0 when idle.",
        unit="seconds",
    ),
    MetricSpec(
        "bookgen_job_oldest_queued_age_seconds",
        "gauge",
        "Age since submission of the oldest job not yet started (whole service); 0 when none.",
        unit="seconds",
    ),
    MetricSpec(
        "bookgen_job_queue_capacity",
        "gauge",
        "Configured queue capacity: pending jobs accepted before submissions get 429.",
    ),
    MetricSpec(
        "bookgen_chapters_total",
        "counter",
        "Sections written and stored, by kind.",
        ("kind",),
    ),
    MetricSpec("bookgen_words_total", "counter", "Words written into stored sections."),
    MetricSpec(
        "bookgen_chapter_length_deviation_ratio",
        "histogram",
        "Absolute deviation of a stored chapter's length from its target, as a ratio.",
        buckets=LENGTH_DEVIATION_BUCKETS,
        unit="ratio",
    ),
    MetricSpec(
        "bookgen_length_fix_attempts_total",
        "counter",
        "Extra LLM passes made to bring a chapter within tolerance, by action.",
        ("action",),
    ),
    # --- worker tier (Celery workers; the store-wide figures come from the API processes) -----
    MetricSpec(
        "bookgen_worker_slots",
        "gauge",
        "Sections this worker process can run at once (its pool size).",
    ),
    MetricSpec(
        "bookgen_worker_sections_running",
        "gauge",
        "Sections this worker process is running now.",
    ),
    MetricSpec(
        "bookgen_section_tasks_total",
        "counter",
        "Section task deliveries handled by this worker, by how they ended.",
        ("outcome",),
    ),
    MetricSpec(
        "bookgen_section_redeliveries_total",
        "counter",
        "Section runs that started again after an earlier run of the same section was cut off.",
    ),
    MetricSpec(
        "bookgen_section_task_duration_seconds",
        "histogram",
        "Wall time of one section task on a worker, by section kind and outcome.",
        ("kind", "outcome"),
        SECTION_DURATION_BUCKETS,
        "seconds",
    ),
    MetricSpec(
        "bookgen_sections",
        "gauge",
        "Sections of unfinished books waiting for a worker or being written (whole service).",
        ("state",),
    ),
    MetricSpec(
        "bookgen_section_oldest_queued_age_seconds",
        "gauge",
        "Time the oldest queued section has waited for a worker (whole service); 0 when none.",
        unit="seconds",
    ),
    MetricSpec(
        "bookgen_workers_expected",
        "gauge",
        "Worker processes this deployment is meant to run (0: not configured).",
    ),
    MetricSpec(
        "bookgen_principal_spend_usd",
        "gauge",
        "Estimated LLM spend in US dollars on each principal's books, all time, from the store "
        "(principal = API key name; '(anonymous)' without a key, '(other)' past the first 100).",
        ("principal",),
    ),
    # --- LLM (OpenTelemetry GenAI conventions, translated to Prometheus names) -----------
    MetricSpec(
        "gen_ai_client_operation_duration_seconds",
        "histogram",
        "GenAI operation duration.",
        (*GENAI_LABELS, "error_type"),
        GENAI_DURATION_BUCKETS,
        "seconds",
    ),
    MetricSpec(
        "gen_ai_client_token_usage",
        "histogram",
        "Tokens used per GenAI operation, by token type.",
        (*GENAI_LABELS, "gen_ai_token_type"),
        GENAI_TOKEN_BUCKETS,
    ),
    MetricSpec(
        "gen_ai_client_operation_time_to_first_chunk_seconds",
        "histogram",
        "Time to the first streamed chunk of a GenAI operation.",
        GENAI_LABELS,
        GENAI_DURATION_BUCKETS,
        "seconds",
    ),
    MetricSpec(
        "bookgen_llm_retries_total",
        "counter",
        "LLM calls retried, by reason.",
        ("reason",),
    ),
    MetricSpec(
        "bookgen_llm_cost_usd_total",
        "counter",
        "Estimated LLM spend in US dollars, by model.",
        ("gen_ai_request_model",),
    ),
    MetricSpec(
        "bookgen_llm_provider_info",
        "gauge",
        "1 for the LLM provider this process uses; simulated=true for the built-in model.",
        ("provider", "simulated"),
    ),
    MetricSpec(
        "bookgen_llm_breaker_open",
        "gauge",
        "1 while the LLM provider circuit breaker is open (no new work is taken).",
    ),
    MetricSpec(
        "bookgen_llm_concurrency_window",
        "gauge",
        "Requests this process may have at the LLM provider at once; its 429s narrow it.",
    ),
    MetricSpec(
        "bookgen_sections_out_of_band_total",
        "counter",
        "Sections stored outside the length band after all their attempts, by kind.",
        ("kind",),
    ),
    # --- process (one scrape target per worker process) ----------------------------------
    MetricSpec(
        "bookgen_process_resident_memory_bytes",
        "gauge",
        "Resident set size of this worker process.",
        unit="bytes",
    ),
    MetricSpec(
        "bookgen_process_cpu_seconds_total",
        "counter",
        "CPU time (user + system) of this worker process.",
        unit="seconds",
    ),
    MetricSpec("bookgen_process_open_fds", "gauge", "Open file descriptors of this worker."),
    MetricSpec("bookgen_process_threads", "gauge", "Threads of this worker process."),
    MetricSpec(
        "bookgen_python_gc_collections_total",
        "counter",
        "Garbage collections run by this worker process, by generation.",
        ("generation",),
    ),
    MetricSpec(
        "bookgen_python_gc_objects_collected_total",
        "counter",
        "Objects freed by the garbage collector in this worker process, by generation.",
        ("generation",),
    ),
    MetricSpec(
        "bookgen_event_loop_lag_seconds",
        "histogram",
        "How late the event loop ran a timer scheduled on it.",
        buckets=EVENT_LOOP_LAG_BUCKETS,
        unit="seconds",
    ),
    MetricSpec(
        "bookgen_build_info",
        "gauge",
        "Build information; always 1.",
        ("version", "python_version", "worker"),
    ),
)

BY_NAME: dict[str, MetricSpec] = {m.name: m for m in CATALOGUE}
# Families only worker-tier processes (`bookgen worker`) expose; every other family is on the API.
WORKER_ONLY = frozenset(
    {
        "bookgen_worker_slots",
        "bookgen_worker_sections_running",
        "bookgen_section_tasks_total",
        "bookgen_section_redeliveries_total",
        "bookgen_section_task_duration_seconds",
    }
)


def series_names(spec: MetricSpec) -> tuple[str, ...]:
    """Sample names a family exposes in the Prometheus text format."""
    if spec.type == "histogram":
        return (f"{spec.name}_bucket", f"{spec.name}_sum", f"{spec.name}_count")
    return (spec.name,)


def family_of(series: str) -> MetricSpec | None:
    """The catalogued family a sample or series name belongs to, if any."""
    if series in BY_NAME:
        return BY_NAME[series]
    for suffix in ("_bucket", "_sum", "_count"):
        base = series.removesuffix(suffix)
        if base != series and base in BY_NAME and BY_NAME[base].type == "histogram":
            return BY_NAME[base]
    return None
