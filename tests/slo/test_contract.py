"""Every rule, panel and gate names only catalogued series, recording rules we define,
Prometheus's own `up` / `ALERTS`, or the named exporters' series; names, labels, annotations and
links follow the conventions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from bookgen.instrumentation.catalogue import family_of
from bookgen.slo import conventions as names
from bookgen.slo import dashboards, gates
from bookgen.slo.promql import metric_names
from bookgen.slo.rules import alerts, recorded_names, render
from bookgen.slo.spec import Spec


def _known(spec: Spec) -> set[str]:
    return recorded_names(spec) | set(names.BUILTIN_SERIES) | set(names.EXPORTER_SERIES)


def _check(spec: Spec, where: str, expr: str) -> None:
    names_read = metric_names(expr)
    assert names_read or expr.startswith("vector("), f"{where}: no series found in {expr!r}"
    for name in names_read:
        assert family_of(name) is not None or name in _known(spec), f"{where}: {name} unknown"


@pytest.mark.parametrize("profile", names.PROFILES)
def test_rule_expressions_use_known_series(spec: Spec, profile: str) -> None:
    for group in render(spec, profile)["groups"]:
        for rule in group["rules"]:
            _check(spec, rule.get("record") or rule["alert"], rule["expr"])


@pytest.mark.parametrize("profile", names.PROFILES)
def test_committed_rule_files_use_known_series(spec: Spec, root: Path, profile: str) -> None:
    data = yaml.safe_load((root / names.RULES_FILES[profile]).read_text(encoding="utf-8"))
    exprs = [r["expr"] for g in data["groups"] for r in g["rules"]]
    assert len(exprs) > 50
    for expr in exprs:
        _check(spec, names.RULES_FILES[profile], expr)


def test_panel_queries_use_known_series(spec: Spec) -> None:
    queries = dashboards.panel_queries(spec)
    assert len(queries) > 60
    for uid, title, expr in queries:
        assert "$" not in expr, f"{uid}/{title}: unsubstituted variable in {expr}"
        _check(spec, f"{uid}/{title}", expr)


def test_every_recording_rule_is_used_or_shown(spec: Spec) -> None:
    used = set()
    for alert in alerts(spec):
        used |= metric_names(alert.expr)
    for _, _, expr in dashboards.panel_queries(spec):
        used |= metric_names(expr)
    for group in render(spec)["groups"]:
        for rule in group["rules"]:
            used |= metric_names(rule["expr"])
    unused = {n for n in recorded_names(spec) if n not in used and "ratio_rate" not in n}
    assert not unused, unused


def test_gates_come_from_the_spec(spec: Spec, root: Path) -> None:
    data = json.loads((root / names.THRESHOLDS_FILE).read_text(encoding="utf-8"))
    assert data == {"_comment": names.HEADER, **gates.render(spec)}
    assert data["fail_ratio_max"] == 0.01 and data["min_users"] == 10
    assert set(data["p95_ms"]) == {
        "health",
        "ready",
        "status",
        "generate",
        "job-status",
        "download",
        "list",
        "cancel",
        "sources",
        "metrics",
    }
    assert set(data["p95_ms"].values()) == {200.0}
    assert isinstance(data["min_rps"], float) and data["source"] == "slo.yaml"


def test_alert_conventions(spec: Spec) -> None:
    rules = render(spec)["groups"][-1]["rules"]
    seen = set()
    for rule in rules:
        name = rule["alert"]
        assert name == names.WATCHDOG or re.fullmatch(r"BookGen([A-Z][a-z]*|[A-Z]+)+", name), name
        assert rule["labels"]["severity"] in names.SEVERITIES
        assert set(rule["annotations"]) == {
            "summary",
            "description",
            "runbook_url",
            "dashboard_url",
        }
        assert "{{" not in rule["annotations"]["summary"]
        assert "$value" in rule["annotations"]["description"]
        assert rule["annotations"]["runbook_url"] == f"alerts/RUNBOOK.md#{name.lower()}"
        seen.add((name, rule["labels"]["severity"]))
    assert len(seen) == len(rules)
    assert (names.WATCHDOG, "info") in seen


def test_runbook_and_dashboard_links_resolve(spec: Spec, root: Path) -> None:
    runbook = (root / names.RUNBOOK_FILE).read_text(encoding="utf-8")
    uids = {json.loads(p.read_text())["uid"] for p in (root / "dashboards").glob("*.json")}
    for alert in alerts(spec):
        assert f"\n## {alert.name}\n" in runbook
        assert alert.dashboard in uids
    for section in ("**Meaning.**", "**Likely causes.**", "**First steps.**"):
        assert runbook.count(section) == len({a.name for a in alerts(spec)})


def test_dashboard_uids_are_file_names_and_thresholds_from_spec(spec: Spec, root: Path) -> None:
    files = sorted((root / "dashboards").glob("*.json"))
    assert [p.stem for p in files] == sorted(dashboards.FILES)
    for path in files:
        board = json.loads(path.read_text(encoding="utf-8"))
        assert board["uid"] == path.stem and board["_comment"] == names.HEADER
    overview = json.loads((root / "dashboards/bookgen-overview.json").read_text())
    stats = {p["title"]: p for p in overview["panels"] if p["type"] == "stat"}
    assert len(stats) >= 6

    def red(title: str) -> float:
        steps = stats[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        return float(next(s["value"] for s in steps if s["color"] == "red" and s["value"]))

    assert red("API p95 latency") == 0.2
    assert red("API error ratio") == 0.01
    assert red("Max worker RSS") == 2 * 2**30
    assert red("Book time p95") == 1800
    lines = [p for p in overview["panels"] if p["type"] == "timeseries"]
    assert sum(" vs " in p["title"] for p in lines) >= 5
    assert all(
        p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "dashed"
        for p in lines
        if " vs " in p["title"]
    )


def test_provisioning(root: Path) -> None:
    ds = yaml.safe_load((root / names.DATASOURCE_PROVISIONING_FILE).read_text())
    assert ds["datasources"][0]["uid"] == names.DATASOURCE_UID
    assert ds["datasources"][0]["type"] == "prometheus"
    dash = yaml.safe_load((root / names.DASHBOARD_PROVISIONING_FILE).read_text())
    assert dash["providers"][0]["type"] == "file"


def test_workers_dashboard(spec: Spec, root: Path) -> None:
    board = json.loads((root / "dashboards/bookgen-workers.json").read_text(encoding="utf-8"))
    panels = {p["title"]: p for p in board["panels"]}
    for title in (
        "Workers up vs expected",
        "Sections queued and running vs slots",
        "Oldest queued section vs limit",
        "Worker load vs capacity",
        "Section task outcomes per minute",
        "RSS per worker vs limit",
    ):
        assert title in panels, title

    def red(title: str) -> float:
        steps = panels[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        return float(next(s["value"] for s in steps if s["color"] == "red" and s["value"]))

    assert red("RSS per worker vs limit") == 2 * 2**30
    assert red("Oldest queued section vs limit") == 300
    assert red("Worker load vs capacity") == 1
    rss = panels["RSS per worker vs limit"]["targets"][0]["expr"]
    assert 'job="bookgen-worker"' in rss  # the section workers, not the API processes
    variable = next(v for v in board["templating"]["list"] if v["name"] == "worker")
    assert variable["query"] == (
        'label_values(up{job="bookgen-worker",namespace=~"$namespace"}, worker)'
    )
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert 'bookgen:workers_up:count{namespace=~"$namespace",job=~"$job"}' in exprs
    assert 'bookgen:workers_expected:max{namespace=~"$namespace"}' in exprs
