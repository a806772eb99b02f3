"""promtool checks the generated rules and runs the generated unit tests of every alert."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bookgen.slo import conventions as names
from bookgen.slo import dashboards
from bookgen.slo.rules import alerts
from bookgen.slo.spec import Spec


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("profile", names.PROFILES)
def test_promtool_check_rules(root: Path, profile: str, promtool: str) -> None:
    result = _run(promtool, "check", "rules", names.RULES_FILES[profile], cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


_RESULTS: dict[str, subprocess.CompletedProcess[str]] = {}


def promtool_test(root: Path, profile: str, promtool: str) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` on a profile's generated tests, run once per session."""
    if profile not in _RESULTS:
        path = root / names.RULE_TESTS_FILES[profile]
        _RESULTS[profile] = _run(promtool, "test", "rules", path.name, cwd=path.parent)
    return _RESULTS[profile]


@pytest.mark.parametrize("profile", names.PROFILES)
def test_promtool_test_rules(root: Path, profile: str, promtool: str) -> None:
    result = promtool_test(root, profile, promtool)
    assert result.returncode == 0, result.stdout + result.stderr


def _cases(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [a for test in data["tests"] for a in test.get("alert_rule_test", [])]


def coverage(spec: Spec, root: Path, profile: str) -> tuple[int, list[str]]:
    """Alert rules, and those lacking a firing case (labels and annotations) or a silent case."""
    cases = _cases(root / names.RULE_TESTS_FILES[profile])
    missing = []
    rules = alerts(spec, profile)
    for rule in rules:
        mine = [c for c in cases if c["alertname"] == rule.name]
        severities = [[e["exp_labels"].get("severity") for e in c["exp_alerts"]] for c in mine]
        fires = any(
            e["exp_labels"].get("severity") == rule.severity and e.get("exp_annotations")
            for c in mine
            for e in c["exp_alerts"]
        )
        silent = any(rule.severity not in found for found in severities)
        if rule.name == names.WATCHDOG:
            # always fires by design: it is asserted firing in the healthy and idle cases instead
            silent = len(mine) >= 3 and all(severities)
        if not (fires and silent):
            missing.append(f"{rule.name}/{rule.severity}")
    return len(rules), missing


@pytest.mark.parametrize("profile", names.PROFILES)
def test_every_alert_has_a_firing_and_a_silent_case(
    spec: Spec, root: Path, profile: str, promtool: str, report: Callable[[str], None]
) -> None:
    assert promtool_test(root, profile, promtool).returncode == 0
    total, missing = coverage(spec, root, profile)
    both = total - len(missing) - 1
    line = (
        f"[{profile} profile] {total} alerts, {both} with firing and silent cases, "
        f"plus {names.WATCHDOG} (always fires by design; asserted firing in every case it is "
        "evaluated, healthy and idle included); promtool test rules passed"
    )
    report(line)
    assert not missing, f"alerts without both cases: {missing}"
    assert total >= 20


def test_watchdog_fires_even_when_healthy_and_idle(root: Path) -> None:
    cases = _cases(root / names.RULE_TESTS_FILES["default"])
    watchdog = [c for c in cases if c["alertname"] == names.WATCHDOG]
    assert len(watchdog) >= 3 and all(c["exp_alerts"] for c in watchdog)


def test_a_broken_expectation_fails(root: Path, tmp_path: Path, promtool: str) -> None:
    """The generated tests can fail: a wrong annotation is caught by promtool."""
    text = (root / names.RULE_TESTS_FILES["default"]).read_text(encoding="utf-8")
    broken = text.replace("uses 3GiB of resident memory", "uses 4GiB of resident memory")
    assert broken != text
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.yml").write_text(broken, encoding="utf-8")
    rules = root / names.RULES_FILES["default"]
    (tmp_path / rules.name).write_text(rules.read_text(encoding="utf-8"), encoding="utf-8")
    result = _run(promtool, "test", "rules", "t.yml", cwd=tmp_path / "tests")
    assert result.returncode != 0
    assert "BookGenWorkerMemoryHigh" in result.stdout + result.stderr


def test_panel_queries_parse(spec: Spec, tmp_path: Path, promtool: str) -> None:
    """Every dashboard query is valid PromQL: promtool parses each as a recording rule."""
    queries = dashboards.panel_queries(spec)
    rules = [
        {"record": f"panel:query:n{i}", "expr": expr} for i, (_, _, expr) in enumerate(queries)
    ]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = _run(promtool, "check", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


@pytest.mark.parametrize("profile", names.PROFILES)
def test_killed_worker_is_asserted_after_its_series_vanish(root: Path, profile: str) -> None:
    """The missing-worker case keeps firing once the dead worker's `up` has gone stale, the moment
    a per-worker `up == 0` rule (or celery-mixin's CeleryWorkerDown) loses it."""
    data = yaml.safe_load((root / names.RULE_TESTS_FILES[profile]).read_text(encoding="utf-8"))
    test = next(t for t in data["tests"] if t["name"] == "BookGenWorkersMissing (warning) fires")
    up = [s["values"] for s in test["input_series"] if s["series"].startswith("up{job=")]
    killed = [v for v in up if v.endswith(" stale")]
    assert len(killed) == 1
    tick = names.parse_duration(test["interval"])
    stale_at = sum(int(part.split("x")[1]) + 1 for part in killed[0].split()[:-1])
    times = [names.parse_duration(a["eval_time"]) // tick for a in test["alert_rule_test"]]
    assert min(times) < stale_at < max(times)
    assert all(a["exp_alerts"] for a in test["alert_rule_test"])


@pytest.mark.parametrize("profile", names.PROFILES)
def test_burn_rate_edges(
    spec: Spec, root: Path, profile: str, promtool: str, report: Callable[[str], None]
) -> None:
    """Per SLO and burn pair, just above its factor fires and just below stays silent, with the
    other pairs clean; the ticket pairs (1d/2h, 3d/6h) fire too."""
    path = root / names.BURN_EDGE_TESTS_FILES[profile]
    result = _run(promtool, "test", "rules", path.name, cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    tests = yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]
    firing = [t["name"] for t in tests if t["alert_rule_test"][0]["exp_alerts"]]
    silent = [t["name"] for t in tests if not t["alert_rule_test"][0]["exp_alerts"]]
    for name in spec.slos:
        for pair in spec.burn_rates:
            how = f"{pair.factor:g}x over {names.format_duration(pair.long)} and "
            how += names.format_duration(pair.short)
            assert any(f"{name} errors above {how}" in n for n in firing), (name, how)
            assert any(f"{name} errors below {how}" in n for n in silent), (name, how)
    report(f"[{profile} profile] {len(tests)} burn-rate edge cases passed")


def test_a_factor_typo_fails_the_edge_cases(root: Path, tmp_path: Path, promtool: str) -> None:
    """14.4 written 1.44: the case just below the page factor fires, and promtool says so."""
    rules = (root / names.RULES_FILES["default"]).read_text(encoding="utf-8")
    typo = rules.replace("(14.4 * 0.01)", "(1.44 * 0.01)")
    assert typo != rules
    (tmp_path / "bookgen.rules.yml").write_text(typo, encoding="utf-8")
    edges = yaml.safe_load(
        (root / names.BURN_EDGE_TESTS_FILES["default"]).read_text(encoding="utf-8")
    )
    edges["tests"] = [t for t in edges["tests"] if "availability errors" in t["name"]][:2]
    edges["rule_files"] = ["bookgen.rules.yml"]
    (tmp_path / "edges.yml").write_text(yaml.safe_dump(edges), encoding="utf-8")
    result = _run(promtool, "test", "rules", "edges.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "below 14.4x over 1h and 5m" in result.stdout + result.stderr


def _golden(root: Path) -> list[Path]:
    return sorted((root / names.GOLDEN_TESTS_DIR).glob("*.test.yml"))


def test_hand_written_golden_cases(spec: Spec, root: Path, promtool: str) -> None:
    """Expectations written by hand, not by the generator, for the alerts that matter most."""
    files = _golden(root)
    assert len(files) >= 3
    result = _run(promtool, "test", "rules", *(p.name for p in files), cwd=files[0].parent)
    assert result.returncode == 0, result.stdout + result.stderr
    generated = set(names.RULE_TESTS_FILES.values()) | set(names.BURN_EDGE_TESTS_FILES.values())
    checked = set()
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert names.HEADER not in text and "Written by hand" in text, path
        assert str(path.relative_to(root)) not in generated
        checked |= {
            a["alertname"] for t in yaml.safe_load(text)["tests"] for a in t["alert_rule_test"]
        }
    assert {
        "BookGenAvailabilityErrorBudgetBurn",
        "BookGenBooksErrorBudgetBurn",
        "BookGenQueueFull",
        "BookGenTargetDown",
    } <= checked
