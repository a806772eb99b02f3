"""promtool unit tests for the rules, generated from the spec for either profile.

Every alert rule gets a scenario where it fires (labels and annotations asserted) and is asserted
silent under healthy traffic and on an idle system. Time is counted in ticks: one tick is 1 min in
the default profile and 1 min / time_scale in the fast one, so every scenario holds in both.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bookgen.instrumentation.catalogue import BY_NAME, SECTION_TASK_OUTCOMES
from bookgen.slo import conventions as names
from bookgen.slo.rules import (
    WORKER_LOAD,
    WORKERS_UP,
    Alert,
    alert_annotations,
    alert_static_labels,
    alerts,
    slo_labels,
    throttled_rule,
)
from bookgen.slo.rules import render as render_rules
from bookgen.slo.spec import BurnRate, RatioSLO, Spec

Series = dict[str, str]  # series selector -> promtool values expression
LONG = 130  # ticks of data in every scenario (2 h 10 min in the default profile)
WORKERS = 2  # section worker processes in every world
SLOTS = 4  # sections each worker process runs at once
# Default ports of the exporters: Redis, RabbitMQ's plugin, PostgreSQL, celery-exporter.
REDIS_EXPORTER, RABBITMQ, PG_EXPORTER, CELERY_EXPORTER = 9121, 15692, 9187, 9808


# --- Prometheus template functions, as Prometheus 2.42 formats them ------------------------------


def _g4(value: float) -> str:
    return f"{value:.4g}"


def humanize_percentage(value: float) -> str:
    return f"{_g4(value * 100)}%"


def humanize1024(value: float) -> str:
    if abs(value) <= 1 or math.isnan(value) or math.isinf(value):
        return _g4(value)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(value) < 1024:
            break
        prefix, value = p, value / 1024
    return f"{_g4(value)}{prefix}"


def humanize_duration(value: float) -> str:
    if value == 0:
        return "0s"
    if abs(value) >= 1:
        whole = int(value)
        s, m, h, d = whole % 60, whole // 60 % 60, whole // 3600 % 24, whole // 86400
        if d:
            return f"{d}d {h}h {m}m {s}s"
        if h:
            return f"{h}h {m}m {s}s"
        if m:
            return f"{m}m {s}s"
        return f"{_g4(value)}s"
    prefix = ""
    for p in ("m", "u", "n", "p"):
        if abs(value) >= 1:
            break
        prefix, value = p, value * 1000
    return f"{_g4(value)}{prefix}s"


def _go_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def render_template(text: str, value: float, labels: dict[str, str]) -> str:
    """Expand the template subset the generated annotations use."""
    text = re.sub(
        r"\{\{ with \$labels\.(\w+) \}\}(.*?)\{\{ \. \}\}(.*?)\{\{ end \}\}",
        lambda m: f"{m.group(2)}{labels[m.group(1)]}{m.group(3)}" if labels.get(m.group(1)) else "",
        text,
    )
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)
    replacements = {
        "{{ $value | humanizePercentage }}": humanize_percentage(value),
        "{{ $value | humanizeDuration }}": humanize_duration(value),
        "{{ $value | humanize1024 }}": humanize1024(value),
        '{{ printf "%.0f" $value }}': f"{value:.0f}",
        "{{ $value }}": _go_value(value),
    }
    for template, rendered in replacements.items():
        text = text.replace(template, rendered)
    if "{{" in text:
        raise ValueError(f"template not understood by the test generator: {text}")
    return text


# --- series -------------------------------------------------------------------------------------


def _sel(metric: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items() if v != "")
    return f"{metric}{{{inner}}}" if inner else metric


def _ramp(per_tick: float, start: float = 0) -> str:
    return f"{_go_value(start)}+{_go_value(per_tick)}x{LONG}"


def _flat(value: float) -> str:
    return _ramp(0, value)


@dataclass
class World:
    """Healthy (or idle) series for one profile; scenarios override parts of it."""

    spec: Spec
    tick_s: int
    idle: bool = False
    series: Series = field(default_factory=dict)
    namespace: str = ""  # as Kubernetes service discovery labels every target; none locally

    @property
    def where(self) -> dict[str, str]:
        return {names.NAMESPACE_LABEL: self.namespace} if self.namespace else {}

    @property
    def worker(self) -> dict[str, str]:
        return {
            **self.where,
            "job": self.spec.scrape.api_job,
            "instance": "127.0.0.1:9100",
            self.spec.scrape.worker_label: "0",
        }

    def set(self, metric: str, labels: dict[str, str], values: str) -> None:
        self.series[_sel(metric, {**self.worker, **labels})] = values

    def tier(self, index: int) -> dict[str, str]:
        """Target labels of section worker process `index`."""
        return {
            **self.where,
            "job": self.spec.scrape.worker_job,
            "instance": f"127.0.0.1:{9300 + index}",
            self.spec.scrape.worker_label: str(index),
        }

    def exporter(self, job: str, port: int) -> dict[str, str]:
        return {**self.where, "job": job, "instance": f"127.0.0.1:{port}"}

    def put(self, metric: str, labels: dict[str, str], values: str) -> None:
        self.series[_sel(metric, labels)] = values

    def section_worker(
        self, index: int, done: float = 0, failed: float = 0, start: int = 0
    ) -> None:
        """A live worker process from tick `start` on; `done` and `failed` tasks per tick."""
        labels = self.tier(index)
        busy = 0.0 if self.idle else 1.0
        late = f"_x{start - 1} " if start else ""
        self.put("up", labels, late + _flat(1))
        self.put(self.spec.workers.slots.metric, labels, late + _flat(SLOTS))
        self.put(self.spec.workers.running.metric, labels, late + _flat(SLOTS / 2 * busy))
        self.put(self.spec.targets.memory.metric.metric, labels, late + _flat(150 * 2**20))
        for outcome in SECTION_TASK_OUTCOMES:
            per_tick = {"completed": done, "failed": failed}.get(outcome, 0)
            self.tasks(index, outcome, per_tick, start)

    def tasks(self, index: int, outcome: str, per_tick: float, start: int = 0) -> None:
        labels = {**self.tier(index), "outcome": outcome}
        late = f"_x{start - 1} " if start else ""
        self.put("bookgen_section_tasks_total", labels, late + _ramp(per_tick))

    def kill(self, index: int, at: int, gone: int | None = None) -> None:
        """Worker `index` dies after tick `at`: its `up` turns 0 and its other series go stale,
        as Prometheus writes them; at tick `gone` its target leaves service discovery (a pod
        deleted, a process not restarted) and `up` goes stale too."""
        own = _sel("", self.tier(index)).removesuffix("}")
        for key, values in list(self.series.items()):
            labels = key[key.index("{") :] if "{" in key else ""
            if not (labels.startswith(own) and labels[len(own)] in ",}"):
                continue
            if key.startswith("up{"):
                self.series[key] = (
                    f"1x{at} 0x{LONG - at - 1}"
                    if gone is None
                    else f"1x{at} 0x{gone - at - 2} stale"
                )
            else:
                self.series[key] = values.replace(f"x{LONG}", f"x{at} stale")

    def drop(self, prefix: str) -> None:
        for key in [k for k in self.series if k.startswith(prefix)]:
            del self.series[key]

    def histogram(self, name: str, labels: dict[str, str], counts: dict[int, float]) -> None:
        """Observations per tick by bucket index (index len(buckets) means above the last)."""
        self.drop(_sel(f"{name}_bucket", {**self.worker, **labels}).removesuffix("}"))
        buckets = BY_NAME[name].buckets
        for j, bound in enumerate((*buckets, math.inf)):
            cumulative = sum(c for i, c in counts.items() if i <= j)
            self.set(f"{name}_bucket", {**labels, "le": names.le_string(bound)}, _ramp(cumulative))
        self.set(f"{name}_count", labels, _ramp(sum(counts.values())))

    def requests(self, ok: float, errors: float, status: str = "500") -> None:
        sel = {"method": "GET", "route": "/api/v1/status"}
        self.drop("bookgen_http_requests_total")
        self.set("bookgen_http_requests_total", {**sel, "status": "200"}, _ramp(ok))
        if errors:  # as in a real exposition: an error series appears with the first error
            self.set("bookgen_http_requests_total", {**sel, "status": status}, _ramp(errors))

    def books(self, completed: float, failed: float) -> None:
        self.set("bookgen_jobs_finished_total", {"outcome": "completed"}, _ramp(completed))
        self.set("bookgen_jobs_finished_total", {"outcome": "failed"}, _ramp(failed))

    def latency(self, fast: float, slow: float, slow_bound: float) -> None:
        buckets = BY_NAME["bookgen_http_request_duration_seconds"].buckets
        counts = {buckets.index(0.05): fast}
        counts[buckets.index(slow_bound)] = counts.get(buckets.index(slow_bound), 0) + slow
        self.histogram(
            "bookgen_http_request_duration_seconds",
            {"method": "GET", "route": "/api/v1/status"},
            counts,
        )

    def llm(self, ok: float, errors: float, cancelled: float = 0) -> None:
        labels = {
            "gen_ai_operation_name": "chat",
            "gen_ai_provider_name": "openrouter",
            "gen_ai_request_model": "bookgen-sim",
        }
        self.drop("gen_ai_client_operation_duration_seconds_count")
        self.set("gen_ai_client_operation_duration_seconds_count", labels, _ramp(ok))
        if errors:
            self.set(
                "gen_ai_client_operation_duration_seconds_count",
                {**labels, "error_type": "server_error"},
                _ramp(errors),
            )
        if cancelled:  # calls we cancelled ourselves: neither errors nor events of the provider
            self.set(
                "gen_ai_client_operation_duration_seconds_count",
                {**labels, "error_type": "cancelled"},
                _ramp(cancelled),
            )

    def book_durations(self, per_tick: float, index: int) -> None:
        self.histogram("bookgen_job_duration_seconds", {"outcome": "completed"}, {index: per_tick})

    def build(self) -> World:
        busy = 0.0 if self.idle else 1.0
        self.requests(ok=100 * busy, errors=0)
        self.latency(fast=100 * busy, slow=0, slow_bound=0.05)
        self.llm(ok=50 * busy, errors=0)
        for reason in ("queue_full", "rate_limited", "invalid"):
            self.set("bookgen_jobs_rejected_total", {"reason": reason}, _flat(0))
        self.books(completed=0.05 * busy, failed=0)
        self.book_durations(0.05 * busy, self.book_bucket(above=False))
        self.set("bookgen_jobs_queued", {}, _flat(0))
        self.set(
            self.spec.targets.book_wait.oldest_queued.metric, {}, _flat(self.book_wait / 4 * busy)
        )
        self.set("bookgen_job_queue_capacity", {}, _flat(200))
        self.set("bookgen_job_oldest_running_age_seconds", {}, _flat(self.book_max / 4 * busy))
        self.set("bookgen_process_resident_memory_bytes", {}, _flat(100 * 2**20))
        self.set("up", {}, _flat(1))
        llm = {**self.where, "job": self.spec.scrape.llm_job, "instance": "127.0.0.1:9200"}
        self.series[_sel("up", llm)] = _flat(1)
        self.worker_tier()
        return self

    def worker_tier(self) -> None:
        """Two section workers, the API's whole-service figures and the exporters, all up."""
        busy = 0.0 if self.idle else 1.0
        w, sc = self.spec.workers, self.spec.scrape
        self.set(w.expected.metric, {}, _flat(WORKERS))
        self.set(w.sections.metric, {"state": "queued"}, _flat(2 * busy))
        self.set(w.sections.metric, {"state": "running"}, _flat(WORKERS * SLOTS / 2 * busy))
        self.set(w.backlog.oldest_queued.metric, {}, _flat(self.max_wait / 4 * busy))
        for index in range(WORKERS):
            self.section_worker(index, done=5 * busy)
        broker = self.exporter(sc.broker_job, REDIS_EXPORTER)
        store = self.exporter(sc.store_job, PG_EXPORTER)
        for labels, server_up in ((broker, names.BROKER_UP), (store, names.STORE_UP)):
            self.put("up", labels, _flat(1))
            self.put(server_up, labels, _flat(1))
        self.put("up", self.exporter(sc.celery_job, CELERY_EXPORTER), _flat(1))

    def no_worker_tier(self) -> None:
        """In-process jobs: no worker expected, no worker, broker or store target."""
        sc = self.spec.scrape
        for job in (sc.worker_job, sc.broker_job, sc.store_job, sc.celery_job):
            for key in [k for k in self.series if f'job="{job}"' in k]:
                del self.series[key]
        self.set(self.spec.workers.expected.metric, {}, _flat(0))
        self.drop(self.spec.workers.sections.metric + "{")
        self.set(self.spec.workers.backlog.oldest_queued.metric, {}, _flat(0))

    @property
    def max_wait(self) -> float:
        return float(self.tick_s * self.spec.workers.backlog.max_wait / 60)

    @property
    def book_wait(self) -> float:
        return float(self.tick_s * self.spec.targets.book_wait.max_wait / 60)

    @property
    def book_max(self) -> float:
        return float(self.tick_s * self.spec.targets.book_time.max_seconds / 60)

    def book_bucket(self, above: bool) -> int:
        buckets = BY_NAME[self.spec.targets.book_time.histogram].buckets
        limit = buckets.index(self.book_max)
        return limit + 1 if above else limit


# --- scenarios ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Firing:
    ticks: int
    value: float
    labels: dict[str, str]
    later: tuple[int, ...] = ()  # further ticks at which the same alerts are asserted
    # Alerts of the same name (by key) that fire as well, with their value and the same labels.
    others: tuple[tuple[str, float], ...] = ()


def _bad_ratio(world: World, slo: RatioSLO, ratio: float) -> None:
    ok, bad = 100 * (1 - ratio), 100 * ratio
    if slo.latency is not None:
        world.latency(fast=ok, slow=bad, slow_bound=0.3)
    elif slo.errors is not None and slo.errors.metric.startswith("gen_ai"):
        world.llm(ok=ok, errors=bad)
    elif slo.errors is not None and slo.errors.metric == "bookgen_jobs_finished_total":
        world.books(completed=ok / 100, failed=bad / 100)
    else:
        world.requests(ok=ok, errors=bad)


def _api(spec: Spec) -> dict[str, str]:
    """The group labels of a figure aggregated from the API processes' series."""
    return {names.JOB_LABEL: spec.scrape.api_job}


def _tier(spec: Spec) -> dict[str, str]:
    """The group labels of a figure of the worker tier."""
    return {names.JOB_LABEL: spec.scrape.worker_job}


def _scenario(spec: Spec, alert: Alert, world: World) -> Firing:
    t = spec.targets
    w = world.worker
    api = _api(spec)
    if alert.key.startswith("burn_"):
        slo_name = alert.key.removeprefix("burn_").rsplit("_", 1)[0]
        slo = spec.slo(slo_name)
        ratio = 0.9 if alert.severity == "critical" else 2 * slo.error_budget
        _bad_ratio(world, slo, ratio)
        ticks = 10 if alert.severity == "critical" else 30
        # No `for`: a burn fast enough to page passes the ticket's thresholds too (Alertmanager
        # inhibits the ticket); a ticket-sized burn stays under the page's.
        others = ((f"burn_{slo_name}_warning", ratio),) if alert.severity == "critical" else ()
        return Firing(ticks, ratio, {**api, names.SLO_LABEL: slo_name}, others=others)
    if alert.key == "api_latency":
        world.latency(fast=0, slow=100, slow_bound=0.5)
        return Firing(10, 0.3 + 0.2 * t.api_latency.quantile, api)
    if alert.key == "error_rate":
        world.requests(ok=95, errors=5)
        return Firing(10, 0.05, {**api, names.SLO_LABEL: t.error_rate.slo})
    if alert.key == "llm_errors":
        world.llm(ok=80, errors=20)
        return Firing(10, 0.2, {**api, names.SLO_LABEL: t.llm_errors.slo})
    if alert.key == "memory":
        world.set(t.memory.metric.metric, {}, _flat(3 * 2**30))
        return Firing(10, 3 * 2**30, w)
    if alert.key == "memory_leak":
        step, start, ticks = 8 * 2**20, 2**30, 90
        world.set(t.memory.metric.metric, {}, _ramp(step, start))
        horizon_ticks = t.memory.leak.horizon / 60
        return Firing(ticks, start + step * (ticks + horizon_ticks), w)
    if alert.key == "throughput":
        world.set("bookgen_jobs_queued", {}, _flat(5))
        world.set("bookgen_jobs_finished_total", {"outcome": "completed"}, _flat(0))
        return Firing(120, 0, {})
    if alert.key == "book_time":
        world.book_durations(0.1, world.book_bucket(above=True))
        buckets = BY_NAME[t.book_time.histogram].buckets
        low, high = world.book_max, buckets[world.book_bucket(above=True)]
        return Firing(90, low + (high - low) * t.book_time.quantile, api)
    if alert.key == "job_stuck":
        world.set(t.book_time.oldest_running.metric, {}, _ramp(world.tick_s))
        return Firing(40, 40 * world.tick_s, w)
    if alert.key == "book_wait":
        world.set(t.book_wait.oldest_queued.metric, {}, _ramp(world.tick_s))
        ticks = round(world.book_wait / world.tick_s) + 4
        return Firing(ticks, ticks * world.tick_s, api)
    if alert.key == "queue_full":
        world.set("bookgen_jobs_rejected_total", {"reason": "queue_full"}, _ramp(1))
        world.set("bookgen_jobs_queued", {}, _flat(200))
        return Firing(10, 5, api)
    if alert.key == "target_down":
        world.set("up", {}, _flat(0))
        return Firing(5, 0, w)
    if alert.key == "target_absent":
        world.drop('up{job="' + spec.scrape.api_job + '"')
        return Firing(5, 1, {"job": spec.scrape.api_job})
    if alert.key == "watchdog":
        return Firing(5, 1, {})
    return _worker_scenario(spec, alert, world)


def _worker_scenario(spec: Spec, alert: Alert, world: World) -> Firing:
    sc = spec.scrape
    if alert.key == "workers_missing":
        # Killed: up 0 from tick 11, then its target leaves discovery; asserted on both sides.
        world.kill(1, at=10, gone=16)
        return Firing(14, 1, _tier(spec), later=(30,))
    if alert.key == "workers_none":
        for index in range(WORKERS):
            world.kill(index, at=10, gone=16)
        return Firing(14, WORKERS, _tier(spec), later=(30,), others=(("workers_missing", WORKERS),))
    if alert.key == "section_backlog":
        world.set(spec.workers.backlog.oldest_queued.metric, {}, _ramp(world.tick_s))
        return Firing(10, 10 * world.tick_s, _api(spec))
    if alert.key == "section_failures":
        world.section_worker(0, done=10, failed=1)
        world.section_worker(1)
        world.tasks(1, "gave_up", 1)
        # Not finished: counting these would hold the ratio under the limit.
        world.tasks(1, "duplicate", 20)
        world.tasks(1, "handed_back", 20)
        return Firing(15, 2 / 12, _tier(spec))
    if alert.key == "broker_down":
        broker = world.exporter(sc.broker_job, REDIS_EXPORTER)
        world.put(names.BROKER_UP, broker, _flat(0))
        return Firing(5, 0, broker)
    if alert.key == "store_down":
        store = world.exporter(sc.store_job, PG_EXPORTER)
        world.put(names.STORE_UP, store, _flat(0))
        return Firing(5, 0, store)
    raise KeyError(f"no promtool scenario for alert {alert.key}")


Extra = tuple[str, str, Callable[[World], Firing]]


def _extra_firing(spec: Spec) -> list[Extra]:
    """(alert key, title, change): further ways an alert must fire."""
    sc = spec.scrape

    def static_kill(w: World) -> Firing:
        w.kill(1, at=10)
        return Firing(30, 1, _tier(spec))

    def rabbitmq_down(w: World) -> Firing:
        for key in [k for k in w.series if f'job="{sc.broker_job}"' in k]:
            del w.series[key]
        rabbit = w.exporter(sc.broker_job, RABBITMQ)
        w.put("up", rabbit, f"1x4 0x{LONG - 5}")
        return Firing(10, 0, rabbit)

    def store_exporter_down(w: World) -> Firing:
        store = w.exporter(sc.store_job, PG_EXPORTER)
        w.put(names.STORE_UP, store, "1x4 stale")
        w.put("up", store, f"1x4 0x{LONG - 5}")
        return Firing(10, 0, store)

    return [
        ("workers_missing", "a killed worker whose target stays (up 0)", static_kill),
        ("broker_down", "a RabbitMQ broker (its own plugin, no exporter) down", rabbitmq_down),
        ("store_down", "the store's exporter down (pg_up goes stale)", store_exporter_down),
    ]


NearMiss = tuple[tuple[str, ...], str, int, Callable[[World], None]]


def _near_misses(spec: Spec) -> list[NearMiss]:
    """Per threshold alert, a breach-like world just on the good side of its target."""
    t = spec.targets
    rss = t.memory.metric.metric
    lat = spec.slo(t.api_latency.slo).latency
    assert lat is not None
    err_budget = spec.slo(t.error_rate.slo).error_budget
    llm_budget = spec.slo(t.llm_errors.slo).error_budget

    def latency(w: World) -> None:
        w.latency(fast=0, slow=100, slow_bound=lat.bound)  # every request just within the bound

    def few_slow(w: World) -> None:
        # Every request slow, one fewer per window than the floor asks for.
        w.latency(
            fast=0,
            slow=_per_tick_below(t.api_latency.min_events, t.api_latency.window),
            slow_bound=0.5,
        )

    def errors(w: World) -> None:
        w.requests(ok=100 * (1 - err_budget / 2), errors=100 * err_budget / 2)

    def few_errors(w: World) -> None:
        per_tick = _per_tick_below(t.error_rate.min_events, t.error_rate.window)
        w.requests(ok=per_tick / 2, errors=per_tick / 2)

    def llm(w: World) -> None:
        w.llm(ok=100 * (1 - llm_budget / 2), errors=100 * llm_budget / 2, cancelled=100)

    def few_llm(w: World) -> None:
        per_tick = _per_tick_below(t.llm_errors.min_events, t.llm_errors.window)
        w.llm(ok=per_tick / 2, errors=per_tick / 2)

    def book_waiting(w: World) -> None:
        w.set(t.book_wait.oldest_queued.metric, {}, _flat(w.book_wait * 0.9))

    def memory(w: World) -> None:
        w.set(rss, {}, _flat(t.memory.max_bytes * 0.95))

    def slow_growth(w: World) -> None:
        w.set(rss, {}, _ramp(2**20, 2**30))  # 1 MiB per tick: far from the limit in the horizon

    def book(w: World) -> None:
        w.book_durations(0.1, w.book_bucket(above=False))

    def one_slow_book(w: World) -> None:
        per_tick = _per_tick_below(t.book_time.min_events, t.book_time.window)
        w.book_durations(per_tick, w.book_bucket(above=True))

    def stuck(w: World) -> None:
        w.set(t.book_time.oldest_running.metric, {}, _flat(w.book_max * 0.9))

    def in_process(w: World) -> None:
        w.no_worker_tier()

    def replaced(w: World) -> None:
        w.kill(1, at=10, gone=12)
        w.section_worker(2, done=5, start=11)

    def waiting(w: World) -> None:
        w.set(spec.workers.backlog.oldest_queued.metric, {}, _flat(w.max_wait * 0.9))

    def some_failures(w: World) -> None:
        ratio = spec.workers.failures.max_ratio / 2
        w.section_worker(0, done=100 * (1 - ratio), failed=100 * ratio)
        w.tasks(0, "duplicate", 50)

    def few_tasks(w: World) -> None:
        # Half of them fail, but fewer than the floor end in the window.
        per_tick = spec.workers.failures.min_tasks / (spec.workers.failures.window / 60) / 2
        w.section_worker(0, done=per_tick / 2, failed=per_tick / 2)
        w.section_worker(1)

    tier = ("workers_missing", "section_backlog", "section_failures", "broker_down", "store_down")
    return [
        (("api_latency",), "every request just within the latency bound", 10, latency),
        (("api_latency",), "every request slow, below the request floor", 10, few_slow),
        (("error_rate",), "errors at half the budget", 10, errors),
        (("error_rate",), "half the requests fail, below the request floor", 10, few_errors),
        (("llm_errors",), "LLM errors at half the budget, many calls cancelled", 10, llm),
        (("llm_errors",), "half the LLM calls fail, below the call floor", 10, few_llm),
        (("book_wait",), "the oldest book waiting for 90% of the limit", 10, book_waiting),
        (("memory",), "RSS at 95% of the limit", 10, memory),
        (("memory_leak",), "RSS growing slowly", 90, slow_growth),
        (("book_time",), "books just within the time limit", 90, book),
        (("book_time",), "slow books, fewer than the floor in the window", 90, one_slow_book),
        (("job_stuck",), "a job at 90% of the time limit", 40, stuck),
        (tier, "in-process jobs, no worker tier at all", 30, in_process),
        (("workers_missing",), "a worker replaced by a new process", 13, replaced),
        (("section_backlog",), "the oldest section queued for 90% of the limit", 10, waiting),
        (("section_failures",), "section failures at half the limit", 40, some_failures),
        (("section_failures",), "half the section tasks fail, below the floor", 60, few_tasks),
    ]


def _per_tick_below(floor: int, window_s: float) -> float:
    """Events per tick that put one event fewer than `floor` in a window of `window_s`."""
    return (floor - 1) / (window_s / 60)


def _exp_alert(spec: Spec, alert: Alert, firing: Firing) -> dict[str, Any]:
    labels = {**firing.labels, **alert_static_labels(spec, alert)}
    rendered = {
        key: render_template(text, firing.value, labels)
        for key, text in alert_annotations(spec, alert).items()
    }
    return {"exp_labels": dict(sorted(labels.items())), "exp_annotations": rendered}


def _duration(ticks: float, world: World) -> str:
    return names.format_duration(round(ticks * world.tick_s))


def _test(name: str, world: World, asserts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "interval": names.format_duration(world.tick_s),
        "input_series": [{"series": k, "values": v} for k, v in sorted(world.series.items())],
        "alert_rule_test": asserts,
    }


def _silent(all_alerts: list[Alert], spec: Spec, world: World, ticks: int) -> list[dict[str, Any]]:
    asserts = []
    for name in sorted({a.name for a in all_alerts}):
        exp: list[dict[str, Any]] = []
        if name == names.WATCHDOG:
            watchdog = next(a for a in all_alerts if a.name == name)
            exp = [_exp_alert(spec, watchdog, Firing(ticks, 1, {}))]
        asserts.append({"eval_time": _duration(ticks, world), "alertname": name, "exp_alerts": exp})
    return asserts


def _identity(spec: Spec, record: str, slo: str, window: float) -> str:
    """An SLO series as the test worlds record it: every SLO's events come from the API job."""
    labels = {**slo_labels(spec, slo, names.window_suffix(int(window))), **_api(spec)}
    return _sel(record, dict(sorted(labels.items())))


def _healthy_slis(spec: Spec, world: World) -> list[dict[str, Any]]:
    """Without errors every SLI is 0 and every budget whole: error series need not exist. Every
    SLO series carries its identity labels: service, slo and window."""
    first = spec.windows[0]
    checks = []
    for record, window, value in (
        (names.sli_error_rule(names.window_suffix(first)), first, 0),
        (names.sli_error_rule(names.window_suffix(spec.period)), spec.period, 0),
        (names.BUDGET_REMAINING_RULE, spec.period, 1),
    ):
        for slo in sorted(spec.slos):
            checks.append(
                {
                    "expr": f'{record}{{{names.SLO_LABEL}="{slo}"}}',
                    "eval_time": _duration(120, world),
                    "exp_samples": [
                        {"labels": _identity(spec, record, slo, window), "value": value}
                    ],
                }
            )
    return checks


def _idle_slis(spec: Spec, world: World) -> list[dict[str, Any]]:
    """No traffic records no SLI sample at all (a NaN would poison the period average)."""
    first = names.sli_error_rule(names.window_suffix(spec.windows[0]))
    period = names.sli_error_rule(names.window_suffix(spec.period))
    return [
        {"expr": f"{record}", "eval_time": _duration(120, world), "exp_samples": []}
        for record in (first, period, names.BUDGET_REMAINING_RULE)
    ]


def _period_after_idle(spec: Spec, world: World) -> list[dict[str, Any]]:
    """A quarter of the requests fail for an hour, then nothing comes for an hour: the period
    SLI stays the mean of the samples that had traffic, not NaN."""
    slo = next(name for name, s in sorted(spec.slos.items()) if s.errors is not None)
    world.requests(ok=0, errors=0)
    sel = {"method": "GET", "route": "/api/v1/status"}
    world.set("bookgen_http_requests_total", {**sel, "status": "200"}, f"0+75x60 4500x{LONG - 60}")
    world.set("bookgen_http_requests_total", {**sel, "status": "500"}, f"0+25x60 1500x{LONG - 60}")
    period = names.sli_error_rule(names.window_suffix(spec.period))
    labels = _identity(spec, period, slo, spec.period).removeprefix(period)
    return [
        {
            # Rounded: a mean of ratios of extrapolated rates, 0.25 give or take the last bit.
            "expr": f'round({period}{{{names.SLO_LABEL}="{slo}"}}, 0.001)',
            "eval_time": _duration(120, world),
            "exp_samples": [{"labels": labels, "value": 0.25}],
        }
    ]


def _firing(spec: Spec, alert: Alert, firing: Firing, world: World) -> list[dict[str, Any]]:
    everything = {a.key: a for a in alerts(spec, _profile_of(spec, world))}
    expected = [_exp_alert(spec, alert, firing)]
    for key, value in firing.others:
        other = Firing(firing.ticks, value, firing.labels)
        expected.append(_exp_alert(spec, everything[key], other))
    expected.sort(key=lambda e: str(e["exp_labels"]))
    return [
        {"eval_time": _duration(ticks, world), "alertname": alert.name, "exp_alerts": expected}
        for ticks in (firing.ticks, *firing.later)
    ]


def _profile_of(spec: Spec, world: World) -> str:
    return next(p for p in names.PROFILES if 60 // spec.profile(p).time_scale == world.tick_s)


def _sample(expr: str, ticks: int, value: float, world: World) -> dict[str, Any]:
    """A worker-tier record: one series under the workers' job."""
    labels = _sel(expr, _tier(world.spec))
    return {
        "expr": expr,
        "eval_time": _duration(ticks, world),
        "exp_samples": [{"labels": labels, "value": value}],
    }


def _healthy_workers(world: World) -> list[dict[str, Any]]:
    """Live workers counted; load = (queued + running sections) / slots of live workers."""
    queued, running = 2, WORKERS * SLOTS / 2
    return [
        _sample(WORKERS_UP, 120, WORKERS, world),
        _sample(WORKER_LOAD, 120, (queued + running) / (WORKERS * SLOTS), world),
    ]


def _after_kill(world: World, firing: Firing) -> list[dict[str, Any]]:
    """Once a killed worker's series are gone its slots no longer count: the load rises."""
    queued, running = 2, WORKERS * SLOTS / 2
    last = firing.later[-1]
    return [
        _sample(WORKERS_UP, last, WORKERS - 1, world),
        _sample(WORKER_LOAD, last, (queued + running) / ((WORKERS - 1) * SLOTS), world),
    ]


# --- two deployments in one Prometheus ----------------------------------------------------------

NAMESPACES = ("bookgen", "bookgen-staging")


def _selected(spec: Spec, namespace: str) -> bool:
    """Whether the rules read a namespace (slo.yaml `selectors.namespace`)."""
    matcher = spec.selectors.namespace
    if not matcher:
        return True
    found = re.fullmatch(r'\s*\w+\s*(=~|!~|!=|=)\s*"(.*)"\s*', matcher)
    assert found is not None, matcher
    op, value = found.groups()
    return {
        "=": namespace == value,
        "!=": namespace != value,
        "=~": re.fullmatch(value, namespace) is not None,
        "!~": re.fullmatch(value, namespace) is None,
    }[op]


def two_namespaces(spec: Spec, tick_s: int) -> list[dict[str, Any]]:
    """Both namespaces healthy but one answering 90% 5xx: its SLI and its alerts move, the other
    namespace's SLI stays 0 and none of its alerts fires. Then the reverse. A namespace the
    selectors leave out has no SLI and no alert at all."""
    profile = next(p for p in names.PROFILES if 60 // spec.profile(p).time_scale == tick_s)
    by_key = {a.key: a for a in alerts(spec, profile)}
    slo_name = spec.targets.error_rate.slo
    slo, ratio, ticks = spec.slo(slo_name), 0.9, 10
    sli = names.sli_error_rule(names.window_suffix(spec.windows[0]))
    tests = []
    for bad, good in (NAMESPACES, NAMESPACES[::-1]):
        world = World(spec, tick_s)
        for namespace in NAMESPACES:
            one = World(spec, tick_s, namespace=namespace).build()
            if namespace == bad:
                _bad_ratio(one, slo, ratio)
            world.series.update(one.series)
        labels = {**_api(spec), names.NAMESPACE_LABEL: bad, names.SLO_LABEL: slo_name}
        asserts = []
        for key, others in (
            (f"burn_{slo_name}_critical", ((f"burn_{slo_name}_warning", ratio),)),
            ("error_rate", ()),
        ):
            firing = Firing(ticks, ratio, labels, others=others)
            if _selected(spec, bad):
                asserts += _firing(spec, by_key[key], firing, world)
            else:
                asserts += _silent([by_key[key]], spec, world, ticks)
        test = _test(
            f"errors only in namespace {bad}: its SLI and alerts move, {good}'s stay silent",
            world,
            asserts,
        )
        window = names.window_suffix(spec.windows[0])
        identity = {**slo_labels(spec, slo_name, window), **_api(spec)}
        test["promql_expr_test"] = [
            {
                # Rounded: a ratio of extrapolated rates.
                "expr": f'round({sli}{{{names.SLO_LABEL}="{slo_name}"}}, 0.001)',
                "eval_time": _duration(ticks, world),
                "exp_samples": [
                    {
                        "labels": _sel("", {**identity, names.NAMESPACE_LABEL: namespace}),
                        "value": ratio if namespace == bad else 0,
                    }
                    for namespace in NAMESPACES
                    if _selected(spec, namespace)
                ],
            }
        ]
        tests.append(test)
    return tests


# --- burn-rate edges ----------------------------------------------------------------------------

EDGE = 0.03  # how far above or below its factor a pair's edge case sits
CLEAN = 0.9  # every other pair stays under this share of its own threshold
HISTORY_WEIGHT = 4  # events per tick before the burn, relative to during it
EVENTS = 100  # events per tick during the burn
# Rules are evaluated every EDGE_STEP ticks in the edge tests (their own file): the windows still
# read samples a tick apart, but days of history cost hundreds of evaluations, not thousands.
EDGE_STEP = 30
Segment = tuple[int, float, float]  # ticks, events per tick, error ratio


def _counter(segments: list[Segment], part: Callable[[float, float], float]) -> str:
    """promtool values of a counter that grows by part(events, ratio) per tick, segment by segment;
    segment i adds its ticks' increments after the first sample at 0."""
    values, last = [], 0.0
    for i, (ticks, events, ratio) in enumerate(segments):
        step = round(part(events, ratio), 6)
        start = 0.0 if i == 0 else round(last + step, 6)
        count = ticks if i == 0 else ticks - 1
        values.append(f"{_go_value(start)}+{_go_value(step)}x{count}")
        last = start + step * count
    return " ".join(values)


def _window_ratios(segments: list[Segment], window: int) -> tuple[float, float]:
    """The error ratio over the last `window` ticks as Prometheus 2.x (range closed at its start)
    and 3.x (open at its start) see it; the start never lies on a segment change."""
    errors, events = [], []
    for ticks, per_tick, ratio in segments:
        errors += [per_tick * ratio] * ticks
        events += [per_tick] * ticks
    ratios = []
    for increments in (window, window - 1):
        e, n = sum(errors[-increments:]), sum(events[-increments:])
        ratios.append(e / n)
    return ratios[0], ratios[1]


def _burn_world(spec: Spec, slo: RatioSLO, world: World, segments: list[Segment]) -> float:
    """The SLO's event series over `segments`; returns the burn's exact error ratio."""
    ok_step = round(EVENTS * (1 - segments[-1][2]), 6)
    bad_step = round(EVENTS * segments[-1][2], 6)

    def ok(events: float, ratio: float) -> float:
        return events * (1 - ratio)

    def bad(events: float, ratio: float) -> float:
        return events * ratio

    def every(events: float, ratio: float) -> float:
        return events

    if slo.latency is not None:
        name = slo.latency.histogram
        route = {"method": "GET", "route": "/api/v1/status"}
        for bound in (*BY_NAME[name].buckets, math.inf):
            # Good requests in the 0.05 s bucket, slow ones in the first bucket above the bound.
            part = every if bound > slo.latency.bound else ok if bound >= 0.05 else None
            values = _counter(segments, part) if part else _flat(0)
            world.set(f"{name}_bucket", {**route, "le": names.le_string(bound)}, values)
        world.set(f"{name}_count", route, _counter(segments, every))
    elif slo.errors is not None and slo.errors.metric.startswith("gen_ai"):
        labels = {
            "gen_ai_operation_name": "chat",
            "gen_ai_provider_name": "openrouter",
            "gen_ai_request_model": "bookgen-sim",
        }
        metric = "gen_ai_client_operation_duration_seconds_count"
        world.set(metric, labels, _counter(segments, ok))
        world.set(metric, {**labels, "error_type": "server_error"}, _counter(segments, bad))
    elif slo.errors is not None and slo.errors.metric == "bookgen_jobs_finished_total":
        metric = "bookgen_jobs_finished_total"
        world.set(metric, {"outcome": "completed"}, _counter(segments, ok))
        world.set(metric, {"outcome": "failed"}, _counter(segments, bad))
    else:
        route = {"method": "GET", "route": "/api/v1/status"}
        world.set("bookgen_http_requests_total", {**route, "status": "200"}, _counter(segments, ok))
        world.set(
            "bookgen_http_requests_total", {**route, "status": "500"}, _counter(segments, bad)
        )
    return bad_step / (ok_step + bad_step)


def _edge_segments(spec: Spec, slo: RatioSLO, pair: BurnRate, ratio: float) -> list[Segment]:
    """A burn at `ratio` covering the pair's long window (plus its short one as a margin), after
    the least clean history (in hours, heavier traffic) that keeps every other pair silent."""
    budget = slo.error_budget
    burn = math.ceil((pair.long + pair.short) / 60 / EDGE_STEP) * EDGE_STEP
    for hours in range(0, max(spec.windows) // 3600 + 1):
        history = [(hours * 60, EVENTS * HISTORY_WEIGHT, 0.0)] if hours else []
        segments = [*history, (burn, float(EVENTS), ratio)]
        if all(
            min(max(_window_ratios(segments, w // 60)) for w in (other.long, other.short))
            < CLEAN * other.factor * budget
            for other in spec.burn_rates
            if other != pair
        ):
            return segments
    raise ValueError(f"no history keeps the other pairs clean around {pair}")


def _burn_edges(spec: Spec, tick_s: int) -> list[dict[str, Any]]:
    """Per SLO and burn pair: just above its factor the pair's alert fires, just below it stays
    silent, and every other pair's windows stay clean in both."""
    profile = next(p for p in names.PROFILES if 60 // spec.profile(p).time_scale == tick_s)
    by_key = {a.key: a for a in alerts(spec, profile)}
    tests = []
    for name, slo in sorted(spec.slos.items()):
        for pair in spec.burn_rates:
            for side, scale in (("above", 1 + EDGE), ("below", 1 - EDGE)):
                world = World(spec, tick_s)
                ratio = pair.factor * slo.error_budget * scale
                segments = _edge_segments(spec, slo, pair, ratio)
                exact = _burn_world(spec, slo, world, segments)
                for window in (pair.long, pair.short):
                    seen = _window_ratios(segments, window // 60)
                    assert all(math.isclose(r, ratio) for r in seen), "a window outside the burn"
                end = sum(ticks for ticks, _, _ in segments)
                alert = by_key[f"burn_{name}_{pair.severity}"]
                exp = []
                if side == "above":
                    firing = Firing(end, exact, {**_api(spec), names.SLO_LABEL: name})
                    exp = [_exp_alert(spec, alert, firing)]
                    # The expectation holds wherever Prometheus's float lands.
                    for nudge in (1 - 1e-9, 1 + 1e-9):
                        again = _exp_alert(spec, alert, Firing(end, exact * nudge, firing.labels))
                        assert again == exp[0], "an expected value on a rounding edge"
                how = f"{_num(pair.factor)}x over {names.format_duration(pair.long)} and " + (
                    names.format_duration(pair.short)
                )
                title = (
                    f"{alert.name}: {name} errors {side} {how} ({_num(round(scale, 4))}x), "
                    f"other pairs clean: {'fires' if exp else 'silent'}"
                )
                tests.append(
                    _test(
                        title,
                        world,
                        [
                            {
                                "eval_time": _duration(end, world),
                                "alertname": alert.name,
                                "exp_alerts": exp,
                            }
                        ],
                    )
                )
    return tests


def _num(value: float) -> str:
    return repr(float(value)).removesuffix(".0") if float(value).is_integer() else repr(value)


def render_burn_edges(spec: Spec, profile: str, rules_file: str) -> dict[str, Any]:
    """A promtool test file of the burn-rate edge cases for the rules file of a profile."""
    tick_s = 60 // spec.profile(profile).time_scale
    return {
        "rule_files": [rules_file],
        "evaluation_interval": names.format_duration(tick_s * EDGE_STEP),
        # Records first: with steps longer than the lookback, an alert evaluated before them
        # would read nothing (promtool orders groups by name unless told).
        "group_eval_order": [g["name"] for g in render_rules(spec, profile)["groups"]],
        "tests": _burn_edges(spec, tick_s),
    }


def render(spec: Spec, profile: str, rules_file: str) -> dict[str, Any]:
    """A promtool test file for the rules file of a profile (path relative to the test file)."""
    scale = spec.profile(profile).time_scale
    tick_s = 60 // scale
    if tick_s * scale != 60:
        raise ValueError("time_scale must divide 60 so a tick is a whole number of seconds")
    everything = alerts(spec, profile)

    def world(idle: bool = False) -> World:
        return World(spec, tick_s, idle).build()

    healthy = _test(
        "healthy traffic: only Watchdog fires; SLIs are 0, not empty",
        world(),
        _silent(everything, spec, world(), 120),
    )
    healthy["promql_expr_test"] = _healthy_slis(spec, world()) + _healthy_workers(world())
    tests = [
        healthy,
        _test(
            "idle system: only Watchdog fires", world(True), _silent(everything, spec, world(), 120)
        ),
    ]
    busy = world()
    busy.set("bookgen_jobs_queued", {}, _flat(5))
    tests.append(
        _test(
            "jobs waiting and books completing on target: throughput silent",
            busy,
            _silent([a for a in everything if a.key == "throughput"], spec, busy, 120),
        )
    )
    idle = world(True)
    tests[1]["promql_expr_test"] = _idle_slis(spec, idle)
    after = world()
    checks = _period_after_idle(spec, after)
    tests.append(
        _test(
            "an idle hour after an hour of traffic: the period SLI is the mean, not NaN", after, []
        )
    )
    tests[-1]["promql_expr_test"] = checks
    abusive = world()
    abusive.requests(ok=100, errors=400, status="429")
    abusive.set("bookgen_jobs_rejected_total", {"reason": "rate_limited"}, _ramp(50))
    tests.append(
        _test(
            "one client far over its rate limit (4 in 5 requests answered 429): only Watchdog "
            "fires",
            abusive,
            _silent(everything, spec, abusive, 10) + _silent(everything, spec, abusive, 120),
        )
    )
    # Rounded: the ratio of two extrapolated rates is 0.8 give or take the last bit.
    throttled = f"round({throttled_rule(spec)}, 0.001)"
    tests[-1]["promql_expr_test"] = [
        {
            "expr": throttled,
            "eval_time": _duration(120, abusive),
            "exp_samples": [{"labels": _sel("", _api(spec)), "value": 0.8}],
        }
    ]
    for keys, title, ticks, change in _near_misses(spec):
        w = world()
        change(w)
        chosen = [a for a in everything if a.key in keys]
        silenced = ", ".join(sorted({a.name for a in chosen}))
        tests.append(_test(f"{title}: {silenced} silent", w, _silent(chosen, spec, w, ticks)))
    by_key = {a.key: a for a in everything}
    for alert in everything:
        w = world()
        firing = _scenario(spec, alert, w)
        test = _test(f"{alert.name} ({alert.severity}) fires", w, _firing(spec, alert, firing, w))
        if alert.key == "workers_missing":
            test["promql_expr_test"] = _after_kill(w, firing)
        tests.append(test)
    for key, title, fire in _extra_firing(spec):
        w = world()
        firing = fire(w)
        alert = by_key[key]
        tests.append(_test(f"{title}: {alert.name} fires", w, _firing(spec, alert, firing, w)))
    tests += two_namespaces(spec, tick_s)
    return {
        "rule_files": [rules_file],
        "evaluation_interval": names.format_duration(tick_s),
        "tests": tests,
    }
