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
from bookgen.slo.spec import Spec

DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
W = '{worker=~"$worker"}'
VARIABLES = {"$__rate_interval": "1m", "$worker": ".*", "${datasource}": names.DATASOURCE_UID}
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


def _base(spec: Spec, uid: str, job: str | None = None) -> dashboard.Dashboard:
    """A dashboard whose `worker` variable lists the processes of `job` (the API by default)."""
    label = spec.scrape.worker_label
    worker = (
        dashboard.QueryVariable("worker")
        .label("Worker")
        .datasource(DS)
        .query(f'label_values(up{{job="{job or spec.scrape.api_job}"}}, {label})')
        .include_all(True)
        .multi(True)
        .all_value(".*")
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
    )
    return (
        dashboard.Dashboard(FILES[uid])
        .uid(names.dashboard_uid(uid))
        .tags(["bookgen", "generated"])
        .description(names.HEADER)
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("utc")
        .with_variable(dashboard.DatasourceVariable("datasource").type("prometheus"))
        .with_variable(worker)
    )


def _overview(spec: Spec) -> dashboard.Dashboard:
    t = spec.targets
    lat = spec.slo(t.api_latency.slo).latency
    assert lat is not None
    err = spec.slo(t.error_rate.slo)
    llm = spec.slo(t.llm_errors.slo)
    q = round(t.api_latency.quantile * 100)
    bq = round(t.book_time.quantile * 100)
    p95 = Query(names.service_rule("http_request_duration_seconds", f"p{q}_5m"), f"p{q}")
    errors = Query(f'{names.sli_error_rule("5m")}{{slo="{t.error_rate.slo}"}}', "error ratio")
    rss = Query(f"max({t.memory.metric.promql()})", "max RSS")
    done = Query(names.service_rule("jobs_completed", "increase1h"), "books / 1h")
    book = Query(names.service_rule("job_duration_seconds", f"p{bq}_1h"), f"p{bq}")
    oldest = Query(names.service_rule("job_oldest_running_age_seconds", "max"), "oldest running")
    rejected = Query(
        names.service_rule("jobs_rejected_queue_full", "increase5m"), "refused, queue full / 5m"
    )
    llm_err = Query(f'{names.sli_error_rule("5m")}{{slo="{t.llm_errors.slo}"}}', "LLM errors")
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
            [Query(f"{t.memory.metric.metric}{W}", "worker {{worker}}")],
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
            [Query(f'up{{job=~"{"|".join(_jobs(spec))}"}}', "{{job}} {{worker}}")],
            "short",
        )
    )
    return d


def _jobs(spec: Spec) -> list[str]:
    sc = spec.scrape
    return [sc.api_job, sc.llm_job, sc.worker_job, sc.broker_job, sc.store_job, sc.celery_job]


def _service(spec: Spec) -> dashboard.Dashboard:
    lat = spec.slo(spec.targets.api_latency.slo).latency
    assert lat is not None
    h = lat.histogram
    mem = spec.targets.memory
    layout = Layout()
    d = _base(spec, "bookgen-service")
    panels = [
        (
            "Requests per second by route",
            [Query(f"sum by (route) (rate(bookgen_http_requests_total{W}[{RATE}]))", "{{route}}")],
            "reqps",
            None,
        ),
        (
            "Requests per second by status",
            [
                Query(
                    f"sum by (status) (rate(bookgen_http_requests_total{W}[{RATE}]))", "{{status}}"
                ),
                Query(names.service_rule("http_requests", "rate5m"), "all (5m)"),
            ],
            "reqps",
            None,
        ),
        (
            "5xx ratio vs budget (5m)",
            [Query(f'{names.sli_error_rule("5m")}{{slo="{spec.targets.error_rate.slo}"}}', "5xx")],
            "percentunit",
            Limit(spec.slo(spec.targets.error_rate.slo).error_budget),
        ),
        (
            "Throttled (429) ratio: rate limits and a full queue, never an error",
            [Query(rules.throttled_rule(spec), "429")],
            "percentunit",
            None,
        ),
        (
            "Duration p50 / p95 / p99",
            [
                Query(
                    f"histogram_quantile({qq}, sum by (le) (rate({h}_bucket{W}[{RATE}])))", f"p{p}"
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
                    f"histogram_quantile(0.95, sum by (le, route) (rate({h}_bucket{W}[{RATE}])))",
                    "{{route}}",
                )
            ],
            "s",
            Limit(lat.bound),
        ),
        (
            "Requests in flight",
            [Query(f"sum(bookgen_http_requests_in_flight{W})", "in flight")],
            "short",
            None,
        ),
        (
            "RSS per worker",
            [Query(f"{mem.metric.metric}{W}", "worker {{worker}}")],
            "bytes",
            Limit(mem.max_bytes),
        ),
        (
            "CPU per worker",
            [Query(f"rate(bookgen_process_cpu_seconds_total{W}[{RATE}])", "worker {{worker}}")],
            "percentunit",
            None,
        ),
        (
            "Open file descriptors",
            [Query(f"bookgen_process_open_fds{W}", "worker {{worker}}")],
            "short",
            None,
        ),
        ("Threads", [Query(f"bookgen_process_threads{W}", "worker {{worker}}")], "short", None),
        (
            "Event loop lag p99",
            [
                Query(
                    "histogram_quantile(0.99, sum by (le, worker) "
                    f"(rate(bookgen_event_loop_lag_seconds_bucket{W}[{RATE}])))",
                    "worker {{worker}}",
                )
            ],
            "s",
            None,
        ),
        (
            "Build info",
            [Query(f"bookgen_build_info{W}", "{{version}} py{{python_version}}")],
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
    panels = [
        (
            "Jobs submitted and finished per minute",
            [
                Query(f"sum(rate(bookgen_jobs_submitted_total[{RATE}])) * 60", "submitted"),
                Query(
                    f"sum by (outcome) (rate(bookgen_jobs_finished_total[{RATE}])) * 60",
                    "{{outcome}}",
                ),
            ],
            "short",
            None,
        ),
        (
            "Books completed per hour",
            [Query(names.service_rule("jobs_completed", "increase1h"), "completed / 1h")],
            "short",
            Limit(t.throughput.min_per_hour, above=False),
        ),
        (
            "Queue vs capacity",
            [
                Query(names.service_rule("jobs_queued", "max"), "queued"),
                Query(names.service_rule("job_queue_capacity", "max"), "capacity"),
                Query("sum(bookgen_jobs_running)", "running"),
            ],
            "short",
            None,
        ),
        (
            "Oldest book waiting to start vs limit",
            [Query(rules.OLDEST_QUEUED_JOB, "oldest waiting")],
            "s",
            Limit(t.book_wait.max_wait),
        ),
        (
            "Refused submissions by reason (5m)",
            [Query("sum by (reason) (increase(bookgen_jobs_rejected_total[5m]))", "{{reason}}")],
            "short",
            None,
        ),
        (
            "Book time p95 and oldest running job",
            [
                Query(names.service_rule("job_duration_seconds", "p95_1h"), "p95 (1h)"),
                Query(f"bookgen_job_oldest_running_age_seconds{W}", "oldest, worker {{worker}}"),
            ],
            "s",
            Limit(t.book_time.max_seconds),
        ),
        (
            "Sections written per minute by kind",
            [Query(f"sum by (kind) (rate(bookgen_chapters_total[{RATE}])) * 60", "{{kind}}")],
            "short",
            None,
        ),
        (
            "Words per second",
            [Query(f"sum(rate(bookgen_words_total[{RATE}]))", "words")],
            "short",
            None,
        ),
        (
            "Chapter length deviation p95",
            [
                Query(
                    "histogram_quantile(0.95, sum by (le) "
                    f"(rate(bookgen_chapter_length_deviation_ratio_bucket[{RATE}])))",
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
                    f"sum by (action) (rate(bookgen_length_fix_attempts_total[{RATE}])) * 60",
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
                    f"sum by (gen_ai_request_model) (rate({genai}_count[{RATE}]))",
                    "{{gen_ai_request_model}}",
                )
            ],
            "reqps",
            None,
        ),
        (
            "LLM error ratio (5m)",
            [Query(f'{names.sli_error_rule("5m")}{{slo="{t.llm_errors.slo}"}}', "errors")],
            "percentunit",
            Limit(spec.slo(t.llm_errors.slo).error_budget),
        ),
        (
            "LLM call duration p95 and time to first chunk p95",
            [
                Query(
                    f"histogram_quantile(0.95, sum by (le) (rate({genai}_bucket[{RATE}])))", "call"
                ),
                Query(
                    "histogram_quantile(0.95, sum by (le) (rate("
                    f"gen_ai_client_operation_time_to_first_chunk_seconds_bucket[{RATE}])))",
                    "first chunk",
                ),
            ],
            "s",
            None,
        ),
        (
            "Tokens per second by type",
            [
                Query(
                    f"sum by (gen_ai_token_type) (rate(gen_ai_client_token_usage_sum[{RATE}]))",
                    "{{gen_ai_token_type}}",
                )
            ],
            "short",
            None,
        ),
        (
            "LLM retries per minute by reason",
            [
                Query(
                    f"sum by (reason) (rate(bookgen_llm_retries_total[{RATE}])) * 60", "{{reason}}"
                )
            ],
            "short",
            None,
        ),
        (
            "LLM spend (USD per hour)",
            [
                Query(
                    "sum by (gen_ai_request_model) "
                    f"(rate(bookgen_llm_cost_usd_total[{RATE}])) * 3600",
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
    for name, slo in sorted(spec.slos.items()):
        sel = f'{{slo="{name}"}}'
        d = d.with_panel(
            _stat(
                layout,
                f"{slo.title}: budget left",
                Query(f"{names.BUDGET_REMAINING_RULE}{sel}", "remaining"),
                "percentunit",
                Limit(0, above=False),
                f"{names.format_duration(spec.period)} error budget left",
            )
        )
    for name, slo in sorted(spec.slos.items()):
        sel = f'{{slo="{name}"}}'
        windows = sorted({w for pair in spec.burn_rates for w in (pair.long, pair.short)})
        burn = [
            Query(
                f"{names.sli_error_rule(names.window_suffix(w))}{sel} / on(slo) "
                f"{names.ERROR_BUDGET_RULE}{sel}",
                names.window_suffix(w),
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
                    Query(f"{names.sli_error_rule('1h')}{sel}", "1h"),
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
    firing = 'ALERTS{alertstate="firing"}'
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
    for target in _q([Query("ALERTS")]):
        panel = panel.with_target(target.instant().format(pm.PromQueryFormat.TABLE))
    return d.with_panel(panel)


def _workers(spec: Spec) -> dashboard.Dashboard:
    """The section worker tier: liveness, load, backlog, outcomes, memory and dependencies."""
    w, sc = spec.workers, spec.scrape
    f = w.failures
    wk = f'{{job="{sc.worker_job}",{spec.scrape.worker_label}=~"$worker"}}'
    max_wait = w.backlog.max_wait
    window = names.format_duration(f.window)
    missing = Query(f"{rules.WORKERS_EXPECTED} - {rules.WORKERS_UP}", "missing")
    load = Query(rules.WORKER_LOAD, "load")
    oldest = Query(rules.OLDEST_QUEUED, "oldest queued")
    failed = f"sum(increase({f.failed.promql()}[{window}]))"
    finished = f"sum(increase({f.finished.promql()}[{window}]))"
    failure_ratio = Query(f"({failed} or vector(0)) / {finished}", f"failed ({window})")
    deps = [(sc.broker_job, names.BROKER_UP), (sc.store_job, names.STORE_UP)]

    def server_up(job: str, exporter_up: str) -> str:
        # The exporter's verdict while it answers; once it is down its series go stale and
        # the target's own `up` (0) shows instead.
        return f'min({exporter_up}{{job="{job}"}} or up{{job="{job}"}})'

    queue = f'{names.CELERY_QUEUE_LENGTH}{{job="{sc.celery_job}",queue_name="{w.queue}"}}'
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
                Query(rules.WORKERS_UP, "up (counted)"),
                Query(rules.WORKERS_EXPECTED, "expected"),
                Query(
                    f'count({names.CELERY_WORKER_UP}{{job="{sc.celery_job}"}} == 1)',
                    "heartbeating (celery-exporter)",
                ),
            ],
            "short",
            None,
        ),
        (
            "Sections queued and running vs slots",
            [
                Query(rules.SECTIONS, "{{state}}"),
                Query(rules.WORKER_SLOTS, "slots"),
                Query(f"sum({queue})", "in the broker queue"),
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
                    f"sum by (outcome) (rate(bookgen_section_tasks_total{wk}[{RATE}])) * 60",
                    "{{outcome}}",
                ),
                Query(
                    f"sum(rate(bookgen_section_redeliveries_total{wk}[{RATE}])) * 60",
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
                    "histogram_quantile(0.95, sum by (le, kind) (rate("
                    f'bookgen_section_task_duration_seconds_bucket{{job="{sc.worker_job}",'
                    f'outcome="completed"}}[{RATE}])))',
                    "{{kind}}",
                )
            ],
            "s",
            None,
        ),
        (
            "Sections running per worker vs slots",
            [
                Query(f"{w.running.metric}{wk}", "running, worker {{worker}}"),
                Query(f"{w.slots.metric}{wk}", "slots, worker {{worker}}"),
            ],
            "short",
            None,
        ),
        (
            "RSS per worker vs limit",
            [Query(f"{spec.targets.memory.metric.metric}{wk}", "worker {{worker}}")],
            "bytes",
            Limit(spec.targets.memory.max_bytes),
        ),
        (
            "LLM calls per second per worker",
            [
                Query(
                    f"sum by ({sc.worker_label}) "
                    f"(rate(gen_ai_client_operation_duration_seconds_count{wk}[{RATE}]))",
                    "worker {{worker}}",
                )
            ],
            "reqps",
            None,
        ),
        (
            "Broker and store up",
            [Query(f'up{{job=~"{sc.broker_job}|{sc.store_job}|{sc.celery_job}"}}', "{{job}}")]
            + [Query(f'{metric}{{job="{job}"}}', f"{metric}") for job, metric in deps],
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
