"""Load-test thresholds for the Locust gate: `loadtests/thresholds.json` (contract format)."""

from __future__ import annotations

from typing import Any

from bookgen.slo.spec import Spec


def render(spec: Spec) -> dict[str, Any]:
    t = spec.targets
    latency = spec.slo(t.api_latency.slo).latency
    assert latency is not None
    p95_ms = round(latency.bound * 1000, 6)
    return {
        "fail_ratio_max": spec.slo(t.error_rate.slo).error_budget,
        "p95_ms": {group: p95_ms for group in spec.load_test.route_groups},
        "min_rps": spec.load_test.min_rps,
        "min_users": t.concurrent_users.min_users,
        "source": "slo.yaml",
    }
