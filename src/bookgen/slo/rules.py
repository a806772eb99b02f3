"""Prometheus recording and alerting rules, rendered from the spec for one profile.

Profiles: `default` is the production rule set. `fast` is the same rules with every time horizon
(rule windows, `for`, the book-time limits, the leak horizon and the throughput period) divided by
the profile's `time_scale`, for 1 s scrape/evaluation in `bookgen up --fast` and end-to-end tests.
Recording-rule names keep the default window names (`…rate5m` is computed over 5 s in the fast
profile) so dashboards and queries work unchanged on both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bookgen.slo import conventions as names
from bookgen.slo.selectors import Scope, deployment_on
from bookgen.slo.spec import RatioSLO, Spec, section_outcomes
from bookgen.slo.yamlio import dump_yaml


@dataclass(frozen=True)
class Alert:
    key: str
    name: str
    severity: str
    expr: str
    for_s: int
    summary: str
    description: str
    dashboard: str
    window_s: int = 0
    delay_s: int = 0  # time the condition itself needs after a fault starts (guards, ages)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """The spec seen through one profile: windows and horizons in that profile's seconds."""

    spec: Spec
    profile: str

    def s(self, seconds: float) -> int:
        return self.spec.scaled(seconds, self.profile)

    def w(self, seconds: float) -> str:
        """A scaled window in PromQL syntax."""
        return names.format_duration(self.s(seconds))

    def label(self, seconds: float) -> str:
        """A window as named in rule names (never scaled)."""
        return names.window_suffix(int(seconds))

    @property
    def scope(self) -> Scope:
        return Scope(self.spec)


def _num(value: float) -> str:
    return repr(float(value)).removesuffix(".0") if float(value).is_integer() else repr(value)


# --- recording rules ---------------------------------------------------------------------------


def _ratio(scope: Scope, bad: str, total: str, window: str) -> str:
    """bad / total per namespace and job; no sample where nothing happened."""
    by = scope.by()
    # Error series appear with the first error: a zero per group of the total stands in for them
    # (a bare `vector(0)` carries no namespace or job and would match no group).
    return (
        f"(sum {by} (rate({bad}[{window}])) or sum {by} (rate({total}[{window}])) * 0)\n/\n"
        f"(sum {by} (rate({total}[{window}])) > 0)"
    )


def _sli_error_expr(scope: Scope, slo: RatioSLO, window: str) -> str:
    # A window without events has no SLI sample rather than NaN: a NaN would poison the period
    # average (sum_over_time) for the whole period, and an empty SLI alerts no more than NaN does.
    by = scope.by()
    if slo.latency is not None:
        count = scope.series(slo.latency.count())
        good = scope.series(slo.latency.bucket(), f'le="{slo.latency.le}"')
        return (
            f"(sum {by} (rate({count}[{window}])) - sum {by} (rate({good}[{window}])))"
            f"\n/\n(sum {by} (rate({count}[{window}])) > 0)"
        )
    assert slo.errors is not None and slo.total is not None
    return _ratio(scope, scope.series(slo.errors), scope.series(slo.total), window)


def slo_labels(spec: Spec, slo: str, window: str) -> dict[str, str]:
    """Identity labels of an SLO series: service, SLO and window (as named, never scaled)."""
    return {names.SERVICE_LABEL: spec.service, names.SLO_LABEL: slo, names.WINDOW_LABEL: window}


def slo_selector(spec: Spec, slo: str) -> str:
    """An SLO's recorded series, in the deployment's namespace when one is selected."""
    own = (f'{names.SERVICE_LABEL}="{spec.service}"', f'{names.SLO_LABEL}="{slo}"')
    return Scope(spec).recorded("", *own)


def _period_sli_expr(spec: Spec, slo: str, period: str) -> str:
    """Sloth's period SLI: the mean of the base-window SLI samples over the period. It reads one
    recorded series instead of every raw series of the period, at the cost of weighting each
    base window alike whatever its traffic."""
    base = names.sli_error_rule(names.window_suffix(spec.windows[0])) + slo_selector(spec, slo)
    return f"sum_over_time({base}[{period}])\n/\ncount_over_time({base}[{period}])"


def _sli_rules(ctx: Context) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    spec = ctx.spec
    for name, slo in sorted(spec.slos.items()):
        for window in spec.windows:
            rules.append(
                {
                    "record": names.sli_error_rule(ctx.label(window)),
                    "expr": _sli_error_expr(ctx.scope, slo, ctx.w(window)),
                    "labels": slo_labels(spec, name, ctx.label(window)),
                }
            )
        # In the same group, after the base window: rules of a group run in order.
        rules.append(
            {
                "record": names.sli_error_rule(ctx.label(spec.period)),
                "expr": _period_sli_expr(spec, name, ctx.w(spec.period)),
                "labels": slo_labels(spec, name, ctx.label(spec.period)),
            }
        )
    return rules


def _metadata_rules(ctx: Context) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    spec = ctx.spec
    period = names.sli_error_rule(ctx.label(spec.period))
    # One error budget per SLO, whatever the namespace and job: many SLI series to one.
    on = f"on({names.SERVICE_LABEL}, {names.SLO_LABEL}) group_left()"
    for name, slo in sorted(spec.slos.items()):
        labels = slo_labels(spec, name, ctx.label(spec.period))
        sel = slo_selector(spec, name)
        rules += [
            {
                "record": names.OBJECTIVE_RULE,
                "expr": f"vector({_num(slo.objective)})",
                "labels": labels,
            },
            {
                "record": names.ERROR_BUDGET_RULE,
                "expr": f"vector({_num(slo.error_budget)})",
                "labels": labels,
            },
            {
                "record": names.BUDGET_REMAINING_RULE,
                "expr": f"1 - {period}{sel} / {on} {names.ERROR_BUDGET_RULE}{_own(spec, name)}",
                "labels": labels,
            },
        ]
    return rules


def _own(spec: Spec, slo: str) -> str:
    """An SLO's metadata series (constant, no namespace)."""
    return f'{{{names.SERVICE_LABEL}="{spec.service}",{names.SLO_LABEL}="{slo}"}}'


def _service_rules(ctx: Context) -> list[dict[str, Any]]:
    t = ctx.spec.targets
    latency = ctx.spec.slo(t.api_latency.slo).latency
    assert latency is not None
    lat_w, book_w = t.api_latency.window, t.book_time.window
    total = ctx.spec.slo(t.error_rate.slo).total
    assert total is not None
    thr = t.throttling
    sc, by = ctx.scope, ctx.scope.by()
    return [
        {
            "record": names.service_rule("http_requests", f"rate{ctx.label(lat_w)}"),
            "expr": f"sum {by} (rate({sc.series(total)}[{ctx.w(lat_w)}]))",
        },
        {
            "record": throttled_rule(ctx.spec),
            "expr": _ratio(sc, sc.series(thr.throttled), sc.series(total), ctx.w(thr.window)),
        },
        {
            "record": names.service_rule(
                "http_request_duration_seconds",
                f"p{round(t.api_latency.quantile * 100)}_{ctx.label(lat_w)}",
            ),
            "expr": f"histogram_quantile({_num(t.api_latency.quantile)}, sum {sc.by('le')} "
            f"(rate({sc.series(latency.bucket())}[{ctx.w(lat_w)}])))",
        },
        {
            "record": names.service_rule("jobs_queued", "max"),
            "expr": f"max {by} ({sc.series(t.throughput.demand)})",
        },
        {
            "record": names.service_rule("job_queue_capacity", "max"),
            "expr": f"max {by} ({sc.series(t.concurrent_users.capacity)})",
        },
        {
            # Per namespace only: books complete in the API processes or in the worker tier, and
            # an idle tier's zero must not read as a stalled service next to the busy one.
            "record": names.service_rule("jobs_completed", "increase1h"),
            "expr": f"sum by ({names.NAMESPACE_LABEL}) "
            f"(increase({sc.series(t.throughput.completed)}[{ctx.w(3600)}]))",
        },
        {
            "record": names.service_rule(
                "job_duration_seconds", f"p{round(t.book_time.quantile * 100)}_{ctx.label(book_w)}"
            ),
            "expr": f"histogram_quantile({_num(t.book_time.quantile)}, sum {sc.by('le')} "
            f"(rate({sc.series(t.book_time.bucket())}[{ctx.w(book_w)}])))",
        },
        {
            "record": names.service_rule("job_oldest_running_age_seconds", "max"),
            "expr": f"max {by} ({sc.series(t.book_time.oldest_running)})",
        },
        {
            "record": OLDEST_QUEUED_JOB,
            "expr": f"max {by} ({sc.series(t.book_wait.oldest_queued)})",
        },
        {
            "record": names.service_rule(
                "jobs_rejected_queue_full", f"increase{ctx.label(t.concurrent_users.window)}"
            ),
            "expr": f"sum {by} (increase({sc.series(t.concurrent_users.rejected)}"
            f"[{ctx.w(t.concurrent_users.window)}]))",
        },
    ]


def throttled_rule(spec: Spec) -> str:
    """The recorded share of requests answered 429."""
    window = names.window_suffix(spec.targets.throttling.window)
    return names.service_rule("http_requests_throttled", f"ratio_rate{window}")


OLDEST_QUEUED_JOB = names.service_rule("job_oldest_queued_age_seconds", "max")
WORKERS_UP = names.service_rule("workers_up", "count")
WORKERS_EXPECTED = names.service_rule("workers_expected", "max")
SECTIONS = names.service_rule("sections", "max")
WORKER_SLOTS = names.service_rule("worker_slots", "sum")
WORKER_LOAD = names.service_rule("worker_load", "ratio")
OLDEST_QUEUED = names.service_rule("section_oldest_queued_age_seconds", "max")


def _worker_rules(ctx: Context) -> list[dict[str, Any]]:
    w, job = ctx.spec.workers, ctx.spec.scrape.worker_job
    sc, by = ctx.scope, ctx.scope.by()
    ns = names.NAMESPACE_LABEL
    expected = sc.series(w.expected)
    worker_up = sc.target("up", f'job="{job}"')
    sections, slots = sc.recorded(SECTIONS), sc.recorded(WORKER_SLOTS)
    return [
        # Counted from `up`: a killed worker whose target vanishes (service discovery drops it,
        # or its series go stale) leaves the count lower instead of leaving no series to alert on.
        # The zero stands for no live worker in a namespace that expects some (under the
        # workers' job, so the two sides of `or` are one series).
        {
            "record": WORKERS_UP,
            "expr": f"count {by} ({worker_up} == 1)\nor\n"
            f'label_replace(max by ({ns}) ({expected}) * 0, "job", "{job}", "", "")',
        },
        # Whole-service figures come from every API process alike: max, never sum.
        {"record": WORKERS_EXPECTED, "expr": f"max {by} ({expected})"},
        {"record": SECTIONS, "expr": f"max {sc.by('state')} ({sc.series(w.sections)})"},
        {"record": OLDEST_QUEUED, "expr": f"max {by} ({sc.series(w.backlog.oldest_queued)})"},
        # Stale series of a dead worker drop out, so these are the slots of live workers only.
        {"record": WORKER_SLOTS, "expr": f"sum {by} ({sc.series(w.slots)})"},
        # Load, not backlog: running sections count too (the autoscaling figure, 1 = all busy).
        # The API counts the sections, the workers hold the slots: matched by namespace, under
        # the workers' job.
        {
            "record": WORKER_LOAD,
            "expr": f"sum by ({ns}) ({sections})\n/ {deployment_on()} group_right()\n{slots}",
        },
    ]


def recorded_names(spec: Spec) -> set[str]:
    """Every series name the recording rules define (the same in both profiles)."""
    ctx = Context(spec, "default")
    groups = _sli_rules(ctx) + _metadata_rules(ctx) + _service_rules(ctx) + _worker_rules(ctx)
    return {rule["record"] for rule in groups}


# --- alerts ------------------------------------------------------------------------------------


def burn_clause(spec: Spec, slo: str, long: str, short: str, limit: str) -> str:
    """Both windows of a pair above `limit`; the value is the long window's ratio."""
    sel = slo_selector(spec, slo)
    window = names.WINDOW_LABEL
    return (
        f"(\n  max without ({window}) ({names.sli_error_rule(long)}{sel} > {limit})\n"
        f"  and\n  max without ({window}) ({names.sli_error_rule(short)}{sel} > {limit})\n)"
    )


def _burn_rate_alerts(ctx: Context) -> list[Alert]:
    spec = ctx.spec
    alerts = []
    for name, slo in sorted(spec.slos.items()):
        budget = slo.error_budget
        for severity in ("critical", "warning"):
            pairs = [p for p in spec.burn_rates if p.severity == severity]
            if not pairs:
                continue
            clauses = [
                burn_clause(
                    spec,
                    name,
                    ctx.label(p.long),
                    ctx.label(p.short),
                    f"({_num(p.factor)} * {_num(budget)})",
                )
                for p in pairs
            ]
            how = " or ".join(
                f"{_num(p.factor)}x over {ctx.w(p.long)} and {ctx.w(p.short)}" for p in pairs
            )
            action = "page" if severity == "critical" else "ticket"
            alerts.append(
                Alert(
                    key=f"burn_{name}_{severity}",
                    name=names.budget_burn_alert(name),
                    severity=severity,
                    expr="\nor\n".join(clauses),
                    # The short window resets the alert soon after a burn stops; `for` would
                    # only delay the page.
                    for_s=0,
                    summary=f"{slo.title}: error budget burning fast enough to {action}.",
                    description=(
                        f"{slo.title}: {{{{ $value | humanizePercentage }}}} of {slo.description} "
                        f"over the long window; the {_pct(budget)} error budget of the "
                        f"{_pct(slo.objective)} objective burns at {how}."
                    ),
                    dashboard="bookgen-slo",
                    window_s=ctx.s(min(p.short for p in pairs)),
                )
            )
    return alerts


def _floor(scope: Scope, selector: str, window: str, events: int) -> str:
    """Enough events in the window, per namespace and job (joined with `and on(...)`)."""
    return f"sum {scope.by()} (increase({selector}[{window}])) >= {events}"


def _pct(ratio: float) -> str:
    return f"{_num(round(ratio * 100, 6))}%"


def _threshold_alerts(ctx: Context) -> list[Alert]:
    spec, t = ctx.spec, ctx.spec.targets
    lat = spec.slo(t.api_latency.slo).latency
    assert lat is not None
    q = round(t.api_latency.quantile * 100)
    err = spec.slo(t.error_rate.slo)
    llm = spec.slo(t.llm_errors.slo)
    assert err.total is not None and llm.total is not None
    mem = t.memory
    worker = spec.scrape.worker_label
    book_max = ctx.s(t.book_time.max_seconds)
    bq = round(t.book_time.quantile * 100)
    users = t.concurrent_users
    wait = ctx.s(t.book_wait.max_wait)
    sli = names.sli_error_rule
    jobs = f'job=~"{spec.scrape.api_job}|{spec.scrape.llm_job}"'
    api_job = f'job="{spec.scrape.api_job}"'
    sc = ctx.scope
    on = f"and {sc.on()}"
    who = f"{{{{ $labels.{worker} }}}} ({{{{ $labels.instance }}}})"
    p95_rule = names.service_rule(
        "http_request_duration_seconds", f"p{q}_{ctx.label(t.api_latency.window)}"
    )
    book_rule = names.service_rule("job_duration_seconds", f"p{bq}_{ctx.label(t.book_time.window)}")
    completed = sc.recorded(names.service_rule("jobs_completed", "increase1h"))
    queued = sc.recorded(names.service_rule("jobs_queued", "max"))
    rejected = sc.recorded(
        names.service_rule("jobs_rejected_queue_full", f"increase{ctx.label(users.window)}")
    )
    no_window = f"max without ({names.WINDOW_LABEL})"
    return [
        Alert(
            key="api_latency",
            name=names.alert_name("APILatencyHigh"),
            severity=t.api_latency.severity,
            expr=f"{sc.recorded(p95_rule)} > {lat.le}\n{on}\n"
            + _floor(
                sc, sc.series(lat.count()), ctx.w(t.api_latency.window), t.api_latency.min_events
            ),
            for_s=ctx.s(t.api_latency.for_),
            summary=f"API p{q} latency is above the {_ms(lat.bound)} target.",
            description=f"API p{q} latency over {ctx.w(t.api_latency.window)} is "
            "{{ $value | humanizeDuration }}; "
            f"the target is under {_ms(lat.bound)} "
            f"(checked from {t.api_latency.min_events} requests on).",
            dashboard="bookgen-service",
            window_s=ctx.s(t.api_latency.window),
        ),
        Alert(
            key="error_rate",
            name=names.alert_name("APIErrorRateHigh"),
            severity=t.error_rate.severity,
            expr=f"{no_window} ("
            f"{sli(ctx.label(t.error_rate.window))}{slo_selector(spec, t.error_rate.slo)}"
            f" > {_num(err.error_budget)})\n{on}\n"
            + _floor(sc, sc.series(err.total), ctx.w(t.error_rate.window), t.error_rate.min_events),
            for_s=ctx.s(t.error_rate.for_),
            summary=f"API error ratio is above {_pct(err.error_budget)}.",
            description=f"API error ratio over {ctx.w(t.error_rate.window)} is "
            f"{{{{ $value | humanizePercentage }}}} ({err.description}); "
            f"the target is under {_pct(err.error_budget)} "
            f"(checked from {t.error_rate.min_events} requests on).",
            dashboard="bookgen-service",
            window_s=ctx.s(t.error_rate.window),
        ),
        Alert(
            key="llm_errors",
            name=names.alert_name("LLMErrorsHigh"),
            severity=t.llm_errors.severity,
            expr=f"{no_window} ("
            f"{sli(ctx.label(t.llm_errors.window))}{slo_selector(spec, t.llm_errors.slo)}"
            f" > {_num(llm.error_budget)})\n{on}\n"
            + _floor(sc, sc.series(llm.total), ctx.w(t.llm_errors.window), t.llm_errors.min_events),
            for_s=ctx.s(t.llm_errors.for_),
            summary=f"LLM provider error ratio is above {_pct(llm.error_budget)}.",
            description="{{ $value | humanizePercentage }} of LLM call attempts failed over "
            f"{ctx.w(t.llm_errors.window)}; the objective allows {_pct(llm.error_budget)} "
            f"(checked from {t.llm_errors.min_events} calls on).",
            dashboard="bookgen-jobs-llm",
            window_s=ctx.s(t.llm_errors.window),
        ),
        Alert(
            key="memory",
            name=names.alert_name("WorkerMemoryHigh"),
            severity=mem.severity,
            expr=f"{sc.series(mem.metric)} > {mem.max_bytes}",
            for_s=ctx.s(mem.for_),
            summary=f"A worker's resident memory is above {_bytes(mem.max_bytes)}.",
            description=f"Worker {{{{ $labels.{worker} }}}} ({{{{ $labels.instance }}}}) uses "
            "{{ $value | humanize1024 }}B of resident memory; "
            f"the limit is {_bytes(mem.max_bytes)} per worker.",
            dashboard="bookgen-service",
        ),
        Alert(
            key="memory_leak",
            name=names.alert_name("WorkerMemoryLeak"),
            severity=mem.leak.severity,
            expr=f"predict_linear({sc.series(mem.metric)}[{ctx.w(mem.leak.window)}], "
            f"{ctx.s(mem.leak.horizon)}) > {mem.max_bytes}",
            for_s=ctx.s(mem.leak.for_),
            summary=f"A worker's memory grows towards {_bytes(mem.max_bytes)}.",
            description=f"Worker {{{{ $labels.{worker} }}}} ({{{{ $labels.instance }}}}) "
            f"is on course for {{{{ $value | humanize1024 }}}}B within "
            f"{ctx.w(mem.leak.horizon)} (trend over {ctx.w(mem.leak.window)}); "
            f"the limit is {_bytes(mem.max_bytes)}.",
            dashboard="bookgen-service",
            window_s=ctx.s(mem.leak.window),
        ),
        Alert(
            key="throughput",
            name=names.alert_name("ThroughputLow"),
            severity=t.throughput.severity,
            expr=f"{completed} < {_num(t.throughput.min_per_hour)}\n"
            # The API counts the queue; books may complete in the worker tier: per namespace.
            f"and {deployment_on()}\nmin_over_time({queued}[{ctx.w(3600)}]) > 0",
            for_s=ctx.s(t.throughput.for_),
            summary="Fewer books complete than the target while jobs are waiting.",
            description='{{ printf "%.0f" $value }} books completed in the last '
            f"{ctx.w(3600)} while jobs waited all that time; the target is at least "
            f"{_num(t.throughput.min_per_hour)} per {ctx.w(3600)}.",
            dashboard="bookgen-jobs-llm",
            window_s=ctx.s(3600),
            delay_s=ctx.s(3600),
        ),
        Alert(
            key="book_time",
            name=names.alert_name("BookDurationHigh"),
            severity=t.book_time.severity,
            expr=f"{sc.recorded(book_rule)} > {book_max}\n{on}\n"
            + _floor(
                sc,
                sc.series(t.book_time.count()),
                ctx.w(t.book_time.window),
                t.book_time.min_events,
            ),
            for_s=ctx.s(t.book_time.for_),
            summary=f"Books take longer than {names.format_duration(book_max)} (p{bq}).",
            description=f"p{bq} time from submission to a completed book over "
            f"{ctx.w(t.book_time.window)} is {{{{ $value | humanizeDuration }}}}; the target is "
            f"under {names.format_duration(book_max)} "
            f"(checked from {t.book_time.min_events} books on).",
            dashboard="bookgen-jobs-llm",
            window_s=ctx.s(t.book_time.window),
            # A completed book shows a duration over the limit only once it has taken that long.
            delay_s=book_max,
        ),
        Alert(
            key="job_stuck",
            name=names.alert_name("JobRunningTooLong"),
            severity=t.book_time.severity,
            expr=f"{sc.series(t.book_time.oldest_running)} > {book_max}",
            for_s=ctx.s(t.book_time.oldest_for),
            summary=f"A job has been running for more than {names.format_duration(book_max)}.",
            description=f"Worker {who} runs a job "
            "submitted {{ $value | humanizeDuration }} ago; "
            f"a book should take under {names.format_duration(book_max)}.",
            dashboard="bookgen-jobs-llm",
            delay_s=book_max,
        ),
        Alert(
            key="book_wait",
            name=names.alert_name("BookWaitingTooLong"),
            severity=t.book_wait.severity,
            # The raw gauge: its recording rule is in another group, possibly one evaluation behind.
            expr=f"max {sc.by()} ({sc.series(t.book_wait.oldest_queued)}) > {wait}",
            for_s=ctx.s(t.book_wait.for_),
            summary=f"A book has waited more than {names.format_duration(wait)} to start.",
            description="The oldest book not yet started was submitted "
            "{{ $value | humanizeDuration }} ago; "
            f"the limit is {names.format_duration(wait)} and a whole book should take under "
            f"{names.format_duration(book_max)}.",
            dashboard="bookgen-jobs-llm",
            delay_s=wait,
        ),
        Alert(
            key="queue_full",
            name=names.alert_name("QueueFull"),
            severity=users.severity,
            # Counted by the service where it refuses: no race between a counter and a gauge.
            expr=f"{rejected} > 0",
            for_s=ctx.s(users.for_),
            summary="Submissions are refused because the job queue is full.",
            description='{{ printf "%.0f" $value }} submissions were refused in '
            f"{ctx.w(users.window)} because the queue was at its capacity; at least "
            f"{users.min_users} concurrent users must be served.",
            dashboard="bookgen-jobs-llm",
            window_s=ctx.s(users.window),
        ),
        Alert(
            key="target_down",
            name=names.alert_name("TargetDown"),
            severity=t.target_down.severity,
            expr=f"{sc.target('up', jobs)} == 0",
            for_s=ctx.s(t.target_down.for_),
            summary="A BookGen scrape target is down.",
            description="Prometheus cannot scrape {{ $labels.job }} target {{ $labels.instance }}"
            f"{{{{ with $labels.{worker} }}}} (worker {{{{ . }}}}){{{{ end }}}}; "
            "up = {{ $value }}.",
            dashboard="bookgen-overview",
        ),
        Alert(
            key="target_absent",
            name=names.alert_name("TargetAbsent"),
            severity=t.target_down.severity,
            expr=f"absent({sc.target('up', api_job)})",
            for_s=ctx.s(t.target_down.for_),
            summary="Prometheus has no BookGen API target at all.",
            description=f'No up{{job="{spec.scrape.api_job}"}} series exists '
            "(value {{ $value }}): the API is not being scraped.",
            dashboard="bookgen-overview",
        ),
        Alert(
            key="watchdog",
            name=names.WATCHDOG,
            severity="info",
            expr="vector(1)",
            for_s=0,
            summary="Always firing: proves rules, Alertmanager and receivers work end to end.",
            description="This alert fires all the time (value {{ $value }}); "
            "if it stops arriving, the alerting pipeline is broken.",
            dashboard="bookgen-alerts",
        ),
    ]


def _worker_alerts(ctx: Context) -> list[Alert]:
    spec, w = ctx.spec, ctx.spec.workers
    sc = spec.scrape
    f = w.failures
    max_wait = ctx.s(w.backlog.max_wait)
    scope = ctx.scope
    by = scope.by()
    failed = f"sum {by} (increase({scope.series(f.failed)}[{ctx.w(f.window)}]))"
    finished = f"sum {by} (increase({scope.series(f.finished)}[{ctx.w(f.window)}]))"
    expected, live = scope.recorded(WORKERS_EXPECTED), scope.recorded(WORKERS_UP)
    # The API reports how many workers it expects, `up` of the workers' job says how many live:
    # matched by namespace, the alert under the workers' job.
    across = f"{deployment_on()} group_right()"
    outcomes = " or ".join(section_outcomes(f.failed))
    target = "{{ $labels.job }} target {{ $labels.instance }}"

    def down(exporter_up: str, job: str) -> str:
        # Either the exporter answers and reports its server down, or the exporter target itself
        # cannot be scraped. For a broker that serves its own metrics (RabbitMQ's prometheus
        # plugin) there is no exporter series and the target's `up` is the broker's.
        own = f'job="{job}"'
        return f"{scope.target(exporter_up, own)} == 0\nor\n{scope.target('up', own)} == 0"

    return [
        Alert(
            key="workers_missing",
            name=names.alert_name("WorkersMissing"),
            severity=w.missing.severity,
            expr=f"{expected} - {across} {live} > 0",
            for_s=ctx.s(w.missing.for_),
            summary="Fewer worker processes are up than expected.",
            description="{{ $value }} of the expected worker processes are not up "
            f'(live ones counted from up{{job="{sc.worker_job}"}}); '
            "sections are written with less capacity.",
            dashboard="bookgen-workers",
        ),
        Alert(
            key="workers_none",
            name=names.alert_name("WorkersMissing"),
            severity=w.none.severity,
            # expected + 0 live: the expected count as the value, the workers' job as the label.
            expr=f"{expected} + {across} ({live} == 0) > 0",
            for_s=ctx.s(w.none.for_),
            summary="No worker process is up: no section is being written.",
            description=f"No {sc.worker_job} target is up while {{{{ $value }}}} worker processes "
            "are expected; queued sections wait and every book in progress stalls.",
            dashboard="bookgen-workers",
        ),
        Alert(
            key="section_backlog",
            name=names.alert_name("SectionWaitingTooLong"),
            severity=w.backlog.severity,
            # The raw gauge: its recording rule is in another group, possibly one evaluation behind.
            expr=f"max {by} ({scope.series(w.backlog.oldest_queued)}) > {max_wait}",
            for_s=ctx.s(w.backlog.for_),
            summary=f"A section has waited more than {names.format_duration(max_wait)} "
            "for a worker.",
            description="The oldest queued section has waited {{ $value | humanizeDuration }} "
            f"for a worker; the limit is {names.format_duration(max_wait)}.",
            dashboard="bookgen-workers",
            delay_s=max_wait,
        ),
        Alert(
            key="section_failures",
            name=names.alert_name("SectionFailuresHigh"),
            severity=f.severity,
            expr=f"({failed} or {finished} * 0)\n/\n{finished}\n> {_num(f.max_ratio)}\n"
            f"and {scope.on()}\n{finished} >= {f.min_tasks}",
            for_s=ctx.s(f.for_),
            summary=f"More than {_pct(f.max_ratio)} of section tasks fail.",
            description="{{ $value | humanizePercentage }} of the section tasks that ended over "
            f"{ctx.w(f.window)} {outcomes}; the limit is {_pct(f.max_ratio)} "
            f"(checked from {f.min_tasks} tasks on).",
            dashboard="bookgen-workers",
            window_s=ctx.s(f.window),
        ),
        Alert(
            key="broker_down",
            name=names.alert_name("BrokerDown"),
            severity=w.dependencies.severity,
            expr=down(names.BROKER_UP, sc.broker_job),
            for_s=ctx.s(w.dependencies.for_),
            summary="The task broker is down: no section task reaches a worker.",
            description=f"The broker of {target} is down or cannot be scraped "
            "(value {{ $value }}); section tasks are neither sent nor delivered.",
            dashboard="bookgen-workers",
        ),
        Alert(
            key="store_down",
            name=names.alert_name("StoreDown"),
            severity=w.dependencies.severity,
            expr=down(names.STORE_UP, sc.store_job),
            for_s=ctx.s(w.dependencies.for_),
            summary="The job store (database) is down: no job or section can progress.",
            description=f"The database of {target} is down or cannot be scraped "
            "(value {{ $value }}); the API and the workers cannot read or write jobs.",
            dashboard="bookgen-workers",
        ),
    ]


def _ms(seconds: float) -> str:
    return f"{_num(round(seconds * 1000, 6))} ms"


def _bytes(count: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count % size == 0:
            return f"{count // size} {unit}"
    return f"{count} B"


def alerts(spec: Spec, profile: str = "default") -> list[Alert]:
    ctx = Context(spec, profile)
    return _burn_rate_alerts(ctx) + _threshold_alerts(ctx) + _worker_alerts(ctx)


def runbook_url(spec: Spec, alertname: str) -> str:
    return f"{spec.links.runbook}#{names.anchor(alertname)}"


def dashboard_url(spec: Spec, uid: str) -> str:
    return f"{spec.links.grafana}/d/{uid}"


def _alert_rule(spec: Spec, alert: Alert) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": alert.name, "expr": alert.expr}
    if alert.for_s:
        rule["for"] = names.format_duration(alert.for_s)
    # `service` on every alert, so a shared Alertmanager can route and inhibit by service.
    rule["labels"] = {**alert.labels, **alert_static_labels(spec, alert)}
    rule["annotations"] = alert_annotations(spec, alert)
    return rule


def alert_static_labels(spec: Spec, alert: Alert) -> dict[str, str]:
    return {names.SERVICE_LABEL: spec.service, "severity": alert.severity}


def alert_annotations(spec: Spec, alert: Alert) -> dict[str, str]:
    """The one transform that adds links: runbook anchor and dashboard."""
    return {
        "summary": alert.summary,
        "description": alert.description,
        "runbook_url": runbook_url(spec, alert.name),
        "dashboard_url": dashboard_url(spec, alert.dashboard),
    }


def render(spec: Spec, profile: str = "default") -> dict[str, Any]:
    """The rules file for a profile (`default` or `fast`) as a dict."""
    spec.profile(profile)
    ctx = Context(spec, profile)
    interval = names.format_duration(spec.profile(profile).evaluation_interval)
    return {
        "groups": [
            {"name": "bookgen-slo-sli", "interval": interval, "rules": _sli_rules(ctx)},
            {"name": "bookgen-slo-meta", "interval": interval, "rules": _metadata_rules(ctx)},
            {"name": "bookgen-service", "interval": interval, "rules": _service_rules(ctx)},
            {"name": "bookgen-workers", "interval": interval, "rules": _worker_rules(ctx)},
            {
                "name": "bookgen-alerts",
                "interval": interval,
                "rules": [_alert_rule(spec, a) for a in alerts(spec, profile)],
            },
        ]
    }


def render_text(spec: Spec, profile: str = "default") -> str:
    """The rules file for a profile as YAML text, header included."""
    return dump_yaml(render(spec, profile))


def fast_profile_table(spec: Spec) -> dict[str, Any]:
    """Per-alert `for` and detection bound in the fast profile, for the end-to-end tests."""
    p = spec.profile("fast")
    pipeline = p.scrape_interval + p.evaluation_interval + p.group_wait
    rows = [
        {
            "alert": a.name,
            "severity": a.severity,
            "for_s": a.for_s,
            "window_s": a.window_s,
            "bound_s": 2 * (a.for_s + pipeline),
            "condition_delay_s": a.delay_s,
            "bound_with_condition_s": 2 * (a.for_s + pipeline) + a.delay_s,
        }
        for a in alerts(spec, "fast")
    ]
    return {
        "_comment": names.HEADER,
        "profile": "fast",
        "time_scale": p.time_scale,
        "scrape_interval_s": p.scrape_interval,
        "evaluation_interval_s": p.evaluation_interval,
        "group_wait_s": p.group_wait,
        "group_interval_s": p.group_interval,
        "bound_formula": "2 * (for_s + scrape_interval_s + evaluation_interval_s + group_wait_s)",
        "bound_with_condition_formula": "bound_s + condition_delay_s (throughput needs jobs "
        "waiting for its whole window; a stuck job must first get older than the book-time limit)",
        "scaling": "every time horizon of the default profile (rule windows, `for`, book-time "
        "limits, leak horizon, throughput period) divided by time_scale; ratios, request latency "
        "and bytes unchanged; recording-rule names keep the default window names",
        "alerts": sorted(rows, key=lambda r: (r["alert"], r["severity"])),
    }
