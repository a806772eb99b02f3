"""alerts/RUNBOOK.md: one section per alert with what it means, likely causes and first steps."""

from __future__ import annotations

from dataclasses import dataclass

from bookgen.slo import conventions as names
from bookgen.slo.rules import Alert, alerts, dashboard_url
from bookgen.slo.spec import Spec


@dataclass(frozen=True)
class Entry:
    meaning: str
    causes: tuple[str, ...]
    steps: tuple[str, ...]


_BURN = Entry(
    meaning="The SLO's error budget for the period is being spent faster than it can last: "
    "the error ratio is above factor x budget over both windows of a pair (SRE workbook "
    "multiwindow, multi-burn-rate alerting). Critical pages, warning files a ticket. There is no "
    "`for`: the short window ends the alert soon after the burn stops.",
    causes=(
        "A deploy or configuration change that made requests fail or slow down.",
        "The LLM provider failing, throttling (429) or slowing down, so jobs and routes back up.",
        "A worker restarting in a loop, or the store (database) being slow or locked.",
    ),
    steps=(
        "Open the error-budget dashboard: which windows burn, since when, and how fast.",
        "Critical (page) means the budget goes in hours: roll back the last change first.",
        "Warning (ticket) means a slow, steady burn: find the routes or models responsible "
        "on the service and jobs dashboards and file the fix.",
    ),
)

ENTRIES: dict[str, Entry] = {
    "api_latency": Entry(
        meaning="The API's p95 request latency over the window is above the latency target.",
        causes=(
            "CPU saturation: too few workers for the load, or generation work on the event loop.",
            "Blocking I/O inside async handlers; a slow or locked database.",
            "Large downloads or list responses.",
        ),
        steps=(
            "Service dashboard: p95 by route shows which route is slow.",
            "Check CPU per worker and event-loop lag; add workers if CPU is saturated.",
            "Look for slow queries and recent changes to the slow route.",
        ),
    ),
    "error_rate": Entry(
        meaning="More API requests than the availability budget allows were answered with a 5xx "
        "over the window (checked only with enough requests in it). A ticket: the availability "
        "burn alerts page when the budget is at risk, and their page hides this ticket. "
        "429s are not errors here (see the throttling ratio on the service dashboard).",
        causes=(
            "A bug or an unavailable dependency (database, disk) on some routes.",
            "A worker restarting in a loop.",
        ),
        steps=(
            "Service dashboard: requests by status and route show what fails.",
            "Read the worker logs around the start of the errors (they carry the trace id).",
            "If it persists, expect BookGenAvailabilityErrorBudgetBurn to follow.",
        ),
    ),
    "llm_errors": Entry(
        meaning="Too many LLM call attempts fail; jobs slow down through retries or fail.",
        causes=(
            "The provider is down, rate limiting (429) or timing out.",
            "A wrong API key, model name or base URL (4xx on every call).",
        ),
        steps=(
            "Jobs & LLM dashboard: retries by reason and calls by model.",
            "Check the provider's status page and the configured model and key.",
            "With the simulated model, check its admin config for injected faults.",
        ),
    ),
    "memory": Entry(
        meaning="A worker process's resident memory is above "
        "the per-worker limit; it may be OOM-killed.",
        causes=(
            "A memory leak (caches, retained responses, job state never freed).",
            "Too many concurrent jobs or chapters in one worker.",
            "A fault-injection memory balloon left on.",
        ),
        steps=(
            "Service dashboard (API workers) or Workers dashboard (section workers): RSS per "
            "worker; is it one worker or all of them?",
            "Restart the affected worker if it is near the limit; jobs resume from the store.",
            "Profile with scripts/profile_memory.py and lower job concurrency meanwhile.",
        ),
    ),
    "memory_leak": Entry(
        meaning="A linear trend of a worker's memory crosses the limit within the horizon.",
        causes=(
            "Steady growth of resident memory: a leak, or unbounded caches.",
            "A long burst of concurrent jobs (growth that will level off).",
        ),
        steps=(
            "Compare the RSS slope with the job rate: growth without more jobs is a leak.",
            "Take tracemalloc snapshots with scripts/profile_memory.py.",
            "Plan a rolling restart before the predicted crossing if the trend holds.",
        ),
    ),
    "throughput": Entry(
        meaning="Jobs waited during the whole throughput period, "
        "yet fewer books than the target completed.",
        causes=(
            "Workers paused, stuck or crashed while jobs wait in the queue.",
            "The LLM provider slowed down or is failing, so jobs retry.",
            "Job concurrency too low for the demand.",
        ),
        steps=(
            "Jobs & LLM dashboard: queued vs running, oldest running job, LLM errors.",
            "Check that workers claim jobs (running > 0) and that leases are renewed.",
            "Scale workers or raise job concurrency if everything is healthy but slow.",
        ),
    ),
    "book_time": Entry(
        meaning="The p95 time from submission to a completed book is above the book-time target.",
        causes=(
            "A slow LLM (tokens per second) or many length-fix passes per chapter.",
            "Jobs waiting long in the queue before a worker claims them.",
        ),
        steps=(
            "Jobs & LLM dashboard: LLM duration, length-fix passes and queue depth.",
            "Split queue time from run time: a long queue needs capacity, a long run a faster "
            "model or fewer retries.",
        ),
    ),
    "job_stuck": Entry(
        meaning="A running job is older than the book-time target: it is stuck or far too slow.",
        causes=(
            "A job hung on an LLM call that never returns (stall without timeout).",
            "A paused worker, or a lease that is never released.",
        ),
        steps=(
            "Find the job on the named worker (status route, logs with its job id and trace).",
            "Cancel or resume it; restart the worker if the event loop is blocked.",
            "Check the LLM client timeout and the fault-injection settings.",
        ),
    ),
    "queue_full": Entry(
        meaning="The service refused submissions because its job queue was at capacity "
        '(`bookgen_jobs_rejected_total{reason="queue_full"}`, counted where it refuses). '
        "This is load shedding working as designed, so it files a ticket: the service needs "
        "more capacity or the demand is abnormal. Per-client rate limiting (reason "
        "`rate_limited`) never alerts: one client over its own limit is the limiter doing "
        "its job.",
        causes=(
            "Demand above what the job slots finish: too few workers or job slots.",
            "Workers stalled or slow (see BookGenThroughputLow, BookGenBookWaitingTooLong).",
            "A client submitting in a loop through many client ids.",
        ),
        steps=(
            "Jobs & LLM dashboard: refused submissions by reason, queue vs capacity, running.",
            "If workers are healthy and busy, add workers or raise job concurrency.",
            "If workers are idle or stalled, follow the throughput and stuck-job runbooks.",
        ),
    ),
    "book_wait": Entry(
        meaning="The oldest book not yet started was submitted longer ago than the limit: books "
        "wait for a job slot and will miss the book-time target. With the worker tier a book "
        "starts as section tasks, so BookGenSectionWaitingTooLong usually fires alongside.",
        causes=(
            "All job slots busy: demand above capacity.",
            "Workers paused, stuck or not claiming jobs (leases not released, store locked).",
        ),
        steps=(
            "Jobs & LLM dashboard: queued vs running, oldest waiting book, oldest running job.",
            "Running at the slot count: add workers or job slots.",
            "Running below the slot count while books wait: workers are not claiming; check "
            "their logs and the store.",
        ),
    ),
    "target_down": Entry(
        meaning="Prometheus cannot scrape an API worker or the model process.",
        causes=(
            "A worker process crashed or was killed (OOM), or the model process is down.",
            "The metrics port is not bound (BOOKGEN_METRICS_PORT_BASE) or scraping times out.",
        ),
        steps=(
            "`bookgen status` and the Prometheus targets page: which target, which error.",
            "Read the worker's last log lines; restart it.",
            "Alerts read from this target (its memory, its running job) are inhibited while "
            "it is down: re-check them afterwards. Alerts of other targets are not.",
        ),
    ),
    "target_absent": Entry(
        meaning="Prometheus has no API scrape target at all, so every other alert is blind.",
        causes=(
            "Prometheus has no scrape job for the API (wrong config or file_sd).",
            "The whole service is down.",
        ),
        steps=(
            "Check the Prometheus config and its targets page for the API job.",
            "Start the service (`bookgen up` locally) and watch up become 1.",
        ),
    ),
    "workers_missing": Entry(
        meaning="Fewer section worker processes are up than the deployment expects "
        "(bookgen_workers_expected). Live workers are counted from `up` of the worker job, so a "
        "killed worker keeps counting as missing after its target or series vanish (an alert on "
        "a per-worker `up == 0` or celery-exporter's `celery_worker_up == 0` goes quiet then). "
        "Severity: `warning` (ticket) while some workers run: books still progress with less "
        "capacity, and BookGenSectionWaitingTooLong tells when that makes sections wait; "
        "`critical` (page) when none is up, since then no section is written at all and every "
        "book in progress stalls. The critical one inhibits the warning one.",
        causes=(
            "A worker process crashed, was OOM-killed or is restarting in a loop.",
            "A node or pod lost; the scheduler cannot place a new one (quota, image, resources).",
            "Workers run but their metrics port is not scraped (wrong port or scrape config).",
            "bookgen_workers_expected raised (scale-up) before the new workers started.",
        ),
        steps=(
            "Workers dashboard: live vs expected, and which worker label disappeared when.",
            "`bookgen status` (or the orchestrator) for the worker processes, and the last log "
            "lines of the missing one; restart it. Sections it was writing should start again "
            "elsewhere once their lease expires: section redeliveries rise.",
            "If a worker runs but is not `up`, check the Prometheus targets page for its error.",
            "None up: also check the broker (BookGenBrokerDown), which every worker needs.",
        ),
    ),
    "section_backlog": Entry(
        meaning="The oldest queued section has waited longer than the limit for a worker: "
        "the worker tier is short of capacity or not taking work, and books will miss their "
        "time target.",
        causes=(
            "Workers missing or all slots busy: the worker load ratio is at or above 1.",
            "Workers up but not consuming: broker unreachable, a wrong queue name, or prefetch "
            "holding tasks on a stuck worker.",
            "Autoscaling not reacting to bookgen:worker_load:ratio.",
        ),
        steps=(
            "Workers dashboard: load ratio, sections queued vs running, slots, broker queue.",
            "Load near or above 1: add workers (or raise the autoscaler's maximum).",
            "Load low yet sections wait: check the broker and the workers' consumption "
            "(celery-exporter queue length for the section queue, worker logs).",
        ),
    ),
    "section_failures": Entry(
        meaning="Too many section tasks end failed or gave up over the window (ratio of "
        "failed + gave_up to completed + failed + gave_up; duplicates and hand-backs are not "
        "endings). A floor of finished tasks keeps a quiet hour from alerting on one failure.",
        causes=(
            "LLM provider errors or timeouts (see BookGenLLMErrorsHigh).",
            "A bug in section writing or length validation; a bad deploy of the workers.",
            "The store rejecting writes (locks, fencing conflicts, BookGenStoreDown).",
        ),
        steps=(
            "Workers dashboard: task outcomes by kind; is it one worker or all of them?",
            "Read the failing worker's logs (they carry job and trace ids).",
            "gave_up means a section exhausted its attempts: its book fails; check the job.",
        ),
    ),
    "broker_down": Entry(
        meaning="The task broker is down (the Redis exporter reports `redis_up` 0) or its "
        "metrics target cannot be scraped. With RabbitMQ the metrics come from the broker's "
        "own prometheus plugin, so its target being down is the broker being down.",
        causes=(
            "The Redis or RabbitMQ server stopped, crashed or ran out of memory or disk.",
            "The exporter (or plugin) stopped, or its address changed: the broker may be fine.",
        ),
        steps=(
            "Check the broker process and its logs; restart it.",
            "If the broker answers (`redis-cli ping`, `rabbitmqctl status`), fix the exporter.",
            "Once it is back, watch the oldest queued section's age fall. If it keeps growing, "
            "the restarted broker lost its queue (a Redis that keeps nothing on disk) and the "
            "sections still queued in the store must be sent again.",
        ),
    ),
    "store_down": Entry(
        meaning="The job store (PostgreSQL) is down (the exporter reports `pg_up` 0) or the "
        "exporter cannot be scraped. Jobs and sections live in the store: nothing progresses.",
        causes=(
            "PostgreSQL stopped, crashed, or refuses connections (max_connections, disk full).",
            "The exporter stopped or lost its credentials: the database may be fine.",
        ),
        steps=(
            "Check the PostgreSQL server and its logs; `pg_isready -h <host>`.",
            "If the database answers, fix the exporter (connection string, credentials).",
            "Expect API errors and section failures meanwhile; once it is back, check that "
            "section failures and the oldest queued section's age fall.",
        ),
    ),
    "watchdog": Entry(
        meaning="Always firing, by design: a heartbeat of the whole alerting pipeline.",
        causes=("This alert is meant to fire always.",),
        steps=(
            "If it stops arriving, Prometheus, rule evaluation, Alertmanager or the receiver "
            "is broken: check each in that order.",
        ),
    ),
}


# Both severities of BookGenWorkersMissing share one runbook section.
ENTRIES["workers_none"] = ENTRIES["workers_missing"]


def _entry(alert: Alert) -> Entry:
    return _BURN if alert.key.startswith("burn_") else ENTRIES[alert.key]


def _slo_note(spec: Spec, alert: Alert) -> str:
    if not alert.key.startswith("burn_"):
        return ""
    name = alert.key.removeprefix("burn_").rsplit("_", 1)[0]
    slo = spec.slo(name)
    return (
        f" Here: {slo.title}, objective {slo.objective * 100:g}% over "
        f"{names.format_duration(spec.period)}; errors are {slo.description}."
    )


def _severity_list(spec: Spec, severity: str) -> str:
    found = sorted({a.name for a in alerts(spec) if a.severity == severity})
    return ", ".join(f"`{name}`" for name in found)


def _pairs(spec: Spec, severity: str) -> str:
    fmt = names.format_duration
    return " or ".join(
        f"{p.factor:g}x over {fmt(p.long)} and {fmt(p.short)}"
        for p in spec.burn_rates
        if p.severity == severity
    )


def policy(spec: Spec) -> list[str]:
    """The paging policy the alert set follows, at the head of the runbook."""
    period = names.format_duration(spec.period)
    retention = names.format_duration(spec.period + 5 * 86400)
    return [
        "## Paging policy",
        "",
        "- **Page (`critical`, receiver `page`)**: users are hurt now and the error budget says "
        f"so — an SLO burning at {_pairs(spec, 'critical')} — or nothing can progress "
        "and the SLIs cannot see it (no worker, broker or store down, a target down or absent, a "
        "worker over its memory limit). Pages: " + _severity_list(spec, "critical") + ".",
        f"- **Ticket (`warning`, receiver `ticket`)**: the budget burns slowly "
        f"({_pairs(spec, 'warning')}) or a target is breached without users failing yet (latency, "
        "5xx ratio, book time and waiting, throughput, a full queue, LLM errors, lost worker "
        "capacity). Tickets: " + _severity_list(spec, "warning") + ".",
        "- **Dashboards only**: per-client rate limiting (429 `rate_limited`) and the throttling "
        "ratio, queue depth, worker load, LLM retries, cost. A client over its own limit is the "
        "limiter working: it never alerts, and 429 is not an availability error.",
        "- **One page per incident**: alerts group by alertname, service, SLO and severity; a "
        "page hides the ticket of the same alert and every ticket on the same SLO; a target "
        "that cannot be scraped hides only the alerts read from that target (`equal: [job, "
        "instance]`); burn alerts have no `for`.",
        "- **Every threshold alert that divides has a floor** of events in its window; the "
        "`Watchdog` always fires and goes to its own receiver every "
        f"{names.format_duration(spec.profile('default').watchdog_repeat_interval)}, for a dead "
        "man's switch outside the cluster.",
        "",
        "## SLO arithmetic and retention",
        "",
        "Each SLO records `slo:sli_error:ratio_rate<window>` for "
        f"{', '.join(names.format_duration(w) for w in spec.windows)} with the labels "
        f"`service`, `slo` and `window`, and keeps the `namespace` and `job` of the series it "
        "reads: one Prometheus may hold several deployments, and each gets its own SLIs, budgets "
        "and alerts (every alert carries the `namespace` of its deployment where Prometheus has "
        f"one). {_selectors(spec)} The {period} SLI is the mean of the "
        f"{names.format_duration(spec.windows[0])} SLI over the period (`sum_over_time / "
        "count_over_time`, as Sloth does), so Prometheus must keep "
        f"{period} of that series: run it with `--storage.tsdb.retention.time={retention}` or "
        "more, on persistent storage. With less, the period SLI and "
        "`slo:period_error_budget_remaining:ratio` cover only what is kept. A window without "
        "events records no SLI sample (not NaN), so idle time neither burns nor poisons the "
        "period average.",
        "",
    ]


def _selectors(spec: Spec) -> str:
    chosen = [m for m in (spec.selectors.namespace, spec.selectors.cluster) if m]
    if not chosen:
        return (
            "No namespace or cluster selector is set (`selectors:` in slo.yaml): the rules "
            "read every namespace this Prometheus scrapes."
        )
    return f"Every series is read with {', '.join(f'`{m}`' for m in chosen)} (slo.yaml)."


def render(spec: Spec) -> str:
    by_name: dict[str, list[Alert]] = {}
    for alert in alerts(spec):
        by_name.setdefault(alert.name, []).append(alert)
    lines = [
        f"<!-- {names.HEADER} -->",
        "# BookGen alert runbook",
        "",
        "One section per alert: what it means, likely causes, first steps. Every alert's "
        "`runbook_url` points at its section. Thresholds and windows are those of the default "
        "profile; the fast profile divides every time horizon by "
        f"{spec.profile('fast').time_scale} (see `alerts/fast-profile.json`).",
        "",
        *policy(spec),
    ]
    for name in sorted(by_name):
        group = by_name[name]
        entry = _entry(group[0])
        lines += [f"## {name}", ""]
        for alert in group:
            for_ = names.format_duration(alert.for_s)
            lines += [
                f"- **Severity** `{alert.severity}`, **for** `{for_}`: {alert.summary}",
                "",
                "  ```promql",
                *(f"  {line}" for line in alert.expr.splitlines()),
                "  ```",
                "",
            ]
        lines += [
            f"**Meaning.** {entry.meaning}{_slo_note(spec, group[0])}",
            "",
            f"**Dashboard.** {dashboard_url(spec, group[0].dashboard)}",
            "",
            "**Likely causes.**",
            *(f"- {c}" for c in entry.causes),
            "",
            "**First steps.**",
            *(f"{i}. {s}" for i, s in enumerate(entry.steps, 1)),
            "",
        ]
    return "\n".join(lines)
