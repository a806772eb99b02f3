"""Rule shapes: SLI ratios of sums, workbook burn-rate pairs, the fast profile's scaling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bookgen.slo import conventions as names
from bookgen.slo.rules import alerts, fast_profile_table, render
from bookgen.slo.spec import Spec


def _records(spec: Spec, profile: str) -> list[dict[str, object]]:
    return [r for g in render(spec, profile)["groups"] for r in g["rules"] if "record" in r]


def test_sli_rules_for_every_slo_and_window(spec: Spec) -> None:
    records = _records(spec, "default")
    for slo in spec.slos:
        for window in ("5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"):
            matching = [
                r
                for r in records
                if r["record"] == f"slo:sli_error:ratio_rate{window}"
                and r.get("labels") == {"slo": slo}
            ]
            assert len(matching) == 1, (slo, window)
            expr = str(matching[0]["expr"])
            numerator, denominator = expr.split("\n/\n")
            assert "sum(rate(" in numerator and denominator.startswith("sum(rate(")
            assert f"[{window}]" in expr


def test_latency_sli_uses_the_exact_bucket_string(spec: Spec) -> None:
    records = _records(spec, "default")
    latency = [r for r in records if r.get("labels") == {"slo": "api_latency"}]
    assert all('le="0.2"' in str(r["expr"]) for r in latency if "sli_error" in str(r["record"]))


def test_burn_rate_alerts_follow_the_workbook(spec: Spec) -> None:
    burn = [a for a in alerts(spec) if a.key.startswith("burn_")]
    assert len(burn) == 2 * len(spec.slos)
    page = next(a for a in burn if a.key == "burn_availability_critical")
    assert "ratio_rate1h" in page.expr and "ratio_rate5m" in page.expr
    assert "ratio_rate6h" in page.expr and "ratio_rate30m" in page.expr
    assert "(14.4 * 0.01)" in page.expr and "(6 * 0.01)" in page.expr
    ticket = next(a for a in burn if a.key == "burn_availability_warning")
    assert "(3 * 0.01)" in ticket.expr and "(1 * 0.01)" in ticket.expr
    assert "ratio_rate3d" in ticket.expr and "ratio_rate6h" in ticket.expr
    assert page.severity == "critical" and ticket.severity == "warning"


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
    assert records["bookgen:jobs_queued:max"] == "max(bookgen_jobs_queued)"
