"""Render every generated artefact from the spec, in memory; write them or compare them."""

from __future__ import annotations

import json
from pathlib import Path

from bookgen.slo import alertmanager, dashboards, gates, rule_tests, rules, runbook
from bookgen.slo import conventions as names
from bookgen.slo.spec import Spec
from bookgen.slo.yamlio import dump_json, dump_yaml


def _rules_test(spec: Spec, profile: str) -> str:
    rules_file = Path(names.RULES_FILES[profile]).name
    return dump_yaml(rule_tests.render(spec, profile, f"../{rules_file}"))


def _burn_edge_test(spec: Spec, profile: str) -> str:
    rules_file = Path(names.RULES_FILES[profile]).name
    return dump_yaml(rule_tests.render_burn_edges(spec, profile, f"../{rules_file}"))


def _route_tests(spec: Spec) -> str:
    cases = [{"labels": labels, "receiver": rx} for labels, rx in alertmanager.route_cases(spec)]
    return dump_json({"cases": cases})


def render_all(spec: Spec) -> dict[str, str]:
    """Relative path -> file text, for every generated file."""
    files: dict[str, str] = {}
    for profile in names.PROFILES:
        files[names.RULES_FILES[profile]] = rules.render_text(spec, profile)
        files[names.RULE_TESTS_FILES[profile]] = _rules_test(spec, profile)
        files[names.BURN_EDGE_TESTS_FILES[profile]] = _burn_edge_test(spec, profile)
        files[names.ALERTMANAGER_FILES[profile]] = alertmanager.render_text(
            spec, names.DEFAULT_WEBHOOK_URL, profile
        )
    files[names.FAST_PROFILE_FILE] = (
        json.dumps(rules.fast_profile_table(spec), indent=2, sort_keys=True) + "\n"
    )
    files[names.ALERTMANAGER_TESTS_FILE] = _route_tests(spec)
    files[names.RUNBOOK_FILE] = runbook.render(spec)
    files[names.THRESHOLDS_FILE] = dump_json(gates.render(spec))
    for uid, board in dashboards.render(spec).items():
        files[f"{names.DASHBOARDS_DIR}/{uid}.json"] = dump_json(board)
    files[names.DATASOURCE_PROVISIONING_FILE] = dump_yaml(dashboards.datasource_provisioning(spec))
    files[names.DASHBOARD_PROVISIONING_FILE] = dump_yaml(dashboards.dashboard_provisioning())
    return dict(sorted(files.items()))


def write_all(spec: Spec, root: Path) -> list[str]:
    """Write every file that differs; return the paths written."""
    written = []
    for rel, text in render_all(spec).items():
        path = root / rel
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(rel)
    return written


def stale(spec: Spec, root: Path) -> list[str]:
    """Generated files that are missing or differ from a fresh render."""
    out = []
    for rel, text in render_all(spec).items():
        path = root / rel
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            out.append(rel)
    return out
