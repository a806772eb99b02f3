"""Grafana dashboards (grafana-foundation-sdk, Grafana 11) with thresholds from the spec."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

from bookgen.slo import conventions as names
from bookgen.slo import rules
from bookgen.slo.selectors import Scope
from bookgen.slo.spec import Spec

DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
WORKER = 'worker=~"$worker"'
VARIABLES = {
    "$__rate_interval": "1m",
    "$worker": ".*",
    "$namespace": ".*",
    "$job": ".*",
    "${datasource}": names.DATASOURCE_UID,
}
FILES = {
    "bookgen-overview": "BookGen / Overview",
    "bookgen-service": "BookGen / Service (RED)",
    "bookgen-jobs-llm": "BookGen / Jobs & LLM",
    "bookgen-slo": "BookGen / Error budgets & burn rates",
    "bookgen-alerts": "BookGen / Firing alerts",
    "bookgen-workers": "BookGen / Workers",
}


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    exemplar: bool = False  # trace links on the points of a latency histogram


@dataclass(frozen=True)
class Limit:
    """A target drawn on a panel: `value` is the bad side when `above`, else the good side."""

    value: float
    above: bool = True


def _q(queries: Sequence[Query]) -> list[prometheus.Dataquery]:
    return [
        prometheus.Dataquery()
        .expr(q.expr)
        .legend_format(q.legend or "__auto")
        .ref_id(chr(ord("A") + i))
        .datasource(DS)
        .exemplar(q.exemplar)
        for i, q in enumerate(queries)
    ]


def _thresholds(limit: Limit | None) -> dashboard.ThresholdsConfig:
    if limit is None:
        steps = [dm.Threshold(color="green", value=None)]
    elif limit.above:
        steps = [
            dm.Threshold(color="green", value=None),
            dm.Threshold(color="red", value=limit.value),
        ]
    else:
        steps = [
            dm.Threshold(color="red", value=None),
            dm.Threshold(color="green", value=limit.value),
        ]
    return dashboard.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(steps)


class Layout:
    """Places panels left to right in rows of 24 grid units."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0

    def next(self, w: int, h: int) -> dm.GridPos:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = dm.GridPos(h=h, w=w, x=self.x, y=self.y)
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos


def _stat(
    layout: Layout, title: str, query: Query, unit: str, limit: Limit | None, description: str
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .thresholds(_thresholds(limit))
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
        .grid_pos(layout.next(4, 4))
    )
    for target in _q([query]):
        panel = panel.with_target(target)
    return panel


def _series(
    layout: Layout,
    title: str,
    queries: Sequence[Query],
    unit: str,
    limit: Limit | None = None,
    width: int = 12,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .datasource(DS)
        .unit(unit)
        .thresholds(_thresholds(limit))
        .grid_pos(layout.next(width, 8))
    )
    if limit is not None:
        style = common.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED)
        panel = panel.thresholds_style(style)
    for target in _q(queries):
        panel = panel.with_target(target)
    return panel


def _variable(name: str, label: str, query: str) -> dashboard.QueryVariable:
    # "All" is `.*`, which also matches a label that is absent: `bookgen up` on one machine has
    # no namespace label, and the panels still show its series.
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DS)
        .query(query)
        .include_all(True)
        .multi(True)
        .all_value(".*")
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
    )


def _base(spec: Spec, uid: str, job: str | None = None) -> dashboard.Dashboard:
    """A dashboard with `namespace` and `job` variables (kubernetes-mixin's), and a `worker`
    variable listing the processes of `job` (the API by default)."""
    label = spec.scrape.worker_label
    cluster = [spec.selectors.cluster] if spec.selectors.cluster else []
    service_jobs = f'job=~"{"|".join(_jobs(spec))}"'
    in_namespace = [*cluster, 'namespace=~"$namespace"']
    namespace = _variable(
        "namespace", "Namespace", f"label_values({_up([service_jobs, *cluster])}, namespace)"
    )
    job_variable = _variable(
        "job", "Job", f"label_values({_up([service_jobs, *in_namespace])}, job)"
    )
    own = f'job="{job or spec.scrape.api_job}"'
    worker = _variable("worker", "Worker", f"label_values({_up([own, *in_namespace])}, {label})")
    return (
        dashboard.Dashboard(FILES[uid])
        .uid(names.dashboard_uid(uid))
        .tags(["bookgen", "generated"])
        .description(names.HEADER)
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("utc")
        .with_variable(dashboard.DatasourceVariable("datasource").type("prometheus"))
        .with_variable(namespace)
        .with_variable(job_variable)
        .with_variable(worker)
    )


def _up(matchers: list[str]) -> str:
    return f"up{{{','.join(matchers)}}}"


def _overview(spec: Spec) -> dashboard.Dashboard:
    t = spec.targets
    lat = spec.slo(t.api_latency.slo).latency
    assert lat is not None
    err = spec.slo(t.error_rate.slo)
    llm = spec.slo(t.llm_errors.slo)
    q = round(t.api_latency.quantile * 100)
    bq = round(t.book_time.quantile * 100)
    sc = Scope(spec, dashboard=True)
    rec = sc.recorded
    sli = names.sli_error_rule("5m")
    p95 = Query(rec(names.service_rule("http_request_duration_seconds", f"p{q}_5m")), f"p{q}")
    errors = Query(rec(sli, f'slo="{t.error_rate.slo}"'), "error ratio")
    rss = Query(f"max {sc.by()} ({sc.series(t.memory.metric)})", "max RSS")
    done = Query(_jobless(sc, names.service_rule("jobs_completed", "increase1h")), "books / 1h")
    book = Query(rec(names.service_rule("job_duration_seconds", f"p{bq}_1h")), f"p{bq}")
    oldest = Query(
        rec(names.service_rule("job_oldest_running_age_seconds", "max")), "oldest running"
    )
    rejected = Query(
        rec(names.service_rule("jobs_rejected_queue_full", "increase5m")),
        "refused, queue full / 5m",
    )
    llm_err = Query(rec(sli, f'slo="{t.llm_errors.slo}"'), "LLM errors")
    layout = Layout()
    d = _base(spec, "bookgen-overview")
    stats = [
        ("API p95 latency", p95, "s", Limit(lat.bound), f"target: p{q} under {lat.le} s"),
        ("API error ratio", errors, "percentunit", Limit(err.error_budget), err.description),
        ("Max worker RSS", rss, "bytes", Limit(t.memory.max_bytes), "per worker process"),
        (
            "Books per hour",
            done,
            "short",
            Limit(t.throughput.min_per_hour, above=False),
            "completed in the last hour",
        ),
        (f"Book time p{bq}", book, "s", Limit(t.book_time.max_seconds), "submission to done"),
        (
            "Oldest running job",
            oldest,
            "s",
            Limit(t.book_time.max_seconds),
            "age of the oldest job",
        ),
        (
            "Refused submissions",
            rejected,
            "short",
            Limit(1),
            f"queue full; {t.concurrent_users.min_users} users must be served",
        ),
        ("LLM error ratio", llm_err, "percentunit", Limit(llm.error_budget), llm.description),
    ]
    for title, query, unit, limit, desc in stats:
        d = d.with_panel(_stat(layout, title, query, unit, limit, desc))
    d = d.with_panel(_series(layout, "API p95 latency vs target", [p95], "s", Limit(lat.bound)))
    d = d.with_panel(
        _series(
            layout, "API error ratio vs target", [errors], "percentunit", Limit(err.error_budget)
        )
    )
    d = d.with_panel(
        _series(
            layout,
            "RSS per worker vs limit",
            [Query(sc.series(t.memory.metric, WORKER), "worker {{worker}}")],
            "bytes",
            Limit(t.memory.max_bytes),
        )
    )
    d = d.with_panel(
        _series(
            layout,
            "Books completed per hour vs target",
            [done],
            "short",
            Limit(t.throughput.min_per_hour, above=False),
        )
    )
    d = d.with_panel(
        _series(layout, "Book time vs target", [book, oldest], "s", Limit(t.book_time.max_seconds))
    )
    d = d.with_panel(
        _series(
            layout,
            "Scrape targets up",
            [Query(sc.target("up", f'job=~"{"|".join(_jobs(spec))}"'), "{{job}} {{worker}}")],
            "short",
        )
    )
    return d


def _jobless(scope: Scope, record: str) -> str:
    """A record summed over the tiers (no job label): the job variable does not apply."""
    return scope.recorded(record).replace(',job=~"$job"', "")


def _jobs(spec: Spec) -> list[str]:
    sc = spec.scrape
    return [sc.api_job, sc.llm_job, sc.worker_job, sc.broker_job, sc.store_job, sc.celery_job]


def _service(spec: Spec) -> dashboard.Dashboard:
    lat = spec.slo(spec.targets.api_latency.slo).latency
    assert lat is not None
    h = lat.histogram
    mem = spec.targets.memory
    sc = Scope(spec, dashboard=True)
    by = sc.by

    def rate(metric: str) -> str:
        return f"rate({sc.metric(metric, WORKER)}[{RATE}])"

    layout = Layout()
    d = _base(spec, "bookgen-service")
    panels = [
        (
            "Requests per second by route",
            [Query(f"sum {by('route')} ({rate('bookgen_http_requests_total')})", "{{route}}")],
            "reqps",
            None,
        ),
        (
            "Requests per second by status",
            [
                Query(f"sum {by('status')} ({rate('bookgen_http_requests_total')})", "{{status}}"),
                Query(sc.recorded(names.service_rule("http_requests", "rate5m")), "all (5m)"),
            ],
            "reqps",
            None,
        ),
        (
            "5xx ratio vs budget (5m)",
            [
                Query(
                    sc.recorded(names.sli_error_rule("5m"), f'slo="{spec.targets.error_rate.slo}"'),
                    "5xx",
                )
            ],
            "percentunit",
            Limit(spec.slo(spec.targets.error_rate.slo).error_budget),
        ),
        (
            "Throttled (429) ratio: rate limits and a full queue, never an error",
            [Query(sc.recorded(rules.throttled_rule(spec)), "429")],
            "percentunit",
            None,
        ),
        (
            "Duration p50 / p95 / p99",
            [
                Query(
                    f"histogram_quantile({qq}, sum {by('le')} ({rate(f'{h}_bucket')}))",
                    f"p{p}",
                    exemplar=True,
                )
                for qq, p in (("0.5", 50), ("0.95", 95), ("0.99", 99))
            ],
            "s",
            Limit(lat.bound),
        ),
        (
            "Duration p95 by route",
            [
                Query(
                    f"histogram_quantile(0.95, sum {by('le', 'route')} ({rate(f'{h}_bucket')}))",
                    "{{route}}",
                    exemplar=True,
                )
            ],
            "s",
            Limit(lat.bound),
        ),
        (
            "Requests in flight",
            [
                Query(
                    f"sum {by()} ({sc.metric('bookgen_http_requests_in_flight', WORKER)})",
                    "in flight",
                )
            ],
            "short",
            None,
        ),
        (
            "RSS per worker",
            [Query(sc.series(mem.metric, WORKER), "worker {{worker}}")],
            "bytes",
            Limit(mem.max_bytes),
        ),
        (
            "CPU per worker",
            [Query(rate("bookgen_process_cpu_seconds_total"), "worker {{worker}}")],
            "percentunit",
            None,
        ),
        (
            "Open file descriptors",
            [Query(sc.metric("bookgen_process_open_fds", WORKER), "worker {{worker}}")],
            "short",
            None,
        ),
        (
            "Threads",
            [Query(sc.metric("bookgen_process_threads", WORKER), "worker {{worker}}")],
            "short",
            None,
        ),
        (
            "Event loop lag p99",
            [
                Query(
                    f"histogram_quantile(0.99, sum {by('le', 'worker')} "
                    f"({rate('bookgen_event_loop_lag_seconds_bucket')}))",
                    "worker {{worker}}",
                )
            ],
            "s",
            None,
        ),
        (
            "Build info",
            [Query(sc.metric("bookgen_build_info", WORKER), "{{version}} py{{python_version}}")],
            "short",
            None,
        ),
    ]
    for title, queries, unit, limit in panels:
        d = d.with_panel(_series(layout, title, queries, unit, limit))
    return d


def _jobs_llm(spec: Spec) -> dashboard.Dashboard:
    t = spec.targets
    layout = Layout()
    d = _base(spec, "bookgen-jobs-llm")
    genai = "gen_ai_client_operation_duration_seconds"
    sc = Scope(spec, dashboard=True)
    by, rec = sc.by, sc.recorded

    def rate(metric: str) -> str:
        return f"rate({sc.metric(metric)}[{RATE}])"

    panels = [
        (
            "Jobs submitted and finished per minute",
            [
                Query(f"sum {by()} ({rate('bookgen_jobs_submitted_total')}) * 60", "submitted"),
                Query(
                    f"sum {by('outcome')} ({rate('bookgen_jobs_finished_total')}) * 60",
                    "{{outcome}}",
                ),
            ],
            "short",
            None,
        ),
        (
            "Books completed per hour",
            [
                Query(
                    _jobless(sc, names.service_rule("jobs_completed", "increase1h")),
                    "completed / 1h",
                )
            ],
            "short",
            Limit(t.throughput.min_per_hour, above=False),
        ),
        (
            "Queue vs capacity",
            [
                Query(rec(names.service_rule("jobs_queued", "max")), "queued"),
                Query(rec(names.service_rule("job_queue_capacity", "max")), "capacity"),
                Query(f"max {by()} ({sc.metric('bookgen_jobs_running')})", "running"),
            ],
            "short",
            None,
        ),
        (
            "Oldest book waiting to start vs limit",
            [Query(rec(rules.OLDEST_QUEUED_JOB), "oldest waiting")],
            "s",
            Limit(t.book_wait.max_wait),
        ),
        (
            "Refused submissions by reason (5m)",
            [
                Query(
                    f"sum {by('reason')} "
                    f"(increase({sc.metric('bookgen_jobs_rejected_total')}[5m]))",
                    "{{reason}}",
                )
            ],
            "short",
            None,
        ),
        (
            "Book time p95 and oldest running job",
            [
                Query(rec(names.service_rule("job_duration_seconds", "p95_1h")), "p95 (1h)"),
                Query(
                    sc.metric("bookgen_job_oldest_running_age_seconds", WORKER),
                    "oldest, worker {{worker}}",
                ),
            ],
            "s",
            Limit(t.book_time.max_seconds),
        ),
        (
            "Sections written per minute by kind",
            [Query(f"sum {by('kind')} ({rate('bookgen_chapters_total')}) * 60", "{{kind}}")],
            "short",
            None,
        ),
        (
            "Words per second",
            [Query(f"sum {by()} ({rate('bookgen_words_total')})", "words")],
            "short",
            None,
        ),
        (
            "Chapter length deviation p95",
            [
                Query(
                    f"histogram_quantile(0.95, sum {by('le')} "
                    f"({rate('bookgen_chapter_length_deviation_ratio_bucket')}))",
                    "p95",
                )
            ],
            "percentunit",
            None,
        ),
        (
            "Length fix passes per minute",
            [
                Query(
                    f"sum {by('action')} ({rate('bookgen_length_fix_attempts_total')}) * 60",
                    "{{action}}",
                )
            ],
            "short",
            None,
        ),
        (
            "LLM calls per second by model",
            [
                Query(
                    f"sum {by('gen_ai_request_model')} ({rate(f'{genai}_count')})",
                    "{{gen_ai_request_model}}",
                )
            ],
            "reqps",
            None,
        ),
        (
            "LLM error ratio (5m)",
            [Query(rec(names.sli_error_rule("5m"), f'slo="{t.llm_errors.slo}"'), "errors")],
            "percentunit",
            Limit(spec.slo(t.llm_errors.slo).error_budget),
        ),
        (
            "LLM call duration p95 and time to first chunk p95",
            [
                Query(
                    f"histogram_quantile(0.95, sum {by('le')} ({rate(f'{genai}_bucket')}))",
                    "call",
                    exemplar=True,
                ),
                Query(
                    f"histogram_quantile(0.95, sum {by('le')} "
                    f"({rate('gen_ai_client_operation_time_to_first_chunk_seconds_bucket')}))",
                    "first chunk",
                    exemplar=True,
                ),
            ],
            "s",
            None,
        ),
        (
            "Tokens per second by type",
            [
                Query(
                    f"sum {by('gen_ai_token_type')} ({rate('gen_ai_client_token_usage_sum')})",
                    "{{gen_ai_token_type}}",
                )
            ],
            "short",
            None,
        ),
        (
            "LLM retries per minute by reason",
            [Query(f"sum {by('reason')} ({rate('bookgen_llm_retries_total')}) * 60", "{{reason}}")],
            "short",
            None,
        ),
        (
            "LLM spend (USD per hour)",
            [
                Query(
                    f"sum {by('gen_ai_request_model')} "
                    f"({rate('bookgen_llm_cost_usd_total')}) * 3600",
                    "{{gen_ai_request_model}}",
                )
            ],
            "currencyUSD",
            None,
        ),
    ]
    for title, queries, unit, limit in panels:
        d = d.with_panel(_series(layout, title, queries, unit, limit))
    return d


def _slo(spec: Spec) -> dashboard.Dashboard:
    layout = Layout()
    d = _base(spec, "bookgen-slo")
    rec = Scope(spec, dashboard=True).recorded
    for name, slo in sorted(spec.slos.items()):
        d = d.with_panel(
            _stat(
                layout,
                f"{slo.title}: budget left",
                Query(rec(names.BUDGET_REMAINING_RULE, f'slo="{name}"'), "remaining"),
                "percentunit",
                Limit(0, above=False),
                f"{names.format_duration(spec.period)} error budget left",
            )
        )
    for name, slo in sorted(spec.slos.items()):
        own = f'slo="{name}"'
        # The SLO's constants carry no namespace or job: one for every deployment.
        sel = f"{{{own}}}"
        windows = sorted({w for pair in spec.burn_rates for w in (pair.long, pair.short)})
        burn = [
            Query(
                f"{rec(names.sli_error_rule(names.window_suffix(w)), own)} / on(slo) group_left() "
                f"{names.ERROR_BUDGET_RULE}{sel}",
                "{{namespace}} {{job}} " + names.window_suffix(w),
            )
            for w in windows
        ]
        page = min(p.factor for p in spec.burn_rates)
        d = d.with_panel(
            _series(layout, f"{slo.title}: burn rate by window", burn, "x", Limit(page))
        )
        d = d.with_panel(
            _series(
                layout,
                f"{slo.title}: error ratio vs budget",
                [
                    Query(rec(names.sli_error_rule("1h"), own), "{{namespace}} {{job}} 1h"),
                    Query(f"{names.ERROR_BUDGET_RULE}{sel}", "budget"),
                    Query(f"1 - {names.OBJECTIVE_RULE}{sel}", "1 - objective"),
                ],
                "percentunit",
            )
        )
    return d


def _alerts(spec: Spec) -> dashboard.Dashboard:
    layout = Layout()
    d = _base(spec, "bookgen-alerts")
    # `|` also matches alerts without a namespace (Watchdog, a Prometheus without one).
    own = f'{names.SERVICE_LABEL}="{spec.service}",namespace=~"$namespace|"'
    firing = f'ALERTS{{alertstate="firing",{own}}}'
    d = d.with_panel(
        _stat(
            layout,
            "Firing alerts",
            Query(f"count({firing})", "firing"),
            "short",
            None,
            "Watchdog always fires",
        )
    )
    d = d.with_panel(
        _series(
            layout,
            "Firing alerts by name",
            [Query(f"count by (alertname, severity) ({firing})", "{{alertname}} {{severity}}")],
            "short",
            width=20,
        )
    )
    panel = (
        table.Panel()
        .title("Firing and pending alerts now")
        .datasource(DS)
        .grid_pos(layout.next(24, 10))
    )
    for target in _q([Query(f"ALERTS{{{own}}}")]):
        panel = panel.with_target(target.instant().format(pm.PromQueryFormat.TABLE))
    return d.with_panel(panel)


def _workers(spec: Spec) -> dashboard.Dashboard:
    """The section worker tier: liveness, load, backlog, outcomes, memory and dependencies."""
    w, sc = spec.workers, spec.scrape
    f = w.failures
    scope = Scope(spec, dashboard=True)
    by, rec = scope.by, scope.recorded
    wk = f'{spec.scrape.worker_label}=~"$worker"'
    done = 'outcome="completed"'
    max_wait = w.backlog.max_wait
    window = names.format_duration(f.window)
    # The API's figures against the workers', matched by namespace as the rules do.
    across = "on(namespace) group_right()"
    missing = Query(
        f"{_jobless(scope, rules.WORKERS_EXPECTED)} - {across} {rec(rules.WORKERS_UP)}", "missing"
    )
    load = Query(rec(rules.WORKER_LOAD), "load")
    oldest = Query(rec(rules.OLDEST_QUEUED), "oldest queued")
    failed = f"sum {by()} (increase({scope.series(f.failed)}[{window}]))"
    finished = f"sum {by()} (increase({scope.series(f.finished)}[{window}]))"
    failure_ratio = Query(f"({failed} or {finished} * 0) / {finished}", f"failed ({window})")
    deps = [(sc.broker_job, names.BROKER_UP), (sc.store_job, names.STORE_UP)]

    def target(metric: str, job: str, *extra: str) -> str:
        return scope.target(metric, f'job="{job}"', *extra)

    def server_up(job: str, exporter_up: str) -> str:
        # The exporter's verdict while it answers; once it is down its series go stale and
        # the target's own `up` (0) shows instead.
        return f"min {by()} ({target(exporter_up, job)} or {target('up', job)})"

    queue = target(names.CELERY_QUEUE_LENGTH, sc.celery_job, f'queue_name="{w.queue}"')
    layout = Layout()
    d = _base(spec, "bookgen-workers", sc.worker_job)
    stats = [
        ("Workers missing", missing, "short", Limit(1), "expected minus live worker processes"),
        ("Worker load", load, "percentunit", Limit(1), "(queued + running) / slots"),
        ("Oldest queued section", oldest, "s", Limit(max_wait), "wait for a worker"),
        (
            f"Section failures ({window})",
            failure_ratio,
            "percentunit",
            Limit(f.max_ratio),
            f"failed / finished; alerts from {f.min_tasks} tasks on",
        ),
        (
            "Broker up",
            Query(server_up(sc.broker_job, names.BROKER_UP), "broker"),
            "short",
            Limit(1, above=False),
            "Redis as its exporter sees it, else the target (RabbitMQ's own plugin)",
        ),
        (
            "Store up",
            Query(server_up(sc.store_job, names.STORE_UP), "store"),
            "short",
            Limit(1, above=False),
            "PostgreSQL as its exporter sees it, else the exporter target",
        ),
    ]
    for title, query, unit, limit, desc in stats:
        d = d.with_panel(_stat(layout, title, query, unit, limit, desc))
    panels: list[tuple[str, list[Query], str, Limit | None]] = [
        (
            "Workers up vs expected",
            [
                Query(rec(rules.WORKERS_UP), "up (counted)"),
                Query(_jobless(scope, rules.WORKERS_EXPECTED), "expected"),
                Query(
                    f"count {by()} ({target(names.CELERY_WORKER_UP, sc.celery_job)} == 1)",
                    "heartbeating (celery-exporter)",
                ),
            ],
            "short",
            None,
        ),
        (
            "Sections queued and running vs slots",
            [
                Query(_jobless(scope, rules.SECTIONS), "{{state}}"),
                Query(rec(rules.WORKER_SLOTS), "slots"),
                Query(f"sum {by()} ({queue})", "in the broker queue"),
            ],
            "short",
            None,
        ),
        ("Worker load vs capacity", [load], "percentunit", Limit(1)),
        ("Oldest queued section vs limit", [oldest], "s", Limit(max_wait)),
        (
            "Section task outcomes per minute",
            [
                Query(
                    f"sum {by('outcome')} "
                    f"(rate({scope.metric('bookgen_section_tasks_total', wk)}[{RATE}])) * 60",
                    "{{outcome}}",
                ),
                Query(
                    f"sum {by()} (rate("
                    f"{scope.metric('bookgen_section_redeliveries_total', wk)}[{RATE}])) * 60",
                    "redelivered",
                ),
            ],
            "short",
            None,
        ),
        ("Section failure ratio vs limit", [failure_ratio], "percentunit", Limit(f.max_ratio)),
        (
            "Section task duration p95 by kind",
            [
                Query(
                    f"histogram_quantile(0.95, sum {by('le', 'kind')} (rate("
                    f"{scope.metric('bookgen_section_task_duration_seconds_bucket', wk, done)}"
                    f"[{RATE}])))",
                    "{{kind}}",
                    exemplar=True,
                )
            ],
            "s",
            None,
        ),
        (
            "Sections running per worker vs slots",
            [
                Query(scope.series(w.running, wk), "running, worker {{worker}}"),
                Query(scope.series(w.slots, wk), "slots, worker {{worker}}"),
            ],
            "short",
            None,
        ),
        (
            "RSS per worker vs limit",
            [
                Query(
                    target(spec.targets.memory.metric.metric, sc.worker_job, wk),
                    "worker {{worker}}",
                )
            ],
            "bytes",
            Limit(spec.targets.memory.max_bytes),
        ),
        (
            "LLM calls per second per worker",
            [
                Query(
                    f"sum {by(sc.worker_label)} (rate("
                    f"{target('gen_ai_client_operation_duration_seconds_count', sc.worker_job, wk)}"
                    f"[{RATE}]))",
                    "worker {{worker}}",
                )
            ],
            "reqps",
            None,
        ),
        (
            "Broker and store up",
            [
                Query(
                    scope.target("up", f'job=~"{sc.broker_job}|{sc.store_job}|{sc.celery_job}"'),
                    "{{job}}",
                )
            ]
            + [Query(target(metric, job), f"{metric}") for job, metric in deps],
            "short",
            None,
        ),
    ]
    for title, queries, unit, line in panels:
        d = d.with_panel(_series(layout, title, queries, unit, line))
    return d


BUILDERS: dict[str, Callable[[Spec], dashboard.Dashboard]] = {
    "bookgen-overview": _overview,
    "bookgen-service": _service,
    "bookgen-jobs-llm": _jobs_llm,
    "bookgen-slo": _slo,
    "bookgen-alerts": _alerts,
    "bookgen-workers": _workers,
}


def render(spec: Spec) -> dict[str, dict[str, Any]]:
    """Dashboard JSON by file stem (= UID)."""
    out: dict[str, dict[str, Any]] = {}
    for uid, build in BUILDERS.items():
        encoded = json.dumps(build(spec).build(), cls=JSONEncoder, sort_keys=True)
        out[uid] = json.loads(encoded)
    return out


def panel_queries(
    spec: Spec, variables: dict[str, str] | None = None
) -> list[tuple[str, str, str]]:
    """(dashboard uid, panel title, expr) for every panel query, Grafana variables substituted."""
    values = {**VARIABLES, **(variables or {})}
    rows = []
    for uid, board in render(spec).items():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                for var, value in values.items():
                    expr = expr.replace(var, value)
                rows.append((uid, panel["title"], expr))
    return rows


def datasource_provisioning(spec: Spec, url: str = "http://127.0.0.1:9090") -> dict[str, Any]:
    interval = names.format_duration(spec.profile("default").scrape_interval)
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "type": "prometheus",
                "uid": names.DATASOURCE_UID,
                "access": "proxy",
                "url": url,
                "isDefault": True,
                "jsonData": {"timeInterval": interval, "httpMethod": "POST"},
            }
        ],
    }


def dashboard_provisioning() -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "bookgen",
                "folder": "BookGen",
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                # mount this repository's dashboards/ here
                "options": {
                    "path": "/var/lib/grafana/dashboards/bookgen",
                    "foldersFromFilesStructure": False,
                },
            }
        ],
    }
