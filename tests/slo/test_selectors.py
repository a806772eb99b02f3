"""Selectors: every series is read with its job and the deployment's matchers, every aggregation
keeps namespace and job, and one namespace's series never move another's SLI (promtool)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bookgen.instrumentation.catalogue import CATALOGUE, series_names
from bookgen.slo import conventions as names
from bookgen.slo import dashboards, rule_tests
from bookgen.slo.rules import recorded_names, render
from bookgen.slo.spec import Spec, SpecError, parse_spec

NAMESPACE = 'namespace="bookgen"'
CLUSTER = 'cluster="eu-1"'
RAW = {s for family in CATALOGUE for s in series_names(family)} | {
    "up",
    *names.EXPORTER_SERIES,
}
# The SLO's constants: one series per SLO for every deployment, no namespace.
CONSTANTS = {names.OBJECTIVE_RULE, names.ERROR_BUDGET_RULE}


@pytest.fixture
def raw(root: Path) -> dict[str, Any]:
    data = yaml.safe_load((root / "slo.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _selected(raw: dict[str, Any], **selectors: str) -> Spec:
    return parse_spec({**raw, "selectors": selectors})


def series_in(expr: str) -> Iterator[tuple[str, str]]:
    """(series name, its `{...}` or "") for every series an expression reads."""
    blocks: list[str] = []

    def keep(match: re.Match[str]) -> str:
        blocks.append(match.group(0))
        return f"\x00{len(blocks) - 1}\x01"

    text = re.sub(r"\{[^}]*\}", keep, expr)
    text = re.sub(r'"[^"]*"', '""', text)
    for found in re.finditer(r"(?<![\w:])([a-zA-Z_:][\w:]*)(\x00(\d+)\x01)?", text):
        block = blocks[int(found.group(3))] if found.group(3) else ""
        yield found.group(1), block


def _rule_exprs(spec: Spec) -> list[str]:
    exprs = []
    for profile in names.PROFILES:
        for group in render(spec, profile)["groups"]:
            exprs += [str(rule["expr"]) for rule in group["rules"]]
    return exprs


def test_series_in_finds_selectors() -> None:
    found = dict(series_in('sum by (job) (rate(a_total{x="y"}[5m])) / on(job) b:c:d{}'))
    assert found["a_total"] == '{x="y"}' and found["b:c:d"] == "{}" and found["rate"] == ""


def test_every_rule_reads_its_series_with_the_deployment_matchers(raw: dict[str, Any]) -> None:
    spec = _selected(raw, namespace=NAMESPACE, cluster=CLUSTER)
    records = recorded_names(spec)
    checked = 0
    for expr in _rule_exprs(spec):
        for name, block in series_in(expr):
            if name in RAW:
                assert NAMESPACE in block and CLUSTER in block, (name, expr)
                assert "job=" in block or "job=~" in block, (name, expr)
                checked += 1
            elif name in records and name not in CONSTANTS:
                assert NAMESPACE in block, (name, expr)
                checked += 1
    assert checked > 100


def test_no_matcher_is_added_on_one_machine(spec: Spec) -> None:
    for expr in _rule_exprs(spec):
        assert "namespace=" not in expr and "cluster=" not in expr, expr


def test_every_aggregation_keeps_namespace_and_job(spec: Spec) -> None:
    for expr in _rule_exprs(spec):
        assert not re.search(r"\b(sum|max|min|count|avg)\s*\(", expr), expr  # no bare aggregation
        assert "vector(0)" not in expr, expr  # it has no namespace: it would match no group
        for grouping in re.findall(r"\b(?:sum|max|count) by \(([^)]*)\)", expr):
            labels = [label.strip() for label in grouping.split(",")]
            # Per namespace only where the tiers are compared or books are summed across them.
            assert labels[:2] == ["namespace", "job"] or labels == ["namespace"], expr
        for joined in re.findall(r"\b(?:and|or|unless) on\(([^)]*)\)", expr):
            assert joined.startswith("namespace"), expr


def test_every_panel_reads_the_namespace_variable(raw: dict[str, Any]) -> None:
    spec = _selected(raw, namespace=NAMESPACE, cluster=CLUSTER)
    records = recorded_names(spec)
    for uid, title, expr in dashboards.panel_queries(spec, {"$namespace": "$namespace"}):
        for name, block in series_in(expr):
            if name in RAW:
                assert NAMESPACE in block and CLUSTER in block, (uid, title, expr)
                assert 'namespace=~"$namespace"' in block, (uid, title, expr)
            elif name in records and name not in CONSTANTS:
                assert 'namespace=~"$namespace"' in block, (uid, title, expr)


def test_dashboards_have_namespace_and_job_variables_and_exemplars(spec: Spec) -> None:
    for uid, board in dashboards.render(spec).items():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert {"datasource", "namespace", "job", "worker"} <= set(variables), uid
        assert variables["job"]["query"].endswith(", job)")
        assert 'namespace=~"$namespace"' in variables["job"]["query"]
        # All is `.*`: it matches series without a namespace, as on one machine.
        assert variables["namespace"]["allValue"] == ".*"
    service = dashboards.render(spec)["bookgen-service"]
    latency = [p for p in service["panels"] if p["title"].startswith("Duration")]
    assert latency and all(t["exemplar"] for p in latency for t in p["targets"])
    rates = next(p for p in service["panels"] if p["title"] == "Requests per second by route")
    assert not any(t["exemplar"] for t in rates["targets"])


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("namespace", "bookgen", "is not a matcher"),
        ("namespace", 'cluster="a"', "must match the label namespace"),
        ("cluster", 'job="x"', "jobs are set under scrape"),
    ],
)
def test_bad_selectors_refused(raw: dict[str, Any], key: str, value: str, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        _selected(raw, **{key: value})


def _promtool_two_namespaces(
    spec: Spec, promtool: str, folder: Path, rules_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    rules = rules_text or yaml.safe_dump(render(spec, "default"), sort_keys=False)
    (folder / "rules.yml").write_text(rules, encoding="utf-8")
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": rule_tests.two_namespaces(spec, 60),
    }
    (folder / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
    return subprocess.run(
        [promtool, "test", "rules", "tests.yml"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_two_namespaces_in_one_prometheus(spec: Spec, promtool: str, tmp_path: Path) -> None:
    tests = rule_tests.two_namespaces(spec, 60)
    assert len(tests) == 2  # errors in one namespace, then in the other
    for test in tests:
        namespaces = {
            e["exp_labels"]["namespace"] for a in test["alert_rule_test"] for e in a["exp_alerts"]
        }
        assert len(namespaces) == 1  # only the namespace with the errors alerts
        (check,) = test["promql_expr_test"]
        assert sorted(s["value"] for s in check["exp_samples"]) == [0, 0.9]
    result = _promtool_two_namespaces(spec, promtool, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_that_sum_namespaces_together_fail_it(
    spec: Spec, promtool: str, tmp_path: Path
) -> None:
    """The case can fail: rules that drop the namespace mix the two deployments."""
    rules = yaml.safe_dump(render(spec, "default"), sort_keys=False)
    mixed = rules.replace("by (namespace, job)", "by (job)")
    assert mixed != rules
    result = _promtool_two_namespaces(spec, promtool, tmp_path, mixed)
    assert result.returncode != 0
    assert "errors only in namespace" in result.stdout + result.stderr


def test_a_namespace_selector_hides_the_other_namespace(
    raw: dict[str, Any], promtool: str, tmp_path: Path
) -> None:
    """With `namespace="bookgen"` the rules see staging's errors nowhere, not even as an SLI."""
    spec = _selected(raw, namespace=NAMESPACE)
    tests = rule_tests.two_namespaces(spec, 60)
    staging_errors = next(t for t in tests if "namespace bookgen-staging" in t["name"])
    assert all(not a["exp_alerts"] for a in staging_errors["alert_rule_test"])
    (check,) = staging_errors["promql_expr_test"]
    assert [s["value"] for s in check["exp_samples"]] == [0]
    result = _promtool_two_namespaces(spec, promtool, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
