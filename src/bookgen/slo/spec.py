"""The SLO spec (slo.yaml) as a validated model: every target number has its home here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bookgen.instrumentation.catalogue import (
    BY_NAME,
    SECTION_TASK_OUTCOMES,
    MetricSpec,
    family_of,
)
from bookgen.slo import conventions as names

DEFAULT_PATH = Path("slo.yaml")


class SpecError(ValueError):
    """slo.yaml is missing, unreadable or invalid; the message lists every problem."""


def _duration(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration string like 30s, 5m, 1h, 1d")
    return names.parse_duration(value)


Duration = Annotated[int, BeforeValidator(_duration)]
Severity = Literal["critical", "warning", "info"]

_SELECTOR_RE = re.compile(r"^(?P<metric>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<matchers>.*)\})?$")
_MATCHER_RE = re.compile(
    r'^\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*"(?P<value>[^"]*)"\s*$'
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Selector(Strict):
    """A catalogued series with optional label matchers, e.g. `x_total{status=~"5.."}`."""

    metric: str
    matchers: tuple[tuple[str, str, str], ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        match = _SELECTOR_RE.match(value.strip())
        if match is None:
            raise ValueError(f'{value!r} is not a selector like metric{{label="value"}}')
        matchers = []
        for part in filter(None, (match.group("matchers") or "").split(",")):
            m = _MATCHER_RE.match(part)
            if m is None:
                raise ValueError(f'{part!r} in {value!r} is not a matcher like label="value"')
            matchers.append((m.group("label"), m.group("op"), m.group("value")))
        return {"metric": match.group("metric"), "matchers": tuple(matchers)}

    @model_validator(mode="after")
    def _known(self) -> Selector:
        family = family_of(self.metric)
        if family is None:
            raise ValueError(
                f"unknown metric {self.metric!r}: not in bookgen.instrumentation.catalogue"
            )
        allowed = set(family.labels) | set(names.TARGET_LABELS)
        if self.metric.endswith("_bucket"):
            allowed.add("le")
        for label, _, _ in self.matchers:
            if label not in allowed:
                raise ValueError(f"{self.metric} has no label {label!r}; it has {sorted(allowed)}")
        return self

    @property
    def family(self) -> MetricSpec:
        family = family_of(self.metric)
        assert family is not None
        return family

    def promql(self, *extra: str) -> str:
        parts = [f'{label}{op}"{value}"' for label, op, value in self.matchers] + list(extra)
        return f"{self.metric}{{{','.join(parts)}}}" if parts else self.metric


def _histogram(name: str) -> MetricSpec:
    spec = BY_NAME.get(name)
    if spec is None:
        raise ValueError(f"unknown metric {name!r}: not in bookgen.instrumentation.catalogue")
    if spec.type != "histogram":
        raise ValueError(f"{name} is a {spec.type}, not a histogram")
    return spec


def _bucket(histogram: str, le: str) -> str:
    spec = _histogram(histogram)
    bounds = [names.le_string(b) for b in spec.buckets]
    if le not in bounds:
        raise ValueError(
            f'le "{le}" is not a bucket of {histogram} (le is matched as a string); '
            f"its buckets are {', '.join(bounds)}"
        )
    return le


class LatencySLI(Strict):
    """Good events are requests within a histogram bucket bound: `_bucket{le}` over `_count`."""

    histogram: str
    le: StrictStr
    matchers: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _real_bucket(self) -> LatencySLI:
        _bucket(self.histogram, self.le)
        for matcher in self.matchers:
            Selector.model_validate(f"{self.histogram}_count{{{matcher}}}")
        return self

    @property
    def bound(self) -> float:
        return float(self.le)

    def bucket(self) -> Selector:
        return Selector.model_validate(f"{self.histogram}_bucket{{{','.join(self.matchers)}}}")

    def count(self) -> Selector:
        return Selector.model_validate(f"{self.histogram}_count{{{','.join(self.matchers)}}}")


class RatioSLO(Strict):
    """A ratio objective over the SLO period: recording rules per window + burn-rate alerts."""

    title: str
    description: str
    objective: float = Field(gt=0, lt=1)
    errors: Selector | None = None
    total: Selector | None = None
    latency: LatencySLI | None = None

    @model_validator(mode="after")
    def _one_sli(self) -> RatioSLO:
        ratio = self.errors is not None and self.total is not None
        if ratio == (self.latency is not None) or (self.errors is None) != (self.total is None):
            raise ValueError("give either `errors` and `total` selectors, or `latency`")
        for sel in (self.errors, self.total):
            if sel is not None and sel.family.type not in ("counter", "histogram"):
                raise ValueError(f"{sel.metric} is a {sel.family.type}; an SLI needs counters")
        return self

    @property
    def error_budget(self) -> float:
        return round(1 - self.objective, 10)


class BurnRate(Strict):
    severity: Literal["critical", "warning"]
    long: Duration
    short: Duration
    factor: float = Field(gt=0)

    @model_validator(mode="after")
    def _short_first(self) -> BurnRate:
        if not 0 < self.short < self.long:
            raise ValueError("a burn-rate pair needs 0 < short window < long window")
        return self


class Profile(Strict):
    time_scale: int = Field(ge=1, description="every time horizon is divided by this")
    scrape_interval: Duration
    evaluation_interval: Duration
    group_wait: Duration
    group_interval: Duration
    repeat_interval: Duration
    watchdog_repeat_interval: Duration


class Profiles(Strict):
    default: Profile
    fast: Profile


class Links(Strict):
    runbook: str
    grafana: str


class Selectors(Strict):
    """Matchers added to every series a rule or panel reads (kubernetes-mixin's selectors).
    Empty on a single machine; a shared Prometheus sets e.g. `namespace="bookgen"`."""

    namespace: str = ""
    cluster: str = ""

    @field_validator("namespace", "cluster")
    @classmethod
    def _matcher(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return value
        m = _MATCHER_RE.match(value)
        if m is None:
            raise ValueError(f'{value!r} is not a matcher like namespace="bookgen"')
        if info.field_name == "namespace" and m.group("label") != names.NAMESPACE_LABEL:
            raise ValueError(f"the namespace selector must match the label namespace: {value!r}")
        if m.group("label") == names.JOB_LABEL:
            raise ValueError("jobs are set under scrape:, per tier")
        return value.strip()


class Scrape(Strict):
    api_job: str
    llm_job: str
    worker_label: str
    worker_job: str
    broker_job: str
    store_job: str
    celery_job: str


class Threshold(Strict):
    """Common fields of a threshold alert."""

    severity: Severity = "warning"
    for_: Duration = Field(alias="for")


class APILatencyTarget(Threshold):
    slo: str
    quantile: float = Field(gt=0, lt=1)
    window: Duration
    min_events: int = Field(ge=1, description="requests in the window before it can alert")


class RatioTarget(Threshold):
    """Alert when an SLO's error ratio over `window` exceeds its error budget."""

    slo: str
    window: Duration
    min_events: int = Field(ge=1, description="SLI events in the window before it can alert")


class ThrottlingTarget(Strict):
    """The share of requests answered 429: recorded and shown, never alerted on."""

    throttled: Selector
    window: Duration


class LeakWatch(Threshold):
    window: Duration
    horizon: Duration


class MemoryTarget(Threshold):
    metric: Selector
    max_bytes: int = Field(gt=0)
    leak: LeakWatch


class ThroughputTarget(Threshold):
    completed: Selector
    demand: Selector
    min_per_hour: float = Field(gt=0)


class BookTimeTarget(Threshold):
    histogram: str
    matchers: tuple[str, ...] = ()
    max_seconds: float = Field(gt=0)
    quantile: float = Field(gt=0, lt=1)
    window: Duration
    min_events: int = Field(ge=1, description="completed books in the window before it alerts")
    oldest_running: Selector
    oldest_for: Duration

    @model_validator(mode="after")
    def _real_bucket(self) -> BookTimeTarget:
        _bucket(self.histogram, names.le_string(self.max_seconds))
        for matcher in self.matchers:
            Selector.model_validate(f"{self.histogram}_count{{{matcher}}}")
        return self

    def bucket(self) -> Selector:
        return Selector.model_validate(f"{self.histogram}_bucket{{{','.join(self.matchers)}}}")

    def count(self) -> Selector:
        return Selector.model_validate(f"{self.histogram}_count{{{','.join(self.matchers)}}}")


class BookWait(Threshold):
    oldest_queued: Selector
    max_wait: Duration = Field(gt=0)


class UsersTarget(Threshold):
    min_users: int = Field(ge=1)
    rejected: Selector
    capacity: Selector
    window: Duration

    @model_validator(mode="after")
    def _queue_full_only(self) -> UsersTarget:
        # A client over its own rate limit is the limiter working: it must never count here.
        if self.rejected.matchers != (("reason", "=", "queue_full"),):
            raise ValueError(
                f'rejected must select reason="queue_full" exactly, not {self.rejected.promql()}'
            )
        return self


class TargetsDown(Threshold):
    pass


class GenerationBenchmark(Strict):
    """Goals the generation benchmark prints its verdicts against (no rule is made of them)."""

    bound_ratio_max: float = Field(ge=1)
    token_efficiency_min: float = Field(gt=0, le=1)


class CapacityBenchmark(Strict):
    """The capacity search's goal, printed beside its knee (no rule is made of it)."""

    rps_per_process_min: float = Field(gt=0)


class Targets(Strict):
    api_latency: APILatencyTarget
    error_rate: RatioTarget
    throttling: ThrottlingTarget
    memory: MemoryTarget
    throughput: ThroughputTarget
    book_time: BookTimeTarget
    book_wait: BookWait
    concurrent_users: UsersTarget
    llm_errors: RatioTarget
    target_down: TargetsDown
    generation_benchmark: GenerationBenchmark
    capacity_benchmark: CapacityBenchmark


class Backlog(Threshold):
    oldest_queued: Selector
    max_wait: Duration = Field(gt=0)


class SectionFailures(Threshold):
    """Alert when failed / finished section tasks over `window` exceed `max_ratio`."""

    failed: Selector
    finished: Selector
    max_ratio: float = Field(gt=0, lt=1)
    window: Duration
    min_tasks: int = Field(ge=1)

    @model_validator(mode="after")
    def _counters(self) -> SectionFailures:
        for sel in (self.failed, self.finished):
            if sel.family.type != "counter":
                raise ValueError(f"{sel.metric} is a {sel.family.type}; a ratio needs counters")
            unknown = set(section_outcomes(sel)) - set(SECTION_TASK_OUTCOMES)
            if unknown:
                raise ValueError(
                    f"{sel.promql()}: no outcome {sorted(unknown)}; "
                    f"the outcomes are {', '.join(SECTION_TASK_OUTCOMES)}"
                )
        # A failure the denominator does not count would push the ratio above 1.
        if not set(section_outcomes(self.failed)) <= set(section_outcomes(self.finished)):
            raise ValueError("every outcome of `failed` must also be one of `finished`")
        return self


def section_outcomes(sel: Selector) -> tuple[str, ...]:
    """The outcome values a selector matches with `=` or a plain `a|b` alternation."""
    for label, op, value in sel.matchers:
        if label == "outcome" and op in ("=", "=~"):
            return tuple(value.split("|"))
    raise ValueError(f'{sel.promql()} must select outcomes with outcome="…" or outcome=~"a|b"')


class Workers(Strict):
    """The worker tier: worker processes scraped as `scrape.worker_job`, one target each."""

    expected: Selector
    slots: Selector
    running: Selector
    sections: Selector
    queue: str
    missing: Threshold
    none: Threshold
    backlog: Backlog
    failures: SectionFailures
    dependencies: Threshold


class LoadTest(Strict):
    route_groups: tuple[str, ...]
    min_rps: float = Field(gt=0)


class Spec(Strict):
    service: str
    period: Duration
    scrape: Scrape
    selectors: Selectors = Selectors()
    links: Links
    windows: tuple[Duration, ...]
    burn_rates: tuple[BurnRate, ...]
    profiles: Profiles
    slos: dict[str, RatioSLO]
    targets: Targets
    workers: Workers
    load_test: LoadTest

    @field_validator("slos")
    @classmethod
    def _slo_names(cls, value: dict[str, RatioSLO]) -> dict[str, RatioSLO]:
        for key in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
                raise ValueError(f"SLO name {key!r} must be snake_case")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Spec:
        problems: list[str] = []
        s = self.scrape
        jobs = (s.api_job, s.llm_job, s.worker_job, s.broker_job, s.store_job, s.celery_job)
        if len(set(jobs)) != len(jobs):
            problems.append("scrape jobs must be distinct: rules tell the tiers apart by job")
        windows = set(self.windows)
        if len(windows) != len(self.windows) or list(self.windows) != sorted(self.windows):
            problems.append("windows must be ascending and distinct")
        for pair in self.burn_rates:
            for w in (pair.long, pair.short):
                if w not in windows:
                    problems.append(f"burn-rate window {names.format_duration(w)} not in windows")
        for key in ("api_latency", "error_rate", "llm_errors", "throttling"):
            if getattr(self.targets, key).window not in windows:
                problems.append(f"targets.{key}.window is not one of windows")
        if self.windows and max(self.windows) > self.period:
            problems.append("a window is longer than the SLO period")
        for key in ("api_latency", "error_rate", "llm_errors"):
            slo = getattr(self.targets, key).slo
            if slo not in self.slos:
                problems.append(f"targets.{key}.slo: no SLO named {slo!r}")
        if self.targets.api_latency.slo in self.slos and (
            self.slos[self.targets.api_latency.slo].latency is None
        ):
            problems.append("targets.api_latency.slo must name a latency SLO")
        for pname in names.PROFILES:
            floor = 4 * self.profile(pname).scrape_interval
            for w in self.windows:
                if self.scaled(w, pname) < floor:
                    problems.append(
                        f"window {names.format_duration(w)} shrinks below 4 scrape intervals "
                        f"in profile {pname}"
                    )
            if self.scaled(self.workers.failures.window, pname) < floor:
                problems.append(
                    f"workers.failures.window shrinks below 4 scrape intervals in profile {pname}"
                )
            if self.scaled(self.targets.book_time.max_seconds, pname) not in [
                float(b) for b in _histogram(self.targets.book_time.histogram).buckets
            ]:
                problems.append(f"book_time.max_seconds scaled for {pname} is not a bucket")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def scaled(self, seconds: float, profile: str) -> int:
        """A time horizon in whole seconds for a profile (never below 1 s unless it is 0)."""
        if seconds == 0:
            return 0
        return max(1, round(seconds / self.profile(profile).time_scale))

    def profile(self, name: str) -> Profile:
        if name not in names.PROFILES:
            raise ValueError(f"unknown profile {name!r}; use one of {list(names.PROFILES)}")
        profile: Profile = getattr(self.profiles, name)
        return profile

    def slo(self, name: str) -> RatioSLO:
        return self.slos[name]


def _format_errors(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {message}")
    return f"{source} is invalid:\n" + "\n".join(lines)


def parse_spec(data: object, source: str = "slo.yaml") -> Spec:
    try:
        return Spec.model_validate(data)
    except ValidationError as error:
        raise SpecError(_format_errors(error, source)) from None


def load_spec(path: Path = DEFAULT_PATH) -> Spec:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise SpecError(f"cannot read {path}: {error}") from None
    return parse_spec(data, str(path))
