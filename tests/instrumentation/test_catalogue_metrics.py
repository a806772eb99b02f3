"""The catalogue is well formed and `Metrics` + collectors expose exactly it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from telemetry_helpers import catalogue_problems

from bookgen.instrumentation import catalogue as cat
from bookgen.instrumentation.metrics import Metrics
from bookgen.instrumentation.process import ProcessCollector, RuntimeCollector, WorkerCollector


def exposed_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.precreate(
        [("GET", "/health", "200"), ("GET", "unmatched", "404")],
        provider="openrouter",
        models=["bookgen-sim"],
    )
    metrics.build_info.labels("0", "3.11", "0").set(1)
    registry.register(RuntimeCollector(lambda: None, 200))
    registry.register(ProcessCollector())
    registry.register(WorkerCollector(32, lambda: 3))
    return registry


def test_names_follow_prometheus_conventions() -> None:
    assert len(cat.BY_NAME) == len(cat.CATALOGUE), "duplicate names"
    for spec in cat.CATALOGUE:
        assert spec.name.startswith(("bookgen_", "gen_ai_")), spec.name
        assert spec.name.endswith("_total") == (spec.type == "counter"), spec.name
        assert (spec.type == "histogram") == bool(spec.buckets), spec.name
        if spec.unit:
            assert spec.base_name.endswith(f"_{spec.unit}"), spec.name
        assert list(spec.buckets) == sorted(spec.buckets), spec.name


def test_target_boundaries_are_exact_buckets() -> None:
    assert 0.2 in cat.BY_NAME["bookgen_http_request_duration_seconds"].buckets
    assert 1800.0 in cat.BY_NAME["bookgen_job_duration_seconds"].buckets
    assert max(cat.JOB_DURATION_BUCKETS) >= 3600
    assert 0.05 in cat.BY_NAME["bookgen_chapter_length_deviation_ratio"].buckets


def test_every_family_is_exposed_with_type_labels_and_buckets() -> None:
    text = generate_latest(exposed_registry()).decode()
    assert catalogue_problems(text) == []
    assert 'bookgen_http_request_duration_seconds_bucket{le="0.2"' in text
    assert 'bookgen_job_duration_seconds_bucket{le="1800.0"' in text


def test_known_label_sets_exist_at_zero() -> None:
    registry = exposed_registry()
    value = registry.get_sample_value
    assert (
        value("bookgen_http_requests_total", {"method": "GET", "route": "/health", "status": "200"})
        == 0
    )
    for outcome in cat.JOB_OUTCOMES:
        assert value("bookgen_jobs_finished_total", {"outcome": outcome}) == 0
    for reason in cat.REJECT_REASONS:
        assert value("bookgen_jobs_rejected_total", {"reason": reason}) == 0
    for reason in cat.LLM_RETRY_REASONS:
        assert value("bookgen_llm_retries_total", {"reason": reason}) == 0
    genai = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "openrouter",
        "gen_ai_request_model": "bookgen-sim",
    }
    for token_type in cat.TOKEN_TYPES:
        labels = {**genai, "gen_ai_token_type": token_type}
        assert value("gen_ai_client_token_usage_count", labels) == 0


def test_family_of_maps_series_to_their_family() -> None:
    assert cat.family_of("bookgen_http_request_duration_seconds_bucket") is not None
    assert cat.family_of("bookgen_jobs_queued_bucket") is None
    assert cat.family_of("nope") is None
