"""The capacity search: open loop, the offered rate climbs until p95 or errors break; the knee.

Runs after the per-route test (same server, books still being written). It asserts only that
the search ended on the criterion (p95 of a route group at the SLO bound, or an error) rather
than on a limit of its own; the knee itself is printed and depends on the machine.
"""

from __future__ import annotations

import pytest
from perf_support import RESULTS, target_p95_ms

from bookgen.acceptance.capacity import Target, search

pytestmark = pytest.mark.performance


def test_capacity_climbs_until_p95_or_errors_break(target: Target) -> None:
    bound = target_p95_ms("health")
    result = search(target, bound, start_rps=250.0, step_rps=250.0, step_time_s=8.0)
    RESULTS["capacity"] = result
    breach = result["breach"]
    assert breach is not None, "the search stopped before p95 or errors broke"
    assert breach["breach"], breach
    assert breach["worst_group_p95_ms"] >= bound or breach["errors"] > 0
