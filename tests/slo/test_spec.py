"""slo.yaml validation: the six targets load, and mistakes are refused with clear messages."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from bookgen.slo.conventions import format_duration, le_string, parse_duration
from bookgen.slo.spec import Spec, SpecError, load_spec, parse_spec


@pytest.fixture
def raw(root: Path) -> dict[str, Any]:
    data = yaml.safe_load((root / "slo.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _refused(data: dict[str, Any], *fragments: str) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec(data)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_targets_and_objectives(spec: Spec) -> None:
    t = spec.targets
    latency = spec.slo(t.api_latency.slo).latency
    assert latency is not None and latency.le == "0.2" and t.api_latency.quantile == 0.95
    assert spec.slo("availability").objective == 0.99
    assert spec.slo(t.error_rate.slo).error_budget == 0.01
    assert t.memory.max_bytes == 2 * 2**30
    assert t.throughput.min_per_hour == 2
    assert t.book_time.max_seconds == 1800
    assert t.concurrent_users.min_users == 10
    assert t.generation_benchmark.bound_ratio_max == 1.1
    assert t.generation_benchmark.token_efficiency_min == 0.95
    assert t.capacity_benchmark.rps_per_process_min == 3000
    assert spec.slo(t.llm_errors.slo).errors is not None
    assert [(p.long, p.short, p.factor) for p in spec.burn_rates] == [
        (3600, 300, 14.4),
        (6 * 3600, 1800, 6),
        (86400, 7200, 3),
        (3 * 86400, 6 * 3600, 1),
    ]


@pytest.mark.parametrize(
    ("key", "value"), [("bound_ratio_max", 0.9), ("token_efficiency_min", 1.5)]
)
def test_generation_benchmark_goals_must_be_reachable(
    raw: dict[str, Any], key: str, value: float
) -> None:
    data = copy.deepcopy(raw)
    data["targets"]["generation_benchmark"][key] = value
    _refused(data, f"targets.generation_benchmark.{key}")


def test_generation_benchmark_goals_are_required(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    del data["targets"]["generation_benchmark"]
    _refused(data, "generation_benchmark")


def test_the_capacity_goal_is_required_and_positive(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    del data["targets"]["capacity_benchmark"]
    _refused(data, "capacity_benchmark")
    data = copy.deepcopy(raw)
    data["targets"]["capacity_benchmark"]["rps_per_process_min"] = 0
    _refused(data, "targets.capacity_benchmark.rps_per_process_min")


def test_unknown_metric_refused(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["slos"]["availability"]["errors"] = 'bookgen_requests_total{status=~"5.."}'
    _refused(data, "slos.availability.errors", "unknown metric 'bookgen_requests_total'")


def test_unknown_target_metric_refused(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["targets"]["memory"]["metric"] = "process_resident_memory_bytes"
    _refused(data, "targets.memory.metric", "unknown metric")


def test_unknown_label_refused(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["slos"]["availability"]["errors"] = 'bookgen_http_requests_total{code=~"5.."}'
    _refused(data, "has no label 'code'")


@pytest.mark.parametrize("le", ["0.20", "0.25", "200ms", ".2"])
def test_latency_bound_must_be_a_real_bucket_string(raw: dict[str, Any], le: str) -> None:
    data = copy.deepcopy(raw)
    data["slos"]["api_latency"]["latency"]["le"] = le
    message = _refused(data, "slos.api_latency.latency", f'le "{le}" is not a bucket')
    assert '"0.2"' not in message or "0.2," in message  # the valid buckets are listed


def test_latency_bound_as_a_yaml_number_refused(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["slos"]["api_latency"]["latency"]["le"] = 0.2
    _refused(data, "slos.api_latency.latency.le", "string")


def test_latency_histogram_must_be_a_histogram(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["slos"]["api_latency"]["latency"]["histogram"] = "bookgen_http_requests_total"
    _refused(data, "is a counter, not a histogram")


def test_book_time_limit_must_be_a_bucket(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["targets"]["book_time"]["max_seconds"] = 1700
    _refused(data, "targets.book_time", 'le "1700.0" is not a bucket')


@pytest.mark.parametrize("window", ["5 minutes", "5M", "", "-5m", "1w"])
def test_bad_window_syntax_refused(raw: dict[str, Any], window: str) -> None:
    data = copy.deepcopy(raw)
    data["windows"][0] = window
    _refused(data, "windows.0", "is not a duration")


def test_burn_rate_short_window_must_be_shorter(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["burn_rates"][0] = {"severity": "critical", "long": "5m", "short": "1h", "factor": 14.4}
    _refused(data, "short window < long window")


def test_burn_rate_window_must_be_recorded(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["windows"] = [w for w in data["windows"] if w != "30m"]
    _refused(data, "burn-rate window 30m not in windows")


def test_window_longer_than_period_refused(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["windows"].append("60d")
    _refused(data, "longer than the SLO period")


def test_fast_profile_window_too_short_refused(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["profiles"]["fast"]["time_scale"] = 120
    _refused(data, "shrinks below 4 scrape intervals in profile fast")


def test_objective_out_of_range_and_unknown_keys_refused(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["slos"]["availability"]["objective"] = 99
    data["slos"]["availability"]["objectve"] = 0.99
    _refused(data, "slos.availability.objective", "slos.availability.objectve")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


def test_duration_and_le_formatting() -> None:
    assert parse_duration("1h30m") == 5400
    assert format_duration(3 * 86400) == "3d"
    assert format_duration(4320) == "1h12m"
    assert le_string(0.2) == "0.2"
    assert le_string(1800.0) == "1800.0"
    assert le_string(float("inf")) == "+Inf"
    assert le_string(67108864.0) == "6.7108864e+07"


def test_worker_tier_spec(spec: Spec) -> None:
    w = spec.workers
    assert spec.scrape.worker_job == "bookgen-worker"
    assert (spec.scrape.broker_job, spec.scrape.store_job) == ("bookgen-broker", "bookgen-store")
    assert (w.missing.severity, w.none.severity) == ("warning", "critical")
    assert w.backlog.max_wait == 300 and w.failures.max_ratio == 0.05
    assert w.failures.min_tasks >= 1 and w.queue == "sections"


def test_unknown_section_outcome_refused(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["workers"]["failures"]["failed"] = 'bookgen_section_tasks_total{outcome=~"failed|lost"}'
    _refused(data, "workers.failures", "no outcome ['lost']")


def test_failures_outside_the_denominator_refused(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["workers"]["failures"]["finished"] = 'bookgen_section_tasks_total{outcome="completed"}'
    _refused(data, "workers.failures", "must also be one of `finished`")


def test_section_ratio_needs_counters(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["workers"]["failures"]["failed"] = "bookgen_worker_slots"
    _refused(data, "workers.failures", "bookgen_worker_slots is a gauge")


def test_scrape_jobs_must_be_distinct(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["scrape"]["worker_job"] = data["scrape"]["api_job"]
    _refused(data, "scrape jobs must be distinct")


def test_rate_limited_refusals_are_refused_as_a_capacity_signal(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["targets"]["concurrent_users"]["rejected"] = (
        'bookgen_jobs_rejected_total{reason=~"queue_full|rate_limited"}'
    )
    _refused(data, "targets.concurrent_users", 'rejected must select reason="queue_full" exactly')


def test_a_threshold_ratio_needs_its_floor(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    del data["targets"]["error_rate"]["min_events"]
    _refused(data, "targets.error_rate.min_events")


def test_no_for_on_burn_rates_and_a_watchdog_heartbeat(raw: dict[str, Any]) -> None:
    data = copy.deepcopy(raw)
    data["burn_rate_for"] = {"critical": "2m"}
    _refused(data, "burn_rate_for")
    data = copy.deepcopy(raw)
    del data["profiles"]["fast"]["watchdog_repeat_interval"]
    _refused(data, "profiles.fast.watchdog_repeat_interval")
