"""Rule shapes: SLI ratios of sums, workbook burn-rate pairs, the fast profile's scaling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bookgen.slo import conventions as names
from bookgen.slo.rules import Alert, alerts, fast_profile_table, render
from bookgen.slo.spec import Spec


def _records(spec: Spec, profile: str) -> list[dict[str, object]]:
    return [r for g in render(spec, profile)["groups"] for r in g["rules"] if "record" in r]


def test_sli_rules_for_every_slo_and_window(spec: Spec) -> None:
    records = _records(spec, "default")
    for slo in spec.slos:
        for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d"):
            matching = [
                r
                for r in records
                if r["record"] == f"slo:sli_error:ratio_rate{window}"
                and r.get("labels") == {"service": "bookgen", "slo": slo, "window": window}
            ]
            assert len(matching) == 1, (slo, window)
            expr = str(matching[0]["expr"])
            numerator, denominator = expr.split("\n/\n")
            assert "sum by (namespace, job) (rate(" in numerator
            # No events, no sample: an idle window must not record NaN.
            assert denominator.startswith("(sum by (namespace, job) (rate(")
            assert denominator.endswith(") > 0)")
            # A bare vector(0) has no namespace or job: it would match no group.
            assert "vector(0)" not in expr
            assert f"[{window}]" in expr


def test_period_sli_averages_the_5m_sli_as_sloth_does(spec: Spec) -> None:
    for profile, period in (("default", "30d"), ("fast", "12h")):
        records = _records(spec, profile)
        for slo in spec.slos:
            (rule,) = [
                r
                for r in records
                if r["record"] == "slo:sli_error:ratio_rate30d"
                and r["labels"] == {"service": "bookgen", "slo": slo, "window": "30d"}
            ]
            base = f'slo:sli_error:ratio_rate5m{{service="bookgen",slo="{slo}"}}[{period}]'
            assert rule["expr"] == f"sum_over_time({base})\n/\ncount_over_time({base})"
            assert "rate(" not in str(rule["expr"])  # never raw series over the whole period
            names_in_order = [str(r["record"]) for r in records]
            assert names_in_order.index("slo:sli_error:ratio_rate5m") < names_in_order.index(
                "slo:sli_error:ratio_rate30d"
            )


def test_every_slo_series_carries_its_identity(spec: Spec) -> None:
    slo_records = [r for r in _records(spec, "default") if str(r["record"]).startswith("slo:")]
    assert len(slo_records) == len(spec.slos) * (len(spec.windows) + 1 + 3)
    for rule in slo_records:
        labels = rule["labels"]
        assert isinstance(labels, dict) and set(labels) == {"service", "slo", "window"}, rule


def test_latency_sli_uses_the_exact_bucket_string(spec: Spec) -> None:
    records = _records(spec, "default")
    latency = [r for r in records if r.get("labels") == {"slo": "api_latency"}]
    assert all('le="0.2"' in str(r["expr"]) for r in latency if "sli_error" in str(r["record"]))


def test_burn_rate_alerts_follow_the_workbook(spec: Spec) -> None:
    burn = [a for a in alerts(spec) if a.key.startswith("burn_")]
    assert len(burn) == 2 * len(spec.slos)
    assert {a.key for a in burn} >= {"burn_books_critical", "burn_books_warning"}
    page = next(a for a in burn if a.key == "burn_availability_critical")
    assert "ratio_rate1h" in page.expr and "ratio_rate5m" in page.expr
    assert "ratio_rate6h" in page.expr and "ratio_rate30m" in page.expr
    assert "(14.4 * 0.01)" in page.expr and "(6 * 0.01)" in page.expr
    ticket = next(a for a in burn if a.key == "burn_availability_warning")
    assert "(3 * 0.01)" in ticket.expr and "(1 * 0.01)" in ticket.expr
    assert "ratio_rate3d" in ticket.expr and "ratio_rate6h" in ticket.expr
    assert page.severity == "critical" and ticket.severity == "warning"
    for alert in burn:
        assert alert.for_s == 0, alert.name  # the short window resets; `for` only delays
        # Pairs are joined on service and slo: the window label would keep them from matching.
        assert alert.expr.count("max without (window) (") == 4


def test_books_slo_counts_completed_against_failed_books(spec: Spec) -> None:
    books = spec.slo("books")
    assert books.errors is not None and books.total is not None
    assert books.errors.promql() == 'bookgen_jobs_finished_total{outcome="failed"}'
    assert books.total.promql() == 'bookgen_jobs_finished_total{outcome=~"completed|failed"}'


def test_429_is_no_availability_error(spec: Spec) -> None:
    for slo in spec.slos.values():
        if slo.errors is not None and slo.errors.metric == "bookgen_http_requests_total":
            assert "429" not in slo.errors.promql()
    records = {str(r["record"]): str(r["expr"]) for r in _records(spec, "default")}
    throttled = records["bookgen:http_requests_throttled:ratio_rate5m"]
    assert 'status="429"' in throttled
    assert not any("throttled" in a.expr for a in alerts(spec))  # dashboards only


def test_queue_full_reads_what_the_service_counts(spec: Spec) -> None:
    alert = _alert(spec, "queue_full")
    assert alert.expr == "bookgen:jobs_rejected_queue_full:increase5m > 0"
    records = {str(r["record"]): str(r["expr"]) for r in _records(spec, "default")}
    assert records["bookgen:jobs_rejected_queue_full:increase5m"] == (
        "sum by (namespace, job) (increase(bookgen_jobs_rejected_total"
        '{reason="queue_full",job=~"bookgen|bookgen-worker"}[5m]))'
    )
    assert alert.severity == "warning"
    for a in alerts(spec):
        assert "rate_limited" not in a.expr, a.name
        assert "bookgen_job_queue_capacity" not in a.expr, a.name  # no counter-vs-gauge race


@pytest.mark.parametrize("profile", ["default", "fast"])
def test_every_threshold_alert_that_divides_has_a_traffic_floor(spec: Spec, profile: str) -> None:
    dividing = [
        a
        for a in alerts(spec, profile)
        if not a.key.startswith("burn_")
        and (
            "ratio_rate" in a.expr
            or "\n/\n" in a.expr
            or "histogram_quantile" in a.expr
            or "_p95_" in a.expr
            or ":p95_" in a.expr
        )
    ]
    assert {a.key for a in dividing} >= {"api_latency", "error_rate", "llm_errors"}
    for alert in dividing:
        assert "sum by (namespace, job) (increase(" in alert.expr, alert.name
        assert " >= " in alert.expr and "and on(namespace, job)" in alert.expr, alert.name


def test_only_pages_that_users_feel_are_critical(spec: Spec) -> None:
    critical = {a.name for a in alerts(spec) if a.severity == "critical"}
    assert "BookGenAPIErrorRateHigh" not in critical  # the burn pages are the pages
    assert "BookGenQueueFull" not in critical
    assert "BookGenRejectionsUnderCapacity" not in {a.name for a in alerts(spec)}


def test_fast_profile_scales_every_horizon(spec: Spec) -> None:
    scale = spec.profile("fast").time_scale
    default = {(a.key, a.severity): a for a in alerts(spec, "default")}
    for fast in alerts(spec, "fast"):
        slow = default[(fast.key, fast.severity)]
        assert fast.name == slow.name
        assert fast.for_s == (max(1, round(slow.for_s / scale)) if slow.for_s else 0)
    fast_rules = render(spec, "fast")["groups"]
    assert all(g["interval"] == "1s" for g in fast_rules)
    exprs = {str(r["expr"]) for g in fast_rules for r in g["rules"]}
    assert any("[5s]" in e for e in exprs) and not any("[5m]" in e for e in exprs)
    assert {str(r["record"]) for r in _records(spec, "fast")} == {
        str(r["record"]) for r in _records(spec, "default")
    }


def test_fast_profile_table(spec: Spec, root: Path) -> None:
    table = json.loads((root / names.FAST_PROFILE_FILE).read_text(encoding="utf-8"))
    assert table == fast_profile_table(spec)
    pipeline = table["scrape_interval_s"] + table["evaluation_interval_s"] + table["group_wait_s"]
    assert pipeline == 3
    assert len(table["alerts"]) == len(alerts(spec, "fast"))
    for row in table["alerts"]:
        assert row["bound_s"] == 2 * (row["for_s"] + pipeline)
    down = next(r for r in table["alerts"] if r["alert"] == "BookGenTargetDown")
    assert down["for_s"] == 1 and down["bound_s"] == 8


def test_unknown_profile_refused(spec: Spec) -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        render(spec, "slow")


def test_queued_is_aggregated_with_max(spec: Spec) -> None:
    records = {str(r["record"]): str(r["expr"]) for r in _records(spec, "default")}
    assert records["bookgen:jobs_queued:max"] == (
        'max by (namespace, job) (bookgen_jobs_queued{job="bookgen"})'
    )


def _alert(spec: Spec, key: str, profile: str = "default") -> Alert:
    return next(a for a in alerts(spec, profile) if a.key == key)


def test_live_workers_are_counted_not_watched_one_by_one(spec: Spec) -> None:
    records = {str(r["record"]): str(r["expr"]) for r in _records(spec, "default")}
    assert records["bookgen:workers_up:count"] == (
        'count by (namespace, job) (up{job="bookgen-worker"} == 1)\nor\n'
        'label_replace(max by (namespace) (bookgen_workers_expected{job="bookgen"}) * 0, '
        '"job", "bookgen-worker", "", "")'
    )
    assert records["bookgen:workers_expected:max"] == (
        'max by (namespace, job) (bookgen_workers_expected{job="bookgen"})'
    )
    missing, none = _alert(spec, "workers_missing"), _alert(spec, "workers_none")
    assert missing.name == none.name  # so the page inhibits the ticket (same alertname)
    assert (missing.severity, none.severity) == ("warning", "critical")
    assert missing.expr == (
        "bookgen:workers_expected:max - on(namespace) group_right() bookgen:workers_up:count > 0"
    )
    assert "(bookgen:workers_up:count == 0) > 0" in none.expr


def test_worker_load_is_queued_plus_running_over_live_slots(spec: Spec) -> None:
    records = {str(r["record"]): str(r["expr"]) for r in _records(spec, "default")}
    assert records["bookgen:sections:max"] == (
        'max by (namespace, job, state) (bookgen_sections{job="bookgen"})'
    )
    assert records["bookgen:worker_slots:sum"] == (
        'sum by (namespace, job) (bookgen_worker_slots{job="bookgen-worker"})'
    )
    assert records["bookgen:worker_load:ratio"] == (
        "sum by (namespace) (bookgen:sections:max)\n/ on(namespace) group_right()\n"
        "bookgen:worker_slots:sum"
    )


def test_dependency_alerts_cover_a_dead_exporter_and_rabbitmq(spec: Spec) -> None:
    broker, store = _alert(spec, "broker_down"), _alert(spec, "store_down")
    assert broker.expr == 'redis_up{job="bookgen-broker"} == 0\nor\nup{job="bookgen-broker"} == 0'
    assert store.expr == 'pg_up{job="bookgen-store"} == 0\nor\nup{job="bookgen-store"} == 0'
    assert broker.severity == store.severity == "critical"


def test_worker_alerts_scale_in_the_fast_profile(spec: Spec) -> None:
    scale = spec.profile("fast").time_scale
    backlog = _alert(spec, "section_backlog", "fast")
    assert backlog.expr.endswith(f"> {300 // scale}") and backlog.delay_s == 300 // scale
    failures = _alert(spec, "section_failures", "fast")
    assert "[30s]" in failures.expr and "[30m]" not in failures.expr
    assert failures.for_s == 300 // scale and ">= 20" in failures.expr  # counts are not scaled
    for key in ("workers_missing", "workers_none", "broker_down", "store_down"):
        assert _alert(spec, key, "fast").for_s == 1
        assert _alert(spec, key).for_s == 60
